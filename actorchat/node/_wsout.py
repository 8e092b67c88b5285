"""Several text messages to one WebSocket in one write; received messages handed over
without a pass of the scheduler (``eager_receive``).

trio-websocket writes each message on its own: per message a ``send_all`` (a socket send and
its checkpoint) under a lock whose ``acquire`` is one more checkpoint, and on loopback the send
syscall is the dearest part of a frame. The connection writer coalesces items into as few
frames as the protocol allows, but a flush often still holds several (a ``deliver``, an
``accepted`` and a ``receipt`` frame): ``send_texts`` frames them all (each still its own
WebSocket message) and writes the bytes with one ``send_all``, taking the lock without a
checkpoint when it is free, with the errors of ``send_message``.

On a plain TCP stream the bytes first go to the socket at once (``_send_now``): trio's
``send_all`` sandwiches every send between checkpoints, a pass of the scheduler per write, and
the writer has already yielded once for this flush (``writer_action``). Only what the kernel
does not take at once (a full socket buffer: a slow reader) goes through ``send_all``, which
waits for room under the writer's stall timeout.

This reaches into trio-websocket's connection (``_wsproto``, ``_stream``, ``_stream_lock``,
``_close_reason``, ``_abort_web_socket``: the body of its ``_send``); a connection without them
(another version) gets one ``send_message`` per text; a stream other than trio's
``SocketStream`` (TLS), or a socket without trio's ``_sock``, skips the direct send. Guarded
by ``test_wsout.py``.
"""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import TextMessage

from actorchat.node._http import PrefixedStream

_INTERNALS = ("_wsproto", "_stream", "_stream_lock", "_close_reason", "_abort_web_socket")


class _EagerSend:
    """trio-websocket's reader task hands each message it parsed to ``get_message`` through a
    memory channel, and a channel's ``send`` is a checkpoint even when there is room: a pass
    of the scheduler per received message. This hands it over at once when there is room and
    waits (``send``) only when the channel is full; everything else goes to the channel. The
    reader still yields at every network read it does not wait for."""

    __slots__ = ("_channel",)

    def __init__(self, channel: trio.MemorySendChannel[object]) -> None:
        self._channel = channel

    async def send(self, value: object) -> None:
        try:
            self._channel.send_nowait(value)
        except trio.WouldBlock:
            await self._channel.send(value)

    def __getattr__(self, name: str) -> object:
        return getattr(self._channel, name)


def eager_receive(ws: WebSocketConnection) -> None:
    """Make ``ws``'s reader task hand messages over without a checkpoint (``_EagerSend``);
    a no-op on a connection without the library's ``_send_channel`` (another version).
    Also, once the gateway's ``PrefixedStream`` has replayed the request's head, the library
    reads and writes the socket stream itself: one object and a bound method less per user,
    and no unwrapping per write (``_send_now``)."""
    channel = getattr(ws, "_send_channel", None)
    if type(channel) is trio.MemorySendChannel:
        ws._send_channel = _EagerSend(channel)  # type: ignore[assignment]
    stream = getattr(ws, "_stream", None)
    if type(stream) is PrefixedStream and not stream._prefix:
        ws._stream = stream._stream  # type: ignore[assignment]


async def abort_stream(ws: WebSocketConnection) -> None:
    """Close ``ws``'s TCP stream at once, without a close frame: after a write cancelled
    half-way the next bytes would be read as the rest of a frame. The library's reader then
    finds the stream closed and ends the connection (1006); ``aclose`` is then a no-op."""
    stream = getattr(ws, "_stream", None)
    if stream is None:  # another version of the library: its own close
        with trio.move_on_after(1.0):
            await ws.aclose()
        return
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def batchable(ws: WebSocketConnection) -> bool:
    return all(hasattr(ws, name) for name in _INTERNALS)


def _send_now(stream: object, data: bytes) -> int:
    """Write what the kernel takes of ``data`` to ``stream``'s socket without blocking and
    without a checkpoint; how many bytes it took (0: none, or not a plain socket stream).
    A broken or closed socket raises ``trio.BrokenResourceError``. (The gateway's
    ``PrefixedStream`` is dropped at accept, ``eager_receive``: the node's connections write
    to the socket stream itself.)"""
    if type(stream) is not trio.SocketStream:
        return 0
    sock = getattr(stream.socket, "_sock", None)
    if sock is None:
        return 0
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
    except OSError as e:
        raise trio.BrokenResourceError(f"socket send failed: {e}") from e


class Rest:
    """What ``send_texts_now`` could not write at once; ``send_rest`` writes it."""

    __slots__ = ("broken", "data", "locked", "sent", "texts")

    def __init__(
        self, data: bytes = b"", sent: int = 0, locked: bool = False, broken: bool = False,
        texts: list[str] | None = None,
    ) -> None:
        self.data, self.sent, self.locked, self.broken = data, sent, locked, broken
        self.texts = texts  # another library version: each text through ``send_message``


def send_texts_now(ws: WebSocketConnection, texts: list[str]) -> Rest | None:
    """Frame ``texts`` (one WebSocket message each) and write what the socket takes now,
    without a checkpoint; None if it took everything, else the ``Rest`` for ``send_rest``
    (it holds the connection's write lock meanwhile). Raises ``ConnectionClosed``."""
    if not batchable(ws):
        return Rest(texts=texts)
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    proto = ws._wsproto
    if len(texts) == 1:
        data = proto.send(TextMessage(data=texts[0]))
    else:
        data = b"".join([proto.send(TextMessage(data=text)) for text in texts])
    lock = ws._stream_lock
    if lock.locked():  # the library's reader task is writing (a pong, a close)
        return Rest(data)
    # Free, and nothing can take it before this returns (no checkpoint): a write the socket
    # takes whole needs no lock (taking and releasing one showed in the profile).
    try:
        sent = _send_now(ws._stream, data)
    except trio.BrokenResourceError:
        lock.acquire_nowait()
        return Rest(data, locked=True, broken=True)
    if sent == len(data):
        return None
    lock.acquire_nowait()  # for the rest: held until ``send_rest`` has written it
    return Rest(data, sent, locked=True)


async def send_rest(ws: WebSocketConnection, rest: Rest) -> None:
    """Write what ``send_texts_now`` left (waiting for the socket); raises
    ``ConnectionClosed``."""
    if rest.texts is not None:
        for text in rest.texts:
            await ws.send_message(text)
        return
    lock = ws._stream_lock
    if not rest.locked:
        await lock.acquire()
    try:
        if rest.broken:
            raise trio.BrokenResourceError
        data, sent = rest.data, rest.sent
        if not rest.locked:
            sent = _send_now(ws._stream, data)
        if sent < len(data):
            await ws._stream.send_all(memoryview(data)[sent:] if sent else data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await ws._abort_web_socket()
        assert ws._close_reason is not None
        raise ConnectionClosed(ws._close_reason) from None
    finally:
        lock.release()


async def send_texts(ws: WebSocketConnection, texts: list[str]) -> None:
    """Send ``texts`` in order, one WebSocket message each; raises ``ConnectionClosed``."""
    rest = send_texts_now(ws, texts)
    if rest is not None:
        await send_rest(ws, rest)
