"""Operations of a node (``_ops.py``): readiness (store reachable, cluster joined) and TLS.

Readiness runs against PostgreSQL behind ``test_outage.PgProxy``: cutting the proxy cuts the
database, and ``/readyz`` must say so, then say ready again once it is back. TLS runs with a
certificate made in the test (trustme) and independent clients: the ``websockets`` library
over ``wss://`` and ``http.client`` over ``https://``.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from websockets.sync.client import connect

from actorchat.config import Settings, SettingsError
from actorchat.node import Node

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/actorchat: test_outage
from test_outage import node_behind_proxy


async def http_get(
    port: int, path: str, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """GET over a real socket with a blocking client, in a thread (the node runs here)."""

    def get() -> tuple[int, bytes]:
        if context is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        else:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=10, context=context
            )
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    return await trio.to_thread.run_sync(get)


async def poll_status(port: int, path: str, status: int, timeout: float) -> bytes:
    """GET ``path`` until it answers ``status`` (bounded)."""
    with trio.fail_after(timeout):
        while True:
            got, body = await http_get(port, path)
            if got == status:
                return body
            await trio.sleep(0.1)


# -- readiness ----------------------------------------------------------------------------------
@pytest.mark.postgres
async def test_readiness_follows_the_database(pg_url: Any) -> None:
    async with node_behind_proxy(pg_url) as (node, proxy):
        assert await poll_status(node.port, "/readyz", 200, 10) == b"ready\n"
        await proxy.cut()
        # Idle node: no traffic finds the outage; the probe of /readyz itself must.
        assert await poll_status(node.port, "/readyz", 503, 15) == b"store unavailable\n"
        assert (await http_get(node.port, "/healthz"))[0] == 200  # the node still runs
        await proxy.restore()
        assert await poll_status(node.port, "/readyz", 200, 30) == b"ready\n"


async def test_readiness_waits_for_the_cluster(start_node: Any) -> None:
    node = await start_node()
    joined = False
    node.cluster_ready = lambda: joined  # what the cluster provides once it exists
    assert await http_get(node.port, "/readyz") == (503, b"cluster not joined\n")
    joined = True
    assert await http_get(node.port, "/readyz") == (200, b"ready\n")


# -- TLS -------------------------------------------------------------------------------------
@pytest.fixture
def certificate(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "node.pem", tmp_path / "node.key"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    return ca, cert_path, key_path


async def test_tls_node_serves_wss_and_https(start_node: Any, certificate: Any) -> None:
    ca, cert_path, key_path = certificate
    node = await start_node(tls_cert=str(cert_path), tls_key=str(key_path))
    client = ssl.create_default_context()
    ca.configure_trust(client)

    def websocket_session() -> list[dict[str, Any]]:
        with connect(f"wss://127.0.0.1:{node.port}/", ssl=client) as ws:
            ws.send(json.dumps({"type": "ping"}))
            ws.send(json.dumps({"type": "register", "user": "tess", "password": "pw"}))
            return [json.loads(ws.recv(timeout=10)) for _ in range(2)]

    frames = await trio.to_thread.run_sync(websocket_session)
    assert frames == [{"type": "pong"}, {"type": "registered", "user": "tess"}]
    assert await http_get(node.port, "/healthz", client) == (200, b"ok\n")

    # A client that does not trust the certificate is refused by the handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        await http_get(node.port, "/healthz", ssl.create_default_context())


def test_tls_needs_a_certificate_and_its_key(tmp_path: Path, certificate: Any) -> None:
    _, cert_path, _ = certificate
    with pytest.raises(SettingsError, match="tls_cert: needs --tls-key"):
        Settings(tls_cert=str(cert_path))
    with pytest.raises(SettingsError, match="tls_key: needs --tls-cert"):
        Settings(tls_key=str(cert_path))
    # Files that are not there fail when the node is made, naming the options.
    settings = Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        tls_cert=str(tmp_path / "missing.pem"),
        tls_key=str(tmp_path / "missing.key"),
    )
    with pytest.raises(OSError, match=r"--tls-cert .*missing\.pem .* cannot load"):
        Node(settings)
