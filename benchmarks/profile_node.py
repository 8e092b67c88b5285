"""Where an actorchat node spends its CPU under load: py-spy on the node, never a change to it.

    python benchmarks/profile_node.py                 # relay, storm and idle, ~1.5 minutes
    python benchmarks/profile_node.py --scenario relay --seconds 15

For each scenario it starts a node (pinned to one core, as in run.py), drives it with the load
generator, samples it with ``py-spy record --nonblocking --threads`` (the node is not paused;
a sample's stack may then be cut short, so the figures go by the innermost frame: own time, and
time by library and by thread; inclusive times are lower bounds), and writes
into ``benchmarks/results/``: ``profile_<scenario>.txt`` (collapsed stacks),
``profile_<scenario>.svg`` (a flame graph of a second sampling window) and ``profile.json``;
it prints the top functions by own time and by inclusive time, and the time by library, as a
percentage of the samples taken while the node's threads were busy.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h

RESULTS = h.HERE / "results"
PACED_RATE = 2000
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

AREAS = (  # (path prefix as py-spy prints it, area); the first match wins
    ("trio_websocket/", "trio-websocket"),
    ("wsproto/", "wsproto (WebSocket framing)"),
    ("h11/", "h11 (HTTP upgrade)"),
    ("trio/_core/", "trio core (scheduler, cancel scopes, traps, epoll)"),
    ("trio/", "trio (sockets, channels, threads)"),
    ("outcome/", "trio core (scheduler, cancel scopes, traps, epoll)"),
    ("<attrs generated methods trio", "trio core (scheduler, cancel scopes, traps, epoll)"),
    ("<attrs generated methods outcome", "trio core (scheduler, cancel scopes, traps, epoll)"),
    ("supervisors/", "supervisors (actor runtime, mailboxes)"),
    ("actorchat/node/_queue", "actorchat delivery queue"),
    ("actorchat/node/_storage", "actorchat storage actors"),
    ("actorchat/node/", "actorchat node actors (connection, user, registry)"),
    ("actorchat/protocol/", "actorchat protocol (msgspec codec, session)"),
    ("actorchat/auth", "actorchat auth (tokens)"),
    ("actorchat/store/", "actorchat store (SQLAlchemy Core)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("aiosqlite/", "aiosqlite"),
    ("pykka/", "pykka (thread actors)"),
    ("asyncio/", "asyncio (the store thread's loop)"),
    ("msgspec/", "msgspec"),
    ("threading.py", "threading (locks, queues, thread hand-offs)"),
    ("queue.py", "threading (locks, queues, thread hand-offs)"),
    ("selectors.py", "selectors"),
)


def area_of(path: str) -> str:
    path = path.split("site-packages/")[-1].split("/lib/python3.11/")[-1]
    for needle, name in AREAS:
        if path.startswith(needle):
            return name
    return path or "?"


def thread_of(root: str) -> str:
    """A thread's role from py-spy's ``thread (TID): NAME`` root frame."""
    name = root.partition(": ")[2]
    if name == "MainThread":
        return "trio main thread (the node's actors, sockets, protocol)"
    if name.startswith("StoreActor"):
        return "store thread (pykka StoreActor: asyncio loop, SQLAlchemy)"
    if "_connection_worker_thread" in name:
        return "aiosqlite connection thread (sqlite3)"
    if name.startswith("Trio thread"):
        return "trio worker threads (to_thread: scrypt, ...)"
    return f"thread {name}"


def parse_frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip(), ""
    file = m["file"]
    short = file.split("site-packages/")[-1].replace("/work/main/", "")
    return f"{m['func']} ({short})", file


def analyse(collapsed: Path, top: int) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        parts = [f for f in stack.split(";") if f]
        root = parts[0] if parts and parts[0].startswith("thread (") else ""
        frames = [parse_frame(f) for f in parts if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        total += count
        own[frames[-1][0]] += count
        areas[area_of(frames[-1][1])] += count
        threads[thread_of(root)] += count
        for name in {f[0] for f in frames}:
            inclusive[name] += count

    def pct(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "own": pct(own),
        "inclusive": pct(inclusive),
        "areas": pct(areas),
        "threads": pct(threads),
    }


def pyspy(pid: int, seconds: float, fmt: str, out: Path, rate: int) -> None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate)]
    cmd += ["--nonblocking", "--threads", "--format", fmt, "--output", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=seconds + 60)


def profile(
    scenario: str, seconds: float, rate: int, top: int, paced_rate: int = PACED_RATE
) -> dict[str, Any]:
    server = h.Server("actorchat", h.workdir()).start()
    result: dict[str, Any] = {"scenario": scenario}
    load: Any = None
    box: dict[str, Any] = {}
    try:
        if scenario == "idle":
            server.seed(f"idle0x{i}" for i in range(1001))
            load = h.IdleLoad(server, processes=1, prefix="idle")
            load.grow(1000, timeout=120)
            server.settle()  # past the mailbox loads that follow the welcomes
            result["load"] = "1,000 idle logged-in users"
        else:
            span = 2 * seconds + 6
            if scenario == "relay":
                server.seed(f"prof{i}" for i in range(100))
                options = dict(users=100, window=16, duration=span, warmup=1.0, prefix="prof")
                result["load"] = "relay, 100 users, 16 in flight each, closed loop"
            elif scenario == "paced":
                # The latency goal's regime: open loop, so frames rarely share a read or a
                # write, and every message pays its frames in full.
                server.seed(f"prof{i}" for i in range(100))
                options = dict(users=100, window=1000, rate=paced_rate, duration=span,
                               warmup=1.0, prefix="prof")
                result["load"] = f"relay, 100 users, open loop at {paced_rate} msgs/s"
            else:
                server.seed(f"prof{i}" for i in range(200))
                options = dict(users=200, concurrency=32, duration=span, prefix="prof")
                result["load"] = "token reconnects, 200 users, 32 at a time"

            def drive() -> None:
                kind = "relay" if scenario == "paced" else scenario
                box["result"] = h.run_loadgen(kind, server, timeout=span + 90, **options)

            thread = threading.Thread(target=drive, daemon=True)
            thread.start()
            time.sleep(3.0)
        assert server.proc is not None
        c0, w0 = server.cpu(), time.monotonic()
        collapsed = RESULTS / f"profile_{scenario}.txt"
        pyspy(server.proc.pid, seconds, "raw", collapsed, rate)
        result["server_cpu"] = (server.cpu() - c0) / (time.monotonic() - w0)
        pyspy(server.proc.pid, seconds, "flamegraph", RESULTS / f"profile_{scenario}.svg", rate)
        result.update(analyse(collapsed, top))
        if load is None:
            thread.join(2 * seconds + 100)
            r = box.get("result", {})
            result["throughput"] = r.get("delivered_per_s") or r.get("logins_per_s")
            if r.get("error"):
                result["load_error"] = r["error"]
    finally:
        if load is not None:
            load.close()
        server.stop()
    return result


def show(r: dict[str, Any], top: int) -> None:
    print(f"\n== {r['scenario']}: {r['load']}; node CPU {r.get('server_cpu', 0):.2f} of a core")
    if r.get("throughput"):
        print(f"   throughput while sampled: {r['throughput']:.0f}/s")
    print(f"   {r['samples']} samples of busy threads")
    for title, key in (
        ("by thread", "threads"),
        ("by area (own time)", "areas"),
        ("own time", "own"),
        ("inclusive", "inclusive"),
    ):
        print(f"  -- {title}")
        for name, pct in r[key][:top]:
            print(f"  {pct:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario", choices=["relay", "paced", "storm", "idle", "all"], default="all",
        help="what load (paced: the relay in open loop, at --paced-rate; not in all)",
    )
    parser.add_argument("--paced-rate", type=int, default=PACED_RATE, help="msgs/s for paced")
    parser.add_argument("--seconds", type=float, default=10.0, help="each sampling window")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    h.pin_self()
    RESULTS.mkdir(parents=True, exist_ok=True)
    scenarios = ["relay", "storm", "idle"] if args.scenario == "all" else [args.scenario]
    out = {}
    for scenario in scenarios:
        out[scenario] = profile(scenario, args.seconds, args.rate, args.top, args.paced_rate)
        show(out[scenario], args.top)
    (RESULTS / "profile.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
