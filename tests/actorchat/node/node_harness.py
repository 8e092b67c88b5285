"""Helpers of the end-to-end node tests: test settings, tree inspection, subprocess nodes.

The fixtures that use them are in ``conftest.py``. ``NodeProcess`` runs
``python -m actorchat --port 0 ...`` and reads the port from the line the node prints on stdout.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import supervisors as sv
from actorchat.config import Settings
from actorchat.node import Node

SECRET = b"x" * 32
ROOT = Path(__file__).resolve().parents[3]

# No rate limit in the way of load tests; short timeouts so time-dependent paths run quickly.
FAST: dict[str, Any] = {
    "messages_per_second": 1_000_000.0,
    "message_burst": 1_000_000,
    "ack_timeout": 1.0,
    "send_stall_timeout": 2.0,
    "idle_timeout": 120.0,
    "log_level": "WARNING",
}


#: For ``pytest.mark.parametrize("dialect", DIALECTS, indirect=True)`` (see conftest.py).
DIALECTS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "port": 0,
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/t.db",
        "secret": SECRET,
        "node_name": "test",
        **FAST,
    }
    values.update(overrides)
    return Settings(**values)


async def stop_node(node: Node) -> None:
    """Stop the tree as SIGTERM does: in reverse order, mailboxes storing what they hold."""
    assert node.sup is not None
    if node.sup.is_alive():
        node.sup.stop()
        await node.sup.wait()


async def stop_nodes(nodes: list[Node], timeout: float = 60) -> None:
    """Stop in-process nodes, the last started first (a test's nodes at teardown)."""
    with trio.fail_after(timeout):
        for node in reversed(nodes):
            await stop_node(node)


def restart_counts(snapshot: sv.TreeSnapshot, path: str = "") -> list[tuple[str, int]]:
    """Every actor of the tree with its restart count, by path (``test/users/user``: the
    children of a simple_one_for_one supervisor share their template's id)."""
    here = f"{path}/{snapshot.id}" if path else str(snapshot.id)
    counts = [(here, snapshot.restarts)]
    for child in snapshot.children:
        counts += restart_counts(child, here)
    return counts


def restarted(node: Node) -> list[tuple[str, int]]:
    """The actors of the node that restarted at least once, with their counts."""
    assert node.sup is not None
    return sorted((path, n) for path, n in restart_counts(node.sup.snapshot()) if n)


# -- subprocess nodes --------------------------------------------------------------------------
LISTENING = re.compile(r"listening on ws://[^:]+:(\d+)/")


class NodeProcess:
    """``python -m actorchat`` on a free port; ``port`` is parsed from its stdout."""

    def __init__(self, db: Path, log: Path, **options: Any) -> None:
        args = [sys.executable, "-m", "actorchat", "--port", "0",
                "--database-url", f"sqlite+aiosqlite:///{db}", "--node-name", "sub"]
        for name, value in {**FAST, **options}.items():
            args += ["--" + name.replace("_", "-"), str(value)]
        env = {**os.environ, "ACTORCHAT_SECRET": SECRET.decode(), "PYTHONUNBUFFERED": "1"}
        self.log = log
        self._log_file = log.open("ab")
        self.output = ""
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self._log_file
        )
        self.port = self._read_port(timeout=30)

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._read_stdout(0.2) and self.proc.poll() is not None:
                break
            if match := LISTENING.search(self.output):
                return int(match[1])
        self.kill()
        raise RuntimeError(
            f"the node did not start: stdout {self.output!r}, "
            f"log:\n{self.log.read_text()[-3000:]}"
        )

    def _read_stdout(self, timeout: float) -> bool:
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(stdout.fileno(), 4096)
        self.output += chunk.decode(errors="replace")
        return bool(chunk)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the node to exit; returns its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout)
        while self._read_stdout(0):
            pass
        return status

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()
