"""``python -m actorchat chat``: the terminal client, driven as a person would (stdin/stdout),
against an in-process node, with an independent client (trio-websocket + json) on the other end."""

from __future__ import annotations

import json
import subprocess
import sys

import trio
from trio_websocket import open_websocket_url

from actorchat.config import Settings
from actorchat.node import Node


async def _frame(ws, kind: str) -> dict:
    with trio.fail_after(20):
        while True:
            frame = json.loads(await ws.get_message())
            if frame["type"] == kind:
                return frame


async def test_chat_client_registers_sends_and_shows_ticks(tmp_path) -> None:
    settings = Settings(
        port=0, database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db", secret=b"k" * 32
    )
    node = Node(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        url = f"ws://127.0.0.1:{node.port}/"
        async with open_websocket_url(url) as bob:
            await bob.send_message(
                json.dumps({"type": "register", "user": "bob", "password": "pw"})
            )
            await _frame(bob, "registered")
            await bob.send_message(json.dumps({"type": "login", "user": "bob", "password": "pw"}))
            await _frame(bob, "welcome")
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "actorchat",
                    "chat",
                    "--user",
                    "alice",
                    "--to",
                    "bob",
                    "--password",
                    "pw",
                    "--url",
                    url,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdin is not None and proc.stdout is not None
                await proc.stdin.send_all(b"hello bob\n")
                deliver = await _frame(bob, "deliver")
                item = deliver["messages"][0]
                assert (item["from"], item["body"]) == ("alice", "hello bob")
                await bob.send_message(json.dumps({"type": "ack", "mids": [item["mid"]]}))
                await bob.send_message(json.dumps({"type": "read", "mids": [item["mid"]]}))
                await bob.send_message(
                    json.dumps({"type": "send", "id": "b1", "to": "alice", "body": "hi alice"})
                )
                out = b""
                with trio.fail_after(20):
                    while b"read hello bob" not in out or b"bob: hi alice" not in out:
                        out += await proc.stdout.receive_some(4096)
                text = out.decode()
                assert "registered alice" in text and "logged in as alice" in text
                assert "✓ hello bob" in text and "✓✓ hello bob" in text
                await proc.stdin.send_all(b"/quit\n")
                with trio.fail_after(10):
                    assert await proc.wait() == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        node.sup.stop()
        await node.sup.wait()
        nursery.cancel_scope.cancel()
