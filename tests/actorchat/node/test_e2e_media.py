"""Media end to end (PROTOCOL.md, Media; docs/protocol.md): an in-process node on a real
socket, the ``websockets`` sync client for the chat and the standard library's
``http.client`` (or a raw socket) for ``POST /media`` and ``GET /media/M``, each session in a
worker thread (``trio.to_thread``). Every test runs on SQLite and PostgreSQL (the grants are
in the database); the blob store is the filesystem, and S3 (moto's server) in the last test.
"""

from __future__ import annotations

import hashlib
import socket
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from client import SyncClient, new_id
from media_client import (
    MiB,
    Reply,
    chunked,
    digest,
    fetch,
    pattern,
    raw_exchange,
    request,
    upload,
)
from node_harness import DIALECTS, SECRET, restarted, stop_node

from actorchat.auth import TokenSigner

pytestmark = pytest.mark.parametrize("dialect", DIALECTS, indirect=True)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def node(start_node, media_dir: Path):
    node = await start_node(media_dir=str(media_dir), max_media_bytes=1 * MiB)
    await in_thread(register, node.port, "alice", "bob", "carol", "eve")
    return node


def register(port: int, *users: str) -> None:
    with SyncClient.connect(port) as c:
        for user in users:
            c.register(user)


def blob_files(media_dir: Path) -> list[Path]:
    return sorted(p for p in media_dir.rglob("*") if p.is_file())


def send_media(c: SyncClient, to: str, media: dict[str, Any], body: str = "") -> str:
    id = new_id()
    c.send(type="send", id=id, to=to, body=body, media=media)
    return id


def answered(c: SyncClient, id: str) -> None:
    c.until(lambda: id in c.accepted or any(e["ref"] == id for e in c.errors))


async def test_upload_send_and_fetch_by_the_recipient_only(node, media_dir: Path) -> None:
    port = node.port

    def session() -> None:
        with (
            SyncClient.connect(port) as alice,
            SyncClient.connect(port) as bob,
            SyncClient.connect(port) as eve,
        ):
            ta, tb, te = alice.login("alice"), bob.login("bob"), eve.login("eve")
            up = upload(port, ta, PNG, "image/png")
            assert up.status == 201, up
            assert up.headers["content-type"] == "application/json"
            meta = up.json()
            assert set(meta) == {"media", "size", "sha256", "mime"}
            assert meta["size"] == len(PNG) and meta["mime"] == "image/png"
            assert meta["sha256"] == hashlib.sha256(PNG).hexdigest()
            m = meta["media"]
            assert m != meta["sha256"] and len(m) >= 32  # random, not the content hash
            # Before any message refers to it, only the uploader may fetch it.
            assert fetch(port, tb, m).status == 404
            mine = fetch(port, ta, m)
            assert (mine.status, mine.body) == (200, PNG)

            media = {"id": m, "mime": "image/png", "size": len(PNG)}
            id = send_media(alice, "bob", media)
            bob.until(lambda: bool(bob.deliveries))
            item = bob.deliveries[0]
            assert (item["id"], item["from"], item["body"], item["media"]) == (
                id, "alice", "", media
            )
            alice.until(lambda: id in alice.accepted)

            got = fetch(port, tb, m)
            assert got.status == 200 and got.body == PNG
            assert got.headers["content-type"] == "image/png"
            assert got.headers["content-length"] == str(len(PNG))
            # A stranger: exactly the answer for an id that does not exist.
            stranger = fetch(port, te, m)
            unknown = fetch(port, te, "x" * 32)
            assert stranger.status == unknown.status == 404
            assert stranger.body == unknown.body
            assert stranger.headers == unknown.headers
            # Knowing the content hash grants nothing either.
            assert fetch(port, te, meta["sha256"]).status == 404

    await in_thread(session)
    assert len(blob_files(media_dir)) == 1
    assert restarted(node) == []


