"""One port for WebSocket and HTTP (``_http.py``), with real sockets on 127.0.0.1."""

from __future__ import annotations

import trio
from trio_websocket import open_websocket_url

from actorchat.node._http import (
    HttpRequest,
    HttpResponse,
    HttpServer,
    head_headers,
    is_websocket_upgrade,
    text,
)


async def _http(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(raw)
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    return data


def test_is_websocket_upgrade() -> None:
    assert is_websocket_upgrade({"upgrade": "WebSocket", "connection": "keep-alive, Upgrade"})
    assert not is_websocket_upgrade({"connection": "upgrade"})
    assert not is_websocket_upgrade({"upgrade": "websocket", "connection": "close"})


def test_head_headers_are_read_as_h11_reads_them() -> None:
    head = (
        b"GET /?x=1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUpgrade:  WebSocket \r\n"
        b"CONNECTION: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    headers = head_headers(head)
    assert headers == {
        "host": "127.0.0.1:1", "upgrade": "WebSocket", "connection": "keep-alive, Upgrade",
        "sec-websocket-version": "13",
    }
    assert is_websocket_upgrade(headers)
    assert not is_websocket_upgrade(head_headers(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"))


async def test_http_and_websocket_share_one_port() -> None:
    seen: list[str] = []

    async def on_http(request: HttpRequest) -> HttpResponse:
        seen.append(request.path)
        if request.method == "POST":
            size = 0
            async for chunk in request.body(limit=100):
                size += len(chunk)
            return text(201, f"{size}\n")
        return text(200, "ok\n") if request.path == "/healthz" else text(404, "no\n")

    async def on_ws(request, scope) -> None:
        ws = await request.accept()
        await ws.send_message("echo:" + await ws.get_message())

    server = HttpServer(on_ws, on_http, max_message_size=1 << 16)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        port = server.port
        assert port
        reply = await _http(port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok\n")
        reply = await _http(port, b"GET /nope?x=1 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 404")
        body = b"x" * 50
        reply = await _http(
            port, b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n" + body
        )
        assert reply.startswith(b"HTTP/1.1 201") and reply.endswith(b"50\n")
        reply = await _http(
            port, b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n" + b"y" * 500
        )
        assert reply.startswith(b"HTTP/1.1 413")
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "echo:hi"
        assert seen == ["/healthz", "/nope", "/up", "/up"]
        nursery.cancel_scope.cancel()


async def test_node_answers_health_and_readiness_beside_the_websocket(tmp_path) -> None:
    from actorchat.config import Settings
    from actorchat.node import Node

    settings = Settings(
        port=0, database_url=f"sqlite+aiosqlite:///{tmp_path}/h.db", secret=b"s" * 32
    )
    node = Node(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        assert node.port
        assert (await _http(node.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")).startswith(
            b"HTTP/1.1 200"
        )
        ready = await _http(node.port, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert ready.startswith(b"HTTP/1.1 200"), ready
        async with open_websocket_url(f"ws://127.0.0.1:{node.port}/") as ws:
            await ws.send_message('{"type":"ping"}')
            assert await ws.get_message() == '{"type":"pong"}'
        assert node.sup is not None
        node.sup.stop()
        await node.sup.wait()
        nursery.cancel_scope.cancel()


def test_routes_match_the_longest_prefix_and_whole_segments() -> None:
    from actorchat.config import Settings
    from actorchat.node import Node

    node = Node(Settings(database_url="sqlite+aiosqlite:///:memory:"))

    async def a(request: object) -> object: ...
    async def b(request: object) -> object: ...
    async def root(request: object) -> object: ...

    node.add_route("/media", a)
    node.add_route("/media/special", b)
    node.add_route("/", root)
    assert node.route("/media") is a
    assert node.route("/media/abc") is a
    assert node.route("/media/special/x") is b
    assert node.route("/mediaX") is None
    assert node.route("/") is root
    assert node.route("/other") is None
    assert node.route("/healthz") == node._healthz
