"""Several text messages to one WebSocket in one write.

trio-websocket writes each message on its own: per message a ``send_all`` (a socket send and
its checkpoint) under a lock whose ``acquire`` is one more checkpoint, and on loopback the send
syscall is the dearest part of a frame. The connection writer coalesces items into as few
frames as the protocol allows, but a flush often still holds several (a ``deliver``, an
``accepted`` and a ``receipt`` frame): ``send_texts`` frames them all (each still its own
WebSocket message) and writes the bytes with one ``send_all``, taking the lock without a
checkpoint when it is free (the send is one), with the errors of ``send_message``.

This reaches into trio-websocket's connection (``_wsproto``, ``_stream``, ``_stream_lock``,
``_close_reason``, ``_abort_web_socket``: the body of its ``_send``); a connection without them
(another version) gets one ``send_message`` per text. Guarded by ``test_wsout.py``.
"""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import TextMessage

_INTERNALS = ("_wsproto", "_stream", "_stream_lock", "_close_reason", "_abort_web_socket")


def batchable(ws: WebSocketConnection) -> bool:
    return all(hasattr(ws, name) for name in _INTERNALS)


async def send_texts(ws: WebSocketConnection, texts: list[str]) -> None:
    """Send ``texts`` in order, one WebSocket message each; raises ``ConnectionClosed``."""
    if not batchable(ws):
        for text in texts:
            await ws.send_message(text)
        return
    if ws._close_reason:
        raise ConnectionClosed(ws._close_reason)
    proto = ws._wsproto
    if len(texts) == 1:
        data = proto.send(TextMessage(data=texts[0]))
    else:
        data = b"".join([proto.send(TextMessage(data=text)) for text in texts])
    lock = ws._stream_lock
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:  # the library's reader task is writing (a pong, a close)
        await lock.acquire()
    try:
        await ws._stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await ws._abort_web_socket()
        assert ws._close_reason is not None
        raise ConnectionClosed(ws._close_reason) from None
    finally:
        lock.release()