async def test_a_recipient_may_pass_it_on_but_no_one_else(node) -> None:
    port = node.port

    def session() -> None:
        with (
            SyncClient.connect(port) as alice,
            SyncClient.connect(port) as bob,
            SyncClient.connect(port) as carol,
            SyncClient.connect(port) as eve,
        ):
            ta, tc = alice.login("alice"), carol.login("carol")
            bob.login("bob")
            eve.login("eve")
            m = upload(port, ta, b"hello", "text/plain").json()["media"]
            media = {"id": m, "mime": "text/plain", "size": 5}
            # eve never had it: not_allowed, nothing delivered, nothing granted.
            id = send_media(eve, "carol", media, "look")
            eve.until(lambda: bool(eve.errors))
            assert eve.errors[0]["code"] == "not_allowed" and eve.errors[0]["ref"] == id
            # An id that does not exist: the same answer.
            other = send_media(eve, "carol", {**media, "id": "nope"})
            eve.until(lambda: len(eve.errors) >= 2)
            assert eve.errors[1]["code"] == "not_allowed" and eve.errors[1]["ref"] == other
            assert [e["message"].startswith("no media") for e in eve.errors] == [True, True]
            carol.drain(0.2)
            assert carol.deliveries == []
            assert fetch(port, tc, m).status == 404
            # bob receives it, then forwards it to carol.
            answered(alice, send_media(alice, "bob", media, "for you"))
            bob.until(lambda: bool(bob.deliveries))
            answered(bob, send_media(bob, "carol", media, "fwd"))
            assert bob.errors == []
            carol.until(lambda: bool(carol.deliveries))
            assert carol.deliveries[0]["media"] == media
            assert fetch(port, tc, m).body == b"hello"

    await in_thread(session)


async def test_the_delivered_media_object_is_the_stored_one(node) -> None:
    """A client that misstates the size or type cannot mislead the recipient."""
    port = node.port

    def session() -> None:
        with SyncClient.connect(port) as alice, SyncClient.connect(port) as bob:
            ta = alice.login("alice")
            bob.login("bob")
            m = upload(port, ta, b"12345", "text/plain").json()["media"]
            send_media(alice, "bob", {"id": m, "mime": "image/gif", "size": 99})
            bob.until(lambda: bool(bob.deliveries))
            assert bob.deliveries[0]["media"] == {"id": m, "mime": "text/plain", "size": 5}

    await in_thread(session)


async def test_the_grant_outlives_the_node(start_node, media_dir: Path) -> None:
    """The grant is committed before the message is accepted: bob, offline, gets it from
    storage after a restart and can still fetch the media."""
    options = {"media_dir": str(media_dir)}
    node = await start_node(**options)
    port = node.port

    def before() -> str:
        register(port, "alice", "bob")
        with SyncClient.connect(port) as alice:
            ta = alice.login("alice")
            m = upload(port, ta, PNG, "image/png").json()["media"]
            id = send_media(alice, "bob", {"id": m, "mime": "image/png", "size": len(PNG)})
            alice.until(lambda: id in alice.accepted)
            return m

    m = await in_thread(before)
    await stop_node(node)
    node = await start_node(**options)

    def after() -> None:
        with SyncClient.connect(node.port) as bob:
            tb = bob.login("bob")
            bob.until(lambda: bool(bob.deliveries))
            assert bob.deliveries[0]["media"]["id"] == m
            assert fetch(node.port, tb, m).body == PNG

    await in_thread(after)


async def test_missing_or_bad_token_is_401(node) -> None:
    port = node.port
    forged = TokenSigner(b"y" * 32, 3600).issue("alice", 0)
    expired = TokenSigner(SECRET, 1).issue("alice", 1.0)

    def session() -> None:
        with SyncClient.connect(port) as alice:
            ta = alice.login("alice")
        m = upload(port, ta, b"data").json()["media"]
        for token, why in [(None, "authorization required"), ("garbage", "bad token"),
                           (forged, "bad token"), (expired, "bad token")]:
            for reply in (upload(port, token, b"data"), fetch(port, token, m)):
                assert reply.status == 401, reply
                assert reply.headers["www-authenticate"].startswith("Bearer")
                assert why in reply.body.decode()
        basic = request(port, "GET", f"/media/{m}", headers={"Authorization": "Basic YTpi"})
        assert basic.status == 401

    await in_thread(session)


