"""``python -m actorchat chat --user NAME``: a small terminal client for trying a node by hand.

It registers NAME if needed, logs in, shows incoming messages, and sends what you type. Ticks
follow WhatsApp: ``✓`` accepted by the server (safe), ``✓✓`` delivered, ``✓✓ read`` read.
Type ``/to USER`` to choose the recipient, ``/quit`` to leave. It speaks the wire protocol like
any other client (docs/protocol.md) and reconnects with its token when the connection drops.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url


class ChatClient:
    def __init__(self, url: str, user: str, password: str, to: str | None) -> None:
        self.url, self.user, self.password, self.to = url, user, password, to
        self.token: str | None = None
        self.unaccepted: dict[str, dict[str, Any]] = {}  # id -> send frame, resent on reconnect
        self.seen_mids: set[str] = set()
        self.labels: dict[str, str] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    async def run(self) -> None:
        lines_send, lines_recv = trio.open_memory_channel[str](16)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stdin, lines_send)
            while True:
                try:
                    async with open_websocket_url(self.url) as ws:
                        await self._session(ws, lines_recv)
                        nursery.cancel_scope.cancel()
                        return
                except (ConnectionClosed, HandshakeError, OSError) as e:
                    self.say(f"-- connection lost ({e.__class__.__name__}); reconnecting in 1 s")
                    await trio.sleep(1.0)

    async def _stdin(self, out: trio.MemorySendChannel[str]) -> None:
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                await out.send("/quit")
                return
            await out.send(line.rstrip("\n"))

    async def _send(self, ws: Any, frame: dict[str, Any]) -> None:
        await ws.send_message(json.dumps(frame))

    async def _session(self, ws: Any, lines: trio.MemoryReceiveChannel[str]) -> None:
        if self.token:
            await self._send(ws, {"type": "resume", "token": self.token})
        else:
            await self._send(ws, {"type": "login", "user": self.user, "password": self.password})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, ws)
            async for line in lines:
                if line == "/quit":
                    nursery.cancel_scope.cancel()
                    return
                if line.startswith("/to "):
                    self.to = line[4:].strip()
                    self.say(f"-- now writing to {self.to}")
                    continue
                if not line.strip():
                    continue
                if not self.to:
                    self.say("-- choose a recipient first: /to USER")
                    continue
                frame = {"type": "send", "id": str(uuid.uuid4()), "to": self.to, "body": line}
                self.unaccepted[frame["id"]] = frame
                self.labels[frame["id"]] = line[:30]
                await self._send(ws, frame)

    async def _reader(self, ws: Any) -> None:
        while True:
            frame = json.loads(await ws.get_message())
            kind = frame.get("type")
            if kind == "welcome":
                self.token = frame["token"]
                self.say(f"-- logged in as {frame['user']}")
                for pending in list(self.unaccepted.values()):  # retries: deduped by the server
                    await self._send(ws, pending)
            elif kind == "error" and frame.get("code") == "bad_credentials" and not self.token:
                await self._send(
                    ws, {"type": "register", "user": self.user, "password": self.password}
                )
            elif kind == "registered":
                self.say(f"-- registered {frame['user']}")
                await self._send(
                    ws, {"type": "login", "user": self.user, "password": self.password}
                )
            elif kind == "deliver":
                mids = []
                for m in frame["messages"]:
                    mids.append(m["mid"])
                    if m["mid"] in self.seen_mids:
                        continue
                    self.seen_mids.add(m["mid"])
                    self.say(f"{m['from']}: {m['body']}")
                await self._send(ws, {"type": "ack", "mids": mids})
                await self._send(ws, {"type": "read", "mids": mids})
            elif kind == "accepted":
                for i in frame["ids"]:
                    self.unaccepted.pop(i, None)
                    self.say(f"   ✓ {self.labels.get(i, i)}")
            elif kind == "receipt":
                tick = "✓✓ read" if frame["status"] == "read" else "✓✓"
                for i in frame["ids"]:
                    self.say(f"   {tick} {self.labels.get(i, i)} ({frame['by']})")
            elif kind == "error":
                self.say(f"-- error {frame['code']}: {frame['message']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m actorchat chat", description=__doc__)
    parser.add_argument("--user", required=True, help="your user name (registered if new)")
    parser.add_argument("--to", help="the user to write to (or type /to USER)")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/", help="the node's WebSocket URL")
    parser.add_argument(
        "--password",
        default=os.environ.get("ACTORCHAT_PASSWORD"),
        help="password (default: $ACTORCHAT_PASSWORD, else asked)",
    )
    args = parser.parse_args(argv)
    password = args.password or getpass.getpass(f"password for {args.user}: ")
    try:
        trio.run(ChatClient(args.url, args.user, password, args.to).run)
    except KeyboardInterrupt:
        pass
    return 0
