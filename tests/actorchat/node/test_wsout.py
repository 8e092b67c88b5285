"""``send_texts``: a flush's frames in one socket write, each still its own WebSocket message,
over in-memory streams (no sockets)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_client_stream, wrap_server_stream

from actorchat.node._http import PrefixedStream
from actorchat.node._wsout import (
    _EagerSend,
    abort_stream,
    batchable,
    eager_receive,
    send_rest,
    send_texts,
    send_texts_now,
)


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


async def _tcp_pair(nursery: trio.Nursery, prefixed: bool = False):  # type: ignore[no-untyped-def]
    """A server and a client WebSocket over a real loopback TCP connection (``prefixed``: the
    server's stream is the gateway's ``PrefixedStream`` over the socket, as in the node)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = None

    async def connect() -> None:
        nonlocal client
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = await wrap_client_stream(nursery, stream, "localhost", "/")

    nursery.start_soon(connect)
    server_stream = await listeners[0].accept()
    await listeners[0].aclose()
    wrapped = PrefixedStream(server_stream, b"") if prefixed else server_stream
    request = await wrap_server_stream(nursery, wrapped)
    server = await request.accept()
    while client is None:
        await trio.sleep(0)
    return server, client, server_stream


def count_send_all(monkeypatch: pytest.MonkeyPatch, stream: trio.SocketStream) -> list[int]:
    """The sizes of the ``send_all`` calls on ``stream`` from now on (they still send)."""
    calls: list[int] = []
    send_all = stream.send_all

    async def counted(data):  # type: ignore[no-untyped-def]
        calls.append(len(data))
        await send_all(data)

    monkeypatch.setattr(stream, "send_all", counted)
    return calls


@pytest.mark.parametrize("prefixed", [False, True])
async def test_on_tcp_a_write_the_kernel_takes_goes_out_without_send_all(
    nursery, monkeypatch, prefixed
):
    server, client, stream = await _tcp_pair(nursery, prefixed)
    if prefixed:
        eager_receive(server)  # as the gateway does at accept: drops the PrefixedStream
    calls = count_send_all(monkeypatch, stream)
    await send_texts(server, ["one", "two"])
    assert [await client.get_message() for _ in range(2)] == ["one", "two"]
    assert calls == []  # the socket took it at once: no send_all, no checkpoint


async def test_on_tcp_what_the_kernel_does_not_take_waits_in_send_all_in_order(
    nursery, monkeypatch
):
    server, client, stream = await _tcp_pair(nursery)
    calls = count_send_all(monkeypatch, stream)
    big = ["a" * 1_000_000, "b" * 1_000_000, "c" * 1_000_000]  # far over a socket buffer
    got: list[str] = []

    async def read_late() -> None:
        await trio.sleep(0.2)  # the kernel's buffers fill first
        for _ in big:
            got.append(await client.get_message())

    async with trio.open_nursery() as inner:
        inner.start_soon(read_late)
        with trio.fail_after(10):
            await send_texts(server, big)
    assert got == big
    assert len(calls) == 1 and 0 < calls[0] < sum(map(len, big))  # only the rest waited


async def test_on_tcp_a_reset_connection_raises_connection_closed(nursery):
    server, _client, stream = await _tcp_pair(nursery)
    stream.socket.close()  # the socket is gone under the WebSocket (EBADF on send)
    with pytest.raises(ConnectionClosed):
        await send_texts(server, ["a"])


async def test_eager_receive_hands_messages_over_in_order_and_waits_when_the_reader_is_behind(
    nursery,
):
    """The library's reader hands a message over without a checkpoint while there is room
    (trio-websocket's channel holds one), and waits for the reader when there is none: a
    burst arrives whole and in order, read slowly."""
    server, client, _ = await _pair(nursery)
    eager_receive(server)
    assert isinstance(server._send_channel, _EagerSend)
    texts = [f"m{i}" for i in range(50)]
    await send_texts(client, texts)
    got = []
    for _ in texts:
        await trio.sleep(0.001)  # a slow reader: the channel is full while it sleeps
        got.append(await server.get_message())
    assert got == texts
    await client.aclose()
    with pytest.raises(ConnectionClosed):  # the close still ends get_message
        with trio.fail_after(5):
            await server.get_message()