async def test_methods_head_and_defaults(node) -> None:
    port = node.port

    def session() -> None:
        with SyncClient.connect(port) as alice:
            ta = alice.login("alice")
        up = upload(port, ta, b"\x00\x01")
        assert up.status == 201 and up.json()["mime"] == "application/octet-stream"
        m = up.json()["media"]
        head = request(port, "HEAD", f"/media/{m}", token=ta)
        assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "2")
        assert request(port, "PUT", f"/media/{m}", token=ta, body=b"x").status == 405
        assert request(port, "GET", "/media", token=ta).status == 405
        bad = upload(port, ta, b"x", "text/plain\x7f")
        assert bad.status == 400
        empty = upload(port, ta, b"", "text/plain")
        assert empty.status == 201 and empty.json()["size"] == 0
        assert fetch(port, ta, empty.json()["media"]).body == b""

    await in_thread(session)


async def test_over_the_limit_is_413_early_from_content_length(node, media_dir: Path) -> None:
    port = node.port

    def session() -> bytes:
        with SyncClient.connect(port) as alice:
            ta = alice.login("alice")
        # Only the head is sent: the answer comes without waiting for the body.
        head = (
            f"POST /media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ta}\r\n"
            f"Content-Type: image/png\r\nContent-Length: {MiB + 1}\r\n\r\n"
        ).encode()
        return raw_exchange(port, head)

    reply = await in_thread(session)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert blob_files(media_dir) == []
    # At the limit exactly: accepted.
    ok = await in_thread(lambda: at_limit(port))
    assert ok.status == 201 and ok.json()["size"] == MiB


def at_limit(port: int) -> Reply:
    with SyncClient.connect(port) as alice:
        ta = alice.login("alice")
    return upload(port, ta, b"a" * MiB)


async def test_over_the_limit_is_413_as_a_chunked_body_passes_it(node, media_dir: Path) -> None:
    port = node.port

    def session() -> bytes:
        with SyncClient.connect(port) as alice:
            ta = alice.login("alice")
        head = (
            f"POST /media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ta}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        return raw_exchange(port, head, chunked(pattern(3 * MiB)))

    reply = await in_thread(session)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert blob_files(media_dir) == []  # nothing kept, not even a partial file
    assert node.metrics["media_uploaded"] == 0


async def test_sixteen_mib_is_streamed_in_and_out(start_node, media_dir: Path) -> None:
    """The default limit, 16 MiB, in and out, while the peak of the process's Python
    allocations (node and client thread) grows by a small fraction of it."""
    node = await start_node(media_dir=str(media_dir))
    assert node.settings.max_media_bytes == 16 * MiB
    port = node.port
    size = 16 * MiB

    def login() -> str:
        register(port, "alice")
        with SyncClient.connect(port) as alice:
            return alice.login("alice")

    ta = await in_thread(login)
    up = await in_thread(upload, port, ta, b"warm up", "text/plain")  # first-use work
    assert up.status == 201
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        headers = {"Content-Type": "video/mp4", "Content-Length": str(size)}
        up = await in_thread(
            partial(request, port, "POST", "/media", token=ta, body=pattern(size),
                    headers=headers)
        )
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got = await in_thread(
            partial(fetch, port, ta, up.json()["media"], keep_body=False)
        )
        _, fetch_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert up.status == 201, up
    assert up.json()["sha256"] == digest(pattern(size))
    assert (got.status, got.size, got.sha256) == (200, size, up.json()["sha256"])
    assert got.headers["content-length"] == str(size)
    assert len(got.chunks) > 1
    # Whole in memory would be 16 MiB (twice over for a copy); streamed, a few batches.
    assert upload_peak - before < size // 8, upload_peak - before
    assert fetch_peak - before < size // 8, fetch_peak - before


async def test_media_on_the_s3_store(start_node, s3) -> None:
    node = await start_node(
        blob_store="s3", s3_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url
    )
    port = node.port

    def session() -> dict[str, Any]:
        register(port, "alice", "bob", "eve")
        with SyncClient.connect(port) as alice, SyncClient.connect(port) as bob:
            ta, tb = alice.login("alice"), bob.login("bob")
            te = login_token(port, "eve")
            meta = request(
                port, "POST", "/media", token=ta, body=chunked_body(3 * MiB),
                headers={"Content-Type": "application/pdf"},
            ).json()
            media = {"id": meta["media"], "mime": "application/pdf", "size": 3 * MiB}
            send_media(alice, "bob", media)
            bob.until(lambda: bool(bob.deliveries))
            got = fetch(port, tb, meta["media"], keep_body=False)
            assert (got.status, got.size, got.sha256) == (200, 3 * MiB, meta["sha256"])
            assert got.headers["content-type"] == "application/pdf"
            assert fetch(port, te, meta["media"]).status == 404
            return meta

    meta = await in_thread(session)
    assert meta["sha256"] == digest(pattern(3 * MiB))
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url)
    listed = client.list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(f"blobs/{meta['sha256']}", 3 * MiB)]


