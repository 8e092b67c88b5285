"""actorchat.logs: the two line formats, and the lines of a message's life on a live node
(each carrying sender, id, recipient, mid and node, so one message can be followed)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent / "node"))
from client import Client
from node_harness import make_settings, stop_node

from actorchat.logs import JsonFormatter, TextFormatter, configure_logging
from actorchat.node import Node


def record(msg: str = "hello %s", args: tuple = ("world",), **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("actorchat.test", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_text_lines_carry_fields_as_key_value() -> None:
    rec = record(ctx={"sender": "alice", "id": "a b", "mid": None}, node="n1")
    line = TextFormatter().format(rec)
    assert line.endswith('INFO actorchat.test: hello world node=n1 sender=alice id="a b"')
    assert line[:4].isdigit() and "T" in line.split()[0] and line.split()[0].endswith("Z")


def test_json_lines_are_one_object_with_fields() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record(ctx={"event": "stored", "mid": "12"}, user="bob")
        rec.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "hello world" and out["level"] == "INFO"
    assert out["logger"] == "actorchat.test"
    assert (out["event"], out["mid"], out["user"]) == ("stored", "12", "bob")
    assert "ValueError: boom" in out["exc"]
    assert "\n" not in JsonFormatter().format(rec)  # one line, even with a traceback


def test_configure_logging_json_stamps_the_node_name() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("INFO", "json", node="n7", stream=stream)
        logging.getLogger("actorchat.x").info("started on %d", 8765)
        logging.getLogger("actorchat.x").debug("not shown")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["node"] == "n7"
    assert json.loads(lines[0])["msg"] == "started on 8765"


# -- a message's life on a live node ------------------------------------------------------------
def lives(caplog: pytest.LogCaptureFixture) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The lines of each message (sender, id), in order, as their structured fields."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for rec in caplog.records:
        if rec.name == "actorchat.message":
            ctx = rec.ctx  # type: ignore[attr-defined]
            out[(ctx["sender"], ctx["id"])].append(ctx)
    return out


async def test_one_message_can_be_followed_through_its_life(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="actorchat.message")
    node = Node(make_settings(tmp_path, node_name="n1"))
    node.user_linger = 600.0
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        async with Client.connect(node.port) as alice, Client.connect(node.port) as bob:
            await alice.register("alice")
            await bob.register("bob")
            await alice.login("alice")
            await bob.login("bob")
            online = await alice.send_message("bob", "hi")
            await bob.until(lambda: online in bob.delivered_ids())
            await alice.until(lambda: ("bob", online) in alice.receipts["delivered"])
        # bob is gone: the next one is stored, then delivered when he is back.
        async with Client.connect(node.port) as alice:
            await alice.login("alice")
            with trio.fail_after(10):
                while "bob" in node.registry.connections:
                    await trio.sleep(0.01)
            stored = await alice.send_message("bob", "later")
            await alice.until(lambda: stored in alice.accepted)
            async with Client.connect(node.port) as bob:
                await bob.login("bob")
                await bob.until(lambda: stored in bob.delivered_ids())
                await alice.until(lambda: ("bob", stored) in alice.receipts["delivered"])
                with trio.fail_after(10):
                    while "drained" not in {c["event"] for c in lives(caplog)[("alice", stored)]}:
                        await trio.sleep(0.01)
        await stop_node(node)
        nursery.cancel_scope.cancel()

    life = lives(caplog)
    first = life[("alice", online)]
    events = [c["event"] for c in first]
    assert events == ["received", "queued", "delivered", "accepted", "acked"], first
    mids = {c.get("mid") for c in first if c["event"] != "received"}
    assert len(mids) == 1 and None not in mids  # one mid, on every line that has one
    assert all(c["recipient"] == "bob" and c["node"] == "n1" for c in first)

    second = [c["event"] for c in life[("alice", stored)]]
    assert {"queued", "stored", "accepted", "delivered", "acked", "drained"} <= set(second)
    assert second.index("stored") < second.index("accepted") < second.index("drained")
    assert len({c.get("mid") for c in life[("alice", stored)] if c["event"] != "received"}) == 1


async def test_no_message_lines_above_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorchat.message")
    node = Node(make_settings(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        async with Client.connect(node.port) as alice:
            await alice.register("alice")
            await alice.login("alice")
            id = await alice.send_message("alice", "to myself")
            await alice.until(lambda: ("alice", id) in alice.receipts["delivered"])
        await stop_node(node)
        nursery.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.name == "actorchat.message"]
