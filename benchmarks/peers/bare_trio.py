"""The ceiling: a bare trio-websocket relay. No actors, no acks, no storage, no auth.

It speaks just enough of the actorchat protocol for the one load generator: ``login``/``resume``
-> ``welcome`` (the token is the user name), ``send`` -> one ``deliver`` frame written straight
to the recipient's socket from the sender's reader task, ``ping`` -> ``pong``; ``ack``, ``read``
and everything else are ignored. Frames are decoded and encoded with msgspec, as the node does.
A message to a user who is not connected is dropped.

    python benchmarks/peers/bare_trio.py --port 0

prints ``bare_trio node bare listening on ws://HOST:PORT/``; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import signal
import time

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


class In(msgspec.Struct):
    type: str
    user: str | None = None
    token: str | None = None
    id: str | None = None
    to: str | None = None
    body: str | None = None


class Item(msgspec.Struct, rename={"from_": "from"}):
    mid: str
    id: str
    from_: str
    to: str
    body: str
    ts: float


class Deliver(msgspec.Struct, tag_field="type", tag="deliver"):
    messages: list[Item]


class Welcome(msgspec.Struct, tag_field="type", tag="welcome"):
    user: str
    token: str


decode = msgspec.json.Decoder(In).decode
encode = msgspec.json.Encoder().encode
PONG = '{"type":"pong"}'

connections: dict[str, WebSocketConnection] = {}
mids: dict[str, int] = {}


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    user: str | None = None
    try:
        while True:
            data = await ws.get_message()
            try:
                frame = decode(data)
            except msgspec.DecodeError:
                continue
            kind = frame.type
            if kind == "send" and user is not None and frame.to is not None:
                peer = connections.get(frame.to)
                if peer is None:
                    continue
                mid = mids[frame.to] = mids.get(frame.to, 0) + 1
                item = Item(str(mid), frame.id or "", user, frame.to, frame.body or "", time.time())
                try:
                    await peer.send_message(encode(Deliver([item])).decode())
                except ConnectionClosed:
                    pass
            elif kind in ("login", "resume"):
                name = frame.user if kind == "login" else frame.token
                if not name:
                    continue
                user = name
                connections[user] = ws
                await ws.send_message(encode(Welcome(user, user)).decode())
            elif kind == "ping":
                await ws.send_message(PONG)
    except ConnectionClosed:
        pass
    finally:
        if user is not None and connections.get(user) is ws:
            del connections[user]


async def main(host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, host, port, None)
            print(f"bare_trio node bare listening on ws://{host}:{server.port}/", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="bare trio-websocket relay (the ceiling)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(main, args.host, args.port)