def chunked_body(size: int):
    """An iterable body: http.client sends it with Transfer-Encoding: chunked."""
    return iter(pattern(size))


def login_token(port: int, user: str) -> str:
    with SyncClient.connect(port) as c:
        return c.login(user)


async def test_expect_100_continue(node) -> None:
    """curl's way for large bodies: the head first, the body only after `100 Continue`; a
    refusal comes instead of it, and then no body is sent at all."""
    port = node.port

    def session() -> tuple[bytes, bytes, bytes]:
        ta = login_token(port, "alice")
        head = (
            f"POST /media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ta}\r\n"
            "Content-Type: text/plain\r\nExpect: 100-continue\r\nContent-Length: {n}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.format(n=5).encode())
            interim = b""
            while b"\r\n\r\n" not in interim:
                interim += sock.recv(4096)
            sock.sendall(b"hello")
            final = b""
            while chunk := sock.recv(65536):
                final += chunk
        refused = raw_exchange(port, head.format(n=2 * MiB).encode())
        return interim, final, refused

    interim, final, refused = await in_thread(session)
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert final.startswith(b"HTTP/1.1 201 ") and b'"size": 5' in final
    assert refused.startswith(b"HTTP/1.1 413 ") and b" 100 " not in refused.split(b"\r\n")[0]


async def test_a_client_gone_mid_upload_leaves_nothing(node, media_dir: Path) -> None:
    port = node.port

    def session() -> None:
        ta = login_token(port, "alice")
        head = (
            f"POST /media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ta}\r\n"
            f"Content-Length: {MiB}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + b"x" * (MiB // 2))
            sock.shutdown(socket.SHUT_WR)  # half the body, then the end of the stream
            while sock.recv(65536):
                pass

    await in_thread(session)
    with trio.fail_after(10):
        while any(media_dir.rglob("*.part")):  # the server notices the end, then cleans up
            await trio.sleep(0.01)
    assert blob_files(media_dir) == []
    assert node.metrics["media_uploaded"] == 0


async def test_head_has_no_body_and_the_gateway_stays_up(node) -> None:
    """A HEAD answered with a body (a 404, a 401) once made h11 raise in the gateway's
    listener, which stopped the gateway: every connection of the node was refused after."""
    port = node.port

    def session() -> list[int]:
        ta = login_token(port, "alice")
        statuses = [
            request(port, "HEAD", "/media/nope", token=ta).status,
            request(port, "HEAD", "/media/nope").status,
            request(port, "HEAD", "/healthz").status,
            request(port, "HEAD", "/no/such/route").status,
        ]
        return [*statuses, request(port, "GET", "/healthz").status]

    assert await in_thread(session) == [404, 401, 200, 404, 200]
    assert restarted(node) == []
