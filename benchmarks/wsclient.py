"""The load generator's own WebSocket client: raw RFC 6455 over an asyncio `Protocol`.

Not the node's code and not a WebSocket library: a few dozen lines that do only what a load
generator needs, as cheaply as Python allows, so that one load process can outrun the server
under test on the other core:

- frames the client sends are masked with the all-zero key (RFC 6455 requires a mask, not a
  random one; a zero key makes masking free), and are *corked*: every frame queued during one
  turn of the event loop goes out in one ``write`` per connection;
- frames the server sends are parsed in place from one buffer; pings are answered, fragmented
  messages reassembled, a close frame closes the transport;
- no extensions are offered (no compression), so every server sends plain frames.

`connect()` opens the TCP connection (from a chosen loopback source address, to spread tens of
thousands of sockets over several 127.0.0.x) and does the HTTP upgrade.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import Any

__all__ = ["Corker", "HandshakeError", "WsClient", "connect"]


class HandshakeError(Exception):
    """The server did not answer the upgrade with 101."""


class Corker:
    """Flushes every connection that queued frames during this turn of the loop, once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: list[WsClient] = []
        self.scheduled = False

    def mark(self, client: WsClient) -> None:
        self.dirty.append(client)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for client in dirty:
            client.flush()


def _header(opcode: int, length: int) -> bytes:
    # FIN + opcode; MASK bit + length; then the all-zero masking key.
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length, 0, 0, 0, 0))
    if length < 65536:
        return bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big") + b"\0\0\0\0"
    return bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big") + b"\0\0\0\0"


class WsClient(asyncio.Protocol):
    """One client WebSocket. `on_message(payload: bytes)` gets each complete data message."""

    def __init__(self, corker: Corker, on_message: Callable[[bytes], Any] | None = None) -> None:
        self.corker = corker
        self.on_message: Callable[[bytes], Any] | None = on_message
        self.on_close: Callable[[WsClient], Any] | None = None
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.dirty = False
        self.upgraded: asyncio.Future[None] = corker.loop.create_future()
        self.closed = False
        self.close_code: int | None = None
        self.fragments: list[bytes] = []

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if self.on_close is not None:
            self.on_close(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self.upgraded.set_exception(HandshakeError(status.decode("latin-1")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded.set_result(None)
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            if masked:  # servers must not mask; tolerate it anyway
                key = buf[pos + head - 4 : pos + head]
                payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            pos += head + length
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                if b0 & 0x80:
                    if self.on_message is not None:
                        self.on_message(payload)
                else:
                    self.fragments = [payload]
            elif opcode == 0:
                self.fragments.append(payload)
                if b0 & 0x80:
                    whole = b"".join(self.fragments)
                    self.fragments = []
                    if self.on_message is not None:
                        self.on_message(whole)
            elif opcode == 9:
                self.send_frame(0xA, payload)
            elif opcode == 8:
                if len(payload) >= 2:
                    self.close_code = int.from_bytes(payload[:2], "big")
                if not self.closed:
                    self.send_frame(0x8, payload[:2])
                    self.flush()
                    self.closed = True
                    self.transport.close()  # type: ignore[union-attr]
                break
        if pos:
            del buf[:pos]

    # -- sending ---------------------------------------------------------------------------
    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.out.append(_header(opcode, len(payload)))
        self.out.append(payload)
        if not self.dirty:
            self.dirty = True
            self.corker.mark(self)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def flush(self) -> None:
        self.dirty = False
        if self.out and not self.closed and self.transport is not None:
            self.transport.write(b"".join(self.out))
        self.out = []

    def close(self, code: int = 1000) -> None:
        """Send a close frame and close the socket without waiting for the answer."""
        if self.closed or self.transport is None:
            return
        self.send_frame(0x8, code.to_bytes(2, "big"))
        self.flush()
        self.closed = True
        self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


async def connect(
    corker: Corker,
    host: str,
    port: int,
    *,
    source: str | None = None,
    path: str = "/",
    timeout: float = 10.0,
    on_message: Callable[[bytes], Any] | None = None,
) -> WsClient:
    """A connected, upgraded client (raises on failure or after `timeout` seconds)."""
    loop = corker.loop
    client = WsClient(corker, on_message)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://{host}:{port}\r\n\r\n"
    ).encode()
    async with asyncio.timeout(timeout):
        await loop.create_connection(
            lambda: client, host, port, local_addr=(source, 0) if source else None
        )
        assert client.transport is not None
        client.transport.write(request)
        try:
            await client.upgraded
        except BaseException:
            client.abort()
            raise
    return client
