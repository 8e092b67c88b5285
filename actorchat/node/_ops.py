"""Operations on a node: metrics, readiness, TLS (docs/operations.md).

``install_operations(node)`` runs from ``Node.__init__`` and sets on the node:

- ``metric_gauges``: the ``node.metrics`` keys that are levels, not counters (a feature adds
  its own);
- ``prometheus``: its ``CollectorRegistry``, served at ``/metrics`` (``_metrics.py``);
- ``ssl_context``: from ``--tls-cert``/``--tls-key``, or None (the gateway serves with it);
- ``admin_port``: the admin listener's port once it listens (``_admin.py``, a child of the
  tree with ``--admin-port``), else None;
- ``ready_probe``: the last database probe of ``/readyz`` (``readiness``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

import supervisors as sv
from actorchat.store import StoreUnavailable

from ._metrics import install_metrics
from ._storage import Read

if TYPE_CHECKING:
    from ._node import Node

# /readyz asks the database at most this often (a load balancer may probe every second);
# in between it answers from the last probe and the store front's own view.
PROBE_EVERY = 1.0
PROBE_TIMEOUT = 2.0


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for ``wss://``/``https://`` from PEM files (TLS 1.2 and up)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise OSError(f"--tls-cert {cert} / --tls-key {key}: cannot load them: {e}") from e
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(slots=True)
class _Probe:
    at: float = float("-inf")
    ok: bool = False


def install_operations(node: Node) -> None:
    node.metric_gauges = {"connections"}
    node.prometheus = install_metrics(node)
    node.admin_port = None
    node.ssl_context = (
        server_ssl_context(node.settings.tls_cert, node.settings.tls_key)
        if node.settings.tls_cert is not None and node.settings.tls_key is not None
        else None
    )
    node.ready_probe = _Probe()


async def readiness(node: Node) -> tuple[bool, str]:
    """Ready: the store answers (``SELECT 1``, at most once per ``PROBE_EVERY``) and, when the
    node is clustered, it has joined (``node.cluster_ready()``)."""
    sup = node.sup
    if sup is None or sup.whereis("storefront") is None or node.store_down():
        return False, "store unavailable"
    probe: _Probe = node.ready_probe
    now = trio.current_time()
    if now - probe.at >= PROBE_EVERY:
        try:
            await node.store.front.call(Read("ping"), timeout=PROBE_TIMEOUT)
            probe.ok = True
        except (StoreUnavailable, sv.ActorDeadError, sv.CallTimeout):
            probe.ok = False
        probe.at = trio.current_time()
    if not probe.ok:
        return False, "store unavailable"
    cluster_ready = getattr(node, "cluster_ready", None)
    if cluster_ready is not None and not cluster_ready():
        return False, "cluster not joined"
    return True, "ready"
