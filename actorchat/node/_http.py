"""One port for WebSocket upgrades and plain HTTP.

trio-websocket's ``serve_websocket`` answers any plain HTTP request with 400 before a handler
sees it, so the node listens itself: it reads the request head, and an ``Upgrade: websocket``
request goes to trio-websocket (``wrap_server_stream``) on a stream that replays the head;
anything else is answered with h11 (health, metrics, and later media and the chat page).
Bodies are streamed in and out in chunks, never whole in memory.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio
import trio_websocket

log = logging.getLogger("actorchat.http")

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0


# Messages trio-websocket's reader task may parse ahead of the connection's reader (its
# default is 1): a client's frames arriving together are handed over in one run of each task
# instead of one task switch each way per frame (``ConnectionActor.reader``). Memory bound per
# connection: this many messages of up to ``max_message_size``.
MESSAGE_QUEUE = 8


class PrefixedStream(trio.abc.Stream):
    """A stream whose first bytes were already read: they are returned again first."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            # From now on calls go straight to the stream: no frame of ours stays in the await
            # chain of a reader waiting on an idle socket (~300 bytes per connection).
            self.receive_some = self._stream.receive_some  # type: ignore[method-assign]
            # No checkpoint: this one call returns at once, and the library's reader task
            # that makes it goes on to read the socket (a checkpoint) right after.
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]
    _conn: h11.Connection
    _stream: trio.abc.Stream

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    async def body(self, limit: int) -> AsyncIterator[bytes]:
        """The body in chunks; raises ``BodyTooLarge`` as soon as it passes ``limit``."""
        total = 0
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                data = await self._stream.receive_some(64 * 1024)
                self._conn.receive_data(data)
                continue
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > limit:
                    raise BodyTooLarge(limit)
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is over {limit} bytes")
        self.limit = limit


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes | AsyncIterator[bytes] = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int | None = None


def text(status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> HttpResponse:
    return HttpResponse(status, body.encode(), content_type)


def is_websocket_upgrade(headers: dict[str, str]) -> bool:
    """Pure: does this request head ask for a WebSocket?"""
    return headers.get("upgrade", "").lower() == "websocket" and "upgrade" in {
        token.strip().lower() for token in headers.get("connection", "").split(",")
    }


def head_headers(head: bytes) -> dict[str, str]:
    """Pure: the header fields of a request head (names lowercased), read without h11. For
    the routing decision only: h11's parse costs ~70 us, a few percent of a token login, and
    trio-websocket parses (and checks) an upgrade's head again anyway."""
    headers = {}
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return None
        data += chunk
    return data


# With the cancel scope of the connection's nursery: cancelling it ends the connection's tasks
# (the gateway lets its connection actor's exit do that, ``sv.run_beside(scope=...)``).
WsHandler = Callable[[trio_websocket.WebSocketRequest, trio.CancelScope], Awaitable[None]]
HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpServer:
    """Listens on one port; hands each connection to the WebSocket or the HTTP handler."""

    def __init__(
        self,
        on_websocket: WsHandler,
        on_http: HttpHandler,
        *,
        max_message_size: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.on_websocket = on_websocket
        self.on_http = on_http
        self.max_message_size = max_message_size
        self.ssl_context = ssl_context
        self.port: int | None = None

    async def serve(
        self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            if self.ssl_context is not None:
                listeners = await nursery.start(
                    partial(trio.serve_ssl_over_tcp, host=host),
                    self._connection,
                    port,
                    self.ssl_context,
                )
            else:
                listeners = await nursery.start(
                    partial(trio.serve_tcp, host=host), self._connection, port
                )
            # An SSLListener wraps the SocketListener (``transport_listener``).
            listener = getattr(listeners[0], "transport_listener", listeners[0])
            self.port = listener.socket.getsockname()[1]
            task_status.started(self)

    async def _connection(self, stream: trio.abc.Stream) -> None:
        closed = False  # the stream is closed already: no close of our own (below)
        try:
            with trio.move_on_after(HEAD_TIMEOUT):
                head = await _read_head(stream)
                if head is None:
                    await stream.aclose()
                    return
            if head is None:  # the head did not arrive in time
                await stream.aclose()
                return
            if is_websocket_upgrade(head_headers(head)):
                # This frame lives as long as the connection: drop the head (its bytes are
                # in the replay until trio-websocket reads them) before serving it.
                replay = PrefixedStream(stream, head)
                del head
                async with trio.open_nursery() as nursery:
                    request = await trio_websocket.wrap_server_stream(
                        nursery,
                        replay,
                        max_message_size=self.max_message_size,
                        message_queue_size=MESSAGE_QUEUE,
                    )
                    del replay
                    try:
                        await self.on_websocket(request, nursery.cancel_scope)
                    finally:
                        # As serve_websocket does: close the socket when its handler is done
                        # (this also ends the library's reader task in the nursery). The
                        # library closed the stream (its aclose does, even cancelled, and so
                        # does its reader on a close from the client), unless it broke; and
                        # trio's serve_tcp closes it (forcefully) once we return. So the
                        # graceful close below is skipped: it cost two cancel scopes and a
                        # checkpoint per connection (a token login storm).
                        ws = request._connection
                        if ws.closed is None:  # usually closed by now: no scope for nothing
                            with trio.move_on_after(1.0):
                                await ws.aclose()
                        # The library's reader task ends by itself once the socket is closed
                        # (by the client, or by the close above): cancelling it while it
                        # closes its stream cost a cascade of Cancelled exceptions per logout.
                        # Only a connection still open here (never seen) is cut short.
                        if nursery.child_tasks and ws.closed is None:
                            nursery.cancel_scope.cancel()
                        closed = True
                return
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            conn.receive_data(head)
            event = conn.next_event()
            if not isinstance(event, h11.Request):
                await stream.aclose()
                return
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            request = HttpRequest(
                event.method.decode(), event.target.decode("latin-1"), headers, conn, stream
            )
            try:
                response = await self.on_http(request)
            except BodyTooLarge as e:
                response = text(413, f"{e}\n")
            except Exception:
                log.exception("HTTP handler failed for %s %s", request.method, request.target)
                response = text(500, "internal error\n")
            await self._respond(conn, stream, response, head=request.method == "HEAD")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            if not closed:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await stream.aclose()

    async def _respond(
        self, conn: h11.Connection, stream: trio.abc.Stream, r: HttpResponse, head: bool = False
    ) -> None:
        headers = [("content-type", r.content_type), ("connection", "close"), *r.headers]
        if isinstance(r.body, bytes):
            headers.append(("content-length", str(len(r.body))))
        elif r.length is not None:
            headers.append(("content-length", str(r.length)))
        await stream.send_all(conn.send(h11.Response(status_code=r.status, headers=headers)))
        if head:
            # The head of what GET would answer, and no body: h11 refuses one, and its error
            # here escaped to the listener and stopped the gateway. Guarded by
            # test_e2e_media.py::test_head_has_no_body_and_the_gateway_stays_up.
            aclose = getattr(r.body, "aclose", None)
            if aclose is not None:
                await aclose()
        elif isinstance(r.body, bytes):
            if r.body:
                await stream.send_all(conn.send(h11.Data(data=r.body)))
        else:
            async for chunk in r.body:
                await stream.send_all(conn.send(h11.Data(data=chunk)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
