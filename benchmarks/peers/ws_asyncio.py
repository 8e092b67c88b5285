"""Peer 1: the plain relay a Python developer writes first, with `websockets` on asyncio.

The library's default settings and the standard `json` module; one dict of who is connected;
``send`` is written to the recipient's socket from the sender's handler. Like the bare relay it
has no acks, no storage and no auth: ``login``/``resume`` -> ``welcome`` (the token is the user
name), ``send`` -> ``deliver``, ``ping`` -> ``pong``; ``ack`` and the rest are ignored, and a
message to a user who is not connected is dropped.

    python benchmarks/peers/ws_asyncio.py --port 0

prints ``ws_asyncio node peer1 listening on ws://HOST:PORT/``; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

clients: dict[str, ServerConnection] = {}
mids: dict[str, int] = {}


async def handler(ws: ServerConnection) -> None:
    user = None
    try:
        async for message in ws:
            try:
                frame = json.loads(message)
            except ValueError:
                continue
            kind = frame.get("type")
            if kind == "send" and user is not None:
                to = frame.get("to")
                peer = clients.get(to)
                if peer is None:
                    continue
                mids[to] = mids.get(to, 0) + 1
                deliver = {
                    "type": "deliver",
                    "messages": [
                        {
                            "mid": str(mids[to]),
                            "id": frame.get("id"),
                            "from": user,
                            "to": to,
                            "body": frame.get("body"),
                            "ts": time.time(),
                        }
                    ],
                }
                try:
                    await peer.send(json.dumps(deliver))
                except ConnectionClosed:
                    pass
            elif kind in ("login", "resume"):
                user = frame.get("user") if kind == "login" else frame.get("token")
                clients[user] = ws
                await ws.send(json.dumps({"type": "welcome", "user": user, "token": user}))
            elif kind == "ping":
                await ws.send(json.dumps({"type": "pong"}))
    except ConnectionClosed:
        pass
    finally:
        if user is not None and clients.get(user) is ws:
            del clients[user]


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.cancel)
    async with serve(handler, host, port) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"ws_asyncio node peer1 listening on ws://{host}:{bound}/", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="plain websockets/asyncio relay (peer 1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
