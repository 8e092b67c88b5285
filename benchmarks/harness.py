"""Running the systems under test and the load generator: processes, cores, CPU and memory.

The machine has two cores: each server under test is pinned to one (``SERVER_CPU``), the load
generator and this orchestrator to the other, so that a server never competes with its own
load. Servers print ``... listening on ws://HOST:PORT/``; `Server` waits for that line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
SECRET = "benchmark-secret-0123456789abcdef"  # 32 characters, only for this local run

_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU = {_CPUS[-1]} if len(_CPUS) >= 2 else set(_CPUS)
LOAD_CPU = {_CPUS[0]} if len(_CPUS) >= 2 else set(_CPUS)

_LISTENING = re.compile(r"listening on ws://([^:/]+):(\d+)/")

SYSTEMS = ("bare_trio", "ws_asyncio", "channels", "actorchat")
LABELS = {
    "bare_trio": "bare trio-websocket relay",
    "ws_asyncio": "websockets/asyncio relay",
    "channels": "Django Channels + channels_redis",
    "actorchat": "actorchat (acks, receipts, store)",
}


def _pin(cpus: set[int]) -> Any:
    def pin() -> None:
        os.sched_setaffinity(0, cpus)
        os.setsid()  # its own process group: stopping it never signals us

    return pin


def pin_self() -> None:
    os.sched_setaffinity(0, LOAD_CPU)


def command(system: str, workdir: Path) -> list[str]:
    if system == "bare_trio":
        return [PYTHON, str(HERE / "peers" / "bare_trio.py"), "--port", "0"]
    if system == "ws_asyncio":
        return [PYTHON, str(HERE / "peers" / "ws_asyncio.py"), "--port", "0"]
    if system == "channels":
        return [PYTHON, str(HERE / "peers" / "channels_app" / "serve.py"), "--port", "0"]
    if system == "actorchat":
        return [
            PYTHON, "-m", "actorchat", "--port", "0",
            "--database-url", f"sqlite+aiosqlite:///{workdir / 'actorchat.db'}",
            "--secret", SECRET,
            "--messages-per-second", "100000", "--message-burst", "100000",
            "--log-level", "WARNING",
        ]  # fmt: skip
    raise ValueError(system)


PASSWORD = "bench-password-1"


def _password_hash(password: str) -> str:
    """The self-describing scrypt hash actorchat stores (``scrypt$N$r$p$salt$hash``)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, maxmem=2**26, dklen=32)
    return f"scrypt$16384$8$1${b64(salt)}${b64(digest)}"


_HASH = _password_hash(PASSWORD)


def redis_process() -> psutil.Process | None:
    """The Redis server behind the Channels layer (its CPU is reported beside Channels')."""
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] and proc.info["name"].startswith("redis-server"):
            return proc
    return None


