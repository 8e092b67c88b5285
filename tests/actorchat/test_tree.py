"""``python -m actorchat tree``: formatting (pure), and the real command against a live node
whose mailbox actor crashes in between (the restart count it prints goes up)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent / "node"))
from client import Client
from node_harness import make_settings, restarted, stop_node

import supervisors as sv
from actorchat.node import Node
from actorchat.tree import format_tree, main

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tree-token-0123456789"


def test_format_tree_indents_children_and_says_what_it_left_out() -> None:
    def node(id: str, kind: str = "worker", **more: Any) -> dict[str, Any]:
        return {"id": id, "kind": kind, "state": "running", "restarts": 0,
                "mailbox_depth": 0, "children": [], **more}

    users = node("users", "supervisor:simple_one_for_one",
                 children=[node("user", restarts=2, mailbox_depth=3, label="bob")], omitted=4)
    answer = {"node": "n1", "tree": node("n1", "supervisor:rest_for_one",
                                         children=[node("store", "thread"), users])}
    assert format_tree(answer).splitlines() == [
        "node n1",
        "n1  supervisor:rest_for_one  running  restarts=0  mailbox=0",
        "├── store  thread  running  restarts=0  mailbox=0",
        "└── users  supervisor:simple_one_for_one  running  restarts=0  mailbox=0",
        "    ├── user (bob)  worker  running  restarts=2  mailbox=3",
        "    └── ... 4 more",
    ]


def test_tree_needs_a_token(capsys: Any) -> None:
    try:
        main(["--node", "127.0.0.1:1"], {})
    except SystemExit as e:
        assert e.code == 2
    assert "no admin token" in capsys.readouterr().err


async def run_tree(port: int, *extra: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACTORCHAT_ADMIN_TOKEN": token}
    return await trio.run_process(
        [sys.executable, "-m", "actorchat", "tree", "--node", f"127.0.0.1:{port}", *extra],
        cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False,
    )


def user_restarts(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"user \(bob\)  worker  running  restarts=(\d+)", output)]


async def test_tree_command_shows_a_restart_after_a_crash(tmp_path: Path) -> None:
    node = Node(make_settings(tmp_path, admin_port=0, admin_token=TOKEN))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        async with Client.connect(node.port) as bob:
            await bob.register("bob")
            await bob.login("bob")
            before = await run_tree(node.admin_port)
            assert before.returncode == 0, before.stderr
            out = before.stdout.decode()
            assert out.startswith("node test\ntest  supervisor:rest_for_one  running")
            assert "users  supervisor:simple_one_for_one  running" in out
            assert "store  thread  running  restarts=0  mailbox=0" in out
            assert user_restarts(out) == [0]

            node.registry.mailboxes["bob"].kill(sv.Error(RuntimeError("injected")))
            with trio.fail_after(10):
                while restarted(node) != [("test/users/user", 1)]:
                    await trio.sleep(0.01)
            after = await run_tree(node.admin_port)
            assert user_restarts(after.stdout.decode()) == [1]

            refused = await run_tree(node.admin_port, token="wrong-token-0123456789")
            assert refused.returncode == 1
            assert b"refused the admin token" in refused.stderr
        await stop_node(node)
        nursery.cancel_scope.cancel()
