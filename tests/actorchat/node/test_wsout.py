"""``send_texts``: a flush's frames in one socket write, each still its own WebSocket message,
over in-memory streams (no sockets)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_client_stream, wrap_server_stream

from actorchat.node._wsout import batchable, send_texts


class CountingStream(trio.abc.Stream):
    """A stream that counts ``send_all`` calls."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.writes = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _pair(nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    server_stream, client_stream = trio.testing.memory_stream_pair()
    counting = CountingStream(server_stream)
    client = None

    async def connect() -> None:
        nonlocal client
        client = await wrap_client_stream(nursery, client_stream, "localhost", "/")

    nursery.start_soon(connect)
    request = await wrap_server_stream(nursery, counting)
    server = await request.accept()
    while client is None:
        await trio.sleep(0)
    return server, client, counting


async def test_texts_arrive_in_order_as_separate_messages_in_one_write(nursery):
    server, client, counting = await _pair(nursery)
    assert batchable(server)
    texts = ['{"type":"deliver"}', '{"type":"accepted","ids":["a"]}', "é" * 300]
    writes = counting.writes
    await send_texts(server, texts)
    assert counting.writes == writes + 1
    assert [await client.get_message() for _ in texts] == texts
    await send_texts(server, ["one"])
    assert await client.get_message() == "one"


async def test_a_closed_connection_raises_connection_closed(nursery):
    server, client, _ = await _pair(nursery)
    await client.aclose()
    with trio.fail_after(5):
        while not server.closed:
            await trio.sleep(0.01)
    with pytest.raises(ConnectionClosed):
        await send_texts(server, ["a", "b"])


async def test_without_the_library_internals_each_text_is_one_send_message():
    sent: list[str] = []

    class Other:  # another trio-websocket version: only the public API
        async def send_message(self, text: str) -> None:
            sent.append(text)

    assert not batchable(Other())  # type: ignore[arg-type]
    await send_texts(Other(), ["a", "b"])  # type: ignore[arg-type]
    assert sent == ["a", "b"]