def cpu_of(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


@dataclass
class Server:
    system: str
    workdir: Path
    proc: subprocess.Popen[str] | None = None
    ps: psutil.Process | None = None
    port: int = 0
    stderr_path: Path | None = None
    lines: list[str] = field(default_factory=list)

    def start(self, timeout: float = 90.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.workdir / f"{self.system}.stderr"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            command(self.system, self.workdir),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "w"),  # noqa: SIM115
            text=True,
            env=env,
            preexec_fn=_pin(SERVER_CPU),
        )
        self.ps = psutil.Process(self.proc.pid)
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                m = _LISTENING.search(line)
                if m and not found.is_set():
                    self.port = int(m[2])
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout):
            why = self.tail()
            self.stop()
            raise RuntimeError(f"{self.system} did not start: {why}")
        return self

    def tail(self) -> str:
        text = (
            self.stderr_path.read_text() if self.stderr_path and self.stderr_path.exists() else ""
        )
        return ("\n".join(self.lines[-5:]) + "\n" + text[-2000:]).strip()

    def seed(self, names: Any) -> None:
        """Register users straight in actorchat's SQLite store (all with `PASSWORD`): a
        registration costs the node ~50 ms of scrypt each, so thousands of test users are
        written as rows, like a store that already has them. Peers need no registration."""
        if self.system != "actorchat":
            return
        now = time.time()
        with sqlite3.connect(self.workdir / "actorchat.db", timeout=60) as db:
            db.executemany(
                "INSERT OR IGNORE INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
                [(name, _HASH, now) for name in names],
            )
        db.close()

    def cpu(self) -> float:
        return cpu_of(self.ps)

    def quiesce(self, max_wait: float = 5.0, threshold: float = 0.05) -> float:
        """Wait (at most `max_wait` s) until the server uses under `threshold` of a core, so a
        run does not pay for the backlog of the one before; returns the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < max_wait:
            c0, w0 = self.cpu(), time.monotonic()
            time.sleep(0.2)
            if (self.cpu() - c0) / (time.monotonic() - w0) < threshold:
                break
        return time.monotonic() - start

    def settle(self, max_wait: float = 30.0, window: float = 1.0) -> float:
        """Wait until the server's CPU use stops falling (two windows within 0.03 of a core of
        each other): the work a burst of logins left behind is done, whatever the idle cost
        of the connections themselves. Returns the seconds waited (at most `max_wait`)."""
        start = time.monotonic()
        last = None
        while time.monotonic() - start < max_wait:
            c0, w0 = self.cpu(), time.monotonic()
            time.sleep(window)
            use = (self.cpu() - c0) / (time.monotonic() - w0)
            if last is not None and abs(use - last) < 0.03:
                break
            last = use
        return time.monotonic() - start

    def rss(self) -> int:
        assert self.ps is not None
        return self.ps.memory_info().rss

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (then SIGKILL after `timeout` s); the work directory (database, log) is
        removed if the server stopped cleanly, and kept for a look otherwise."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.returncode in (0, -signal.SIGTERM):
            shutil.rmtree(self.workdir, ignore_errors=True)


def loadgen_command(scenario: str, server: Server, **options: Any) -> list[str]:
    cmd = [PYTHON, str(HERE / "loadgen.py"), scenario, "--port", str(server.port)]
    cmd += ["--system", server.system, "--secret", SECRET]
    if server.proc is not None:
        cmd += ["--server-pid", str(server.proc.pid)]
    for key, value in options.items():
        if value is None:
            continue
        cmd += ["--" + key.replace("_", "-"), str(value)]
    return cmd


def run_loadgen(
    scenario: str,
    server: Server,
    *,
    timeout: float,
    redis: psutil.Process | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run one load generator to completion (killed after `timeout` s); the server's CPU (and
    Redis's, for Channels) over the window the generator marks is added to its result."""
    waited = server.quiesce()
    proc = subprocess.Popen(
        loadgen_command(scenario, server, **options),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_pin(LOAD_CPU),
    )
    marks: dict[str, tuple[float, float, float]] = {}
    result: dict[str, Any] = {}
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "event" in msg:
                marks[msg["event"]] = (time.monotonic(), server.cpu(), cpu_of(redis))
            elif "result" in msg:
                result = msg["result"]
        proc.wait()
    finally:
        timer.cancel()
    if not result:
        err = proc.stderr.read() if proc.stderr else ""
        result = {"error": f"load generator gave no result (exit {proc.returncode}): {err[-1500:]}"}
    if "window_start" in marks and "window_end" in marks:
        (w0, c0, r0), (w1, c1, r1) = marks["window_start"], marks["window_end"]
        if w1 > w0:
            result["server_cpu"] = (c1 - c0) / (w1 - w0)
            result["server_cpu_seconds"] = c1 - c0
            if redis is not None:
                result["redis_cpu"] = (r1 - r0) / (w1 - w0)
    result["quiesce_seconds"] = waited
    if not server.alive():
        result["error"] = (result.get("error") or "") + f" server died: {server.tail()}"
    return result


class IdleLoad:
    """Several idle load generators (each its own loopback source addresses), grown together."""

    def __init__(self, server: Server, processes: int, prefix: str) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for j in range(processes):
            sources = ",".join(f"127.0.{j + 1}.{k}" for k in range(2, 6))
            cmd = loadgen_command(
                "idle",
                server,
                prefix=f"{prefix}{j}x",
                sources=sources,
                concurrency=100,
                login_wave=1000,
                max_seconds=900,
            )
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=_pin(LOAD_CPU),
            )
            self.procs.append(proc)
        for proc in self.procs:
            self._next(proc, 60)  # ready

    @staticmethod
    def _next(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        assert proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            err = ""
            if proc.poll() is not None and proc.stderr is not None:
                err = proc.stderr.read()[-1000:]
            raise RuntimeError(f"idle load generator did not answer in {timeout} s {err}")
        return json.loads(box[0])

    def grow(self, total: int, timeout: float, budget: float = 3600.0) -> dict[str, Any]:
        """Grow to `total` users in all; logins stop after `budget` seconds."""
        per = [
            total // len(self.procs) + (1 if j < total % len(self.procs) else 0)
            for j in range(len(self.procs))
        ]
        for proc, n in zip(self.procs, per, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(f"grow {n} {budget}\n")
            proc.stdin.flush()
        answers = [self._next(proc, timeout) for proc in self.procs]
        counts: dict[str, int] = {}
        for a in answers:
            for k, v in a.get("counts", {}).items():
                counts[k] = counts.get(k, 0) + v
        return {
            "counts": counts,
            "connected": sum(a["connected"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "seconds": max(a["seconds"] for a in answers),
            "first_error": next((a["first_error"] for a in answers if a["first_error"]), None),
        }

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="actorchat-bench-"))