async def test_eager_receive_skips_the_checkpoint_when_there_is_room():
    sent, received = trio.open_memory_channel[object](1)
    eager = _EagerSend(sent)
    # No checkpoint: inside a cancelled scope a checkpoint would raise Cancelled.
    with trio.CancelScope() as scope:
        scope.cancel()
        await eager.send("a")
    assert not scope.cancelled_caught
    assert received.receive_nowait() == "a"


async def test_eager_receive_leaves_another_library_version_alone():
    class Other:
        pass

    other = Other()
    eager_receive(other)  # type: ignore[arg-type]
    assert not hasattr(other, "_send_channel")


async def test_a_write_cancelled_half_way_then_aborted_reads_as_a_dropped_connection(nursery):
    """The writer's stall timeout cancels a write with half a frame in the socket; the
    stream is then closed without a close frame (``abort_stream``), so the client reads its
    whole frames and then a dropped connection (1006), never a close frame read as the rest
    of a frame (1007 or a protocol error)."""
    server, client, stream = await _tcp_pair(nursery, prefixed=True)
    eager_receive(server)  # as the gateway does at accept
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    await send_texts(server, ["first"])  # sits in the client library's message channel
    big = "x" * 500_000
    with trio.move_on_after(0.3) as scope:  # nobody reads: the write stalls
        await send_texts(server, [big] * 20)
    assert scope.cancelled_caught
    await abort_stream(server)
    with trio.fail_after(5):
        await server.aclose()  # after the abort: returns at once, writes nothing
    assert await client.get_message() == "first"
    with pytest.raises(ConnectionClosed) as closed:
        with trio.fail_after(5):
            while True:  # whole frames, then the drop
                assert await client.get_message() == big
    assert closed.value.reason.code == 1006


async def test_eager_receive_drops_the_gateway_stream_once_its_head_was_replayed(nursery):
    server, client, stream = await _tcp_pair(nursery, prefixed=True)
    assert type(server._stream) is PrefixedStream
    eager_receive(server)
    assert server._stream is stream  # the socket stream itself
    await send_texts(server, ["out"])
    assert await client.get_message() == "out"
    await client.send_message("in")
    assert await server.get_message() == "in"


async def test_send_texts_now_writes_what_the_socket_takes_and_leaves_the_rest(nursery):
    """What the kernel takes goes at once (None: nothing left); a full socket leaves a
    ``Rest`` holding the write lock, and ``send_rest`` writes it once the client reads."""
    server, client, _ = await _tcp_pair(nursery, prefixed=True)
    eager_receive(server)  # as the gateway does at accept
    assert send_texts_now(server, ["small"]) is None
    assert await client.get_message() == "small"
    big = ["y" * 500_000] * 10
    rest = send_texts_now(server, big)
    assert rest is not None and rest.locked and 0 <= rest.sent < len(rest.data)
    assert server._stream_lock.locked()  # held for the rest: nothing can cut in

    async def read_all() -> None:
        for text in big:
            assert await client.get_message() == text

    async with trio.open_nursery() as inner:
        inner.start_soon(read_all)
        with trio.fail_after(10):
            await send_rest(server, rest)
    assert not server._stream_lock.locked()


async def test_a_rest_whose_lock_was_busy_waits_for_it():
    """The library's reader was writing (a pong): the rest takes the lock first."""
    async with trio.open_nursery() as nursery:
        server, client, _ = await _pair(nursery)
        release = trio.Event()

        async def pong() -> None:  # another task holds the lock meanwhile
            async with server._stream_lock:
                await release.wait()

        nursery.start_soon(pong)
        await trio.sleep(0.01)
        rest = send_texts_now(server, ["after the pong"])
        assert rest is not None and not rest.locked
        nursery.start_soon(send_rest, server, rest)
        await trio.sleep(0.01)
        release.set()
        with trio.fail_after(5):
            assert await client.get_message() == "after the pong"
        nursery.cancel_scope.cancel()
