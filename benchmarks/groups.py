"""Group fan-out against the same number of 1:1 sends, side by side in one run (issue 7).

    python benchmarks/groups.py            # groups of 10, 100 and 1,000 members
    python benchmarks/groups.py --quick    # fewer messages

One actorchat node (``python -m actorchat``, SQLite, pinned to one core) and this process as
the client (asyncio + the raw client of ``wsclient.py``, pinned to the other core). Users are
seeded in the store and log in with tokens. For each group size N (the sender and N-1 others):

* ``group``: the sender sends K messages to the group, closed loop with about 8,192 copies in
  flight (``max(1, 8192 // (N-1))`` messages unaccepted at a time); a run ends when every
  copy is delivered and every message accepted;
* ``1:1``: the same sender sends K x (N-1) single messages round-robin to the same N-1 users,
  8,192 unaccepted at a time: the same number of delivered copies (with offline members at
  most ``--max-offline-single`` of them, 1,500 by default: each such send may start and load
  a mailbox, so the full number takes many minutes; the cost ratio is per copy anyway).

Two placements of the members: ``online`` (every member connected, acking each ``deliver``
frame: accepted = every copy acknowledged) and ``offline`` (nobody connected and no mailbox
running: accepted = every copy stored; the copies are counted in the store afterwards).

Figures per row: delivered (or stored) copies per second, and the node's CPU seconds per
copy. ``cost ratio`` = the node's CPU per copy in the group run / in the 1:1 run: what a
group send to N-1 costs against N-1 single sends (the goal: at most 0.1 for 100 members).
Prints a table and ``name: value`` lines; JSON in ``benchmarks/results/groups.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import LOAD_CPU, SECRET, Server, pin_self  # noqa: E402
from loadgen import mint_token  # noqa: E402
from wsclient import Corker, WsClient, connect  # noqa: E402

IN_FLIGHT_COPIES = 8192


class Item(msgspec.Struct):
    mid: str = ""


class Frame(msgspec.Struct):
    type: str
    messages: list[Item] = []
    ids: list[str] = []
    group: str = ""
    code: str = ""
    message: str = ""


decode = msgspec.json.Decoder(Frame).decode


class Client:
    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        self.ws: WsClient | None = None
        self.waiter: asyncio.Future[Frame] | None = None

    def on_message(self, payload: bytes) -> None:
        frame = decode(payload)
        kind = frame.type
        bench = self.bench
        if kind == "deliver":
            bench.delivered += len(frame.messages)
            mids = ",".join(f'"{m.mid}"' for m in frame.messages)
            assert self.ws is not None
            self.ws.send_text(f'{{"type":"ack","mids":[{mids}]}}')
            bench.check()
        elif kind == "accepted":
            bench.accepted += len(frame.ids)
            bench.check()
        elif kind == "receipt":
            bench.receipts += len(frame.ids)
        elif kind == "error":
            bench.errors.append(f"{self.name}: {frame.code} {frame.message}")
            bench.check()
        if kind in ("welcome", "group") and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(frame)

    async def login(self, bench: Bench) -> None:
        self.ws = await connect(bench.corker, "127.0.0.1", bench.port, on_message=self.on_message)
        token = mint_token(SECRET.encode(), self.name)
        await self.request(json.dumps({"type": "resume", "token": token}))

    async def request(self, text: str, timeout: float = 60.0) -> Frame:
        assert self.ws is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.ws.send_text(text)
        async with asyncio.timeout(timeout):
            return await self.waiter


class Bench:
    def __init__(self, port: int) -> None:
        self.port = port
        self.corker = Corker(asyncio.get_running_loop())
        self.delivered = self.accepted = self.receipts = 0
        self.errors: list[str] = []
        self.wake: asyncio.Event = asyncio.Event()

    def check(self) -> None:
        self.wake.set()

    async def run(
        self, sender: Client, frames: list[str], copies: int, window: int, online: bool,
        timeout: float = 600.0,
    ) -> float:
        """Send ``frames`` keeping ``window`` unaccepted; returns the seconds until every one
        is accepted and (online) every copy delivered."""
        assert sender.ws is not None
        self.delivered = self.accepted = 0
        start = time.perf_counter()
        sent = 0
        async with asyncio.timeout(timeout):
            while True:
                while sent < len(frames) and sent - self.accepted < window:
                    sender.ws.send_text(frames[sent])
                    sent += 1
                done = self.accepted >= len(frames) and (not online or self.delivered >= copies)
                if done:
                    return time.perf_counter() - start
                if self.errors:
                    raise RuntimeError(self.errors[0])
                self.wake.clear()
                await self.wake.wait()


def stored_copies(server: Server) -> int:
    with sqlite3.connect(server.workdir / "actorchat.db", timeout=60) as db:
        return db.execute("SELECT count(*) FROM mail").fetchone()[0]


async def bench_size(
    bench: Bench, server: Server, sender: Client, size: int, k: int, online: bool,
    clients: dict[str, Client], max_offline_single: int,
) -> dict[str, Any]:
    members = [f"m{i:04d}" for i in range(size - 1)]
    if online:
        missing = [m for m in members if m not in clients]
        for chunk in range(0, len(missing), 100):
            batch = [Client(bench, m) for m in missing[chunk : chunk + 100]]
            await asyncio.gather(*(c.login(bench) for c in batch))
            clients.update((c.name, c) for c in batch)
        await asyncio.sleep(1.0)
    create = {"type": "group_create", "name": f"g{size}", "members": members}
    group = (await sender.request(json.dumps(create))).group
    copies = k * (size - 1)
    tag = uuid.uuid4().hex[:8]
    group_frames = [
        json.dumps({"type": "send", "id": f"{tag}g{i}", "group": group, "body": f"hello {i}"})
        for i in range(k)
    ]
    single_frames = [
        json.dumps({"type": "send", "id": f"{tag}s{i}", "to": members[i % len(members)],
                    "body": f"hello {i}"})
        for i in range(copies if online else min(copies, max_offline_single))
    ]
    out: dict[str, Any] = {"size": size, "members": "online" if online else "offline",
                           "messages": k, "copies": copies}
    # Interleaved: 1:1, group, 1:1, group; each figure is the better of its two runs (one
    # run each with offline members: the 1:1 baseline to offline users is slow).
    for rnd in range(2 if online else 1):
        for mode, frames, window in (
            ("single", single_frames, IN_FLIGHT_COPIES),
            ("group", group_frames, max(1, IN_FLIGHT_COPIES // (size - 1))),
        ):
            ids_frames = [f.replace('"id": "', f'"id": "r{rnd}') for f in frames]
            n = copies if mode == "group" else len(frames)
            server.quiesce(max_wait=10.0 if online else 15.0)
            if not online:  # mailboxes idle out (5 s linger): every member offline for real
                await asyncio.sleep(6.0)
            before_rows = stored_copies(server) if not online else 0
            cpu0 = server.cpu()
            seconds = await bench.run(sender, ids_frames, n, window, online)
            cpu = server.cpu() - cpu0
            if not online:
                assert stored_copies(server) - before_rows >= n * 0.99, "copies missing"
            best = out.get(mode)
            row = {"copies": n, "seconds": seconds, "cpu": cpu, "copies_per_s": n / seconds,
                   "cpu_per_copy_us": cpu / n * 1e6}
            if best is None or row["cpu"] < best["cpu"]:
                out[mode] = row
    out["cost_ratio"] = out["group"]["cpu_per_copy_us"] / out["single"]["cpu_per_copy_us"]
    out["speedup"] = out["group"]["copies_per_s"] / out["single"]["copies_per_s"]
    return out


async def main_async(args: argparse.Namespace, server: Server) -> list[dict[str, Any]]:
    bench = Bench(server.port)
    sender = Client(bench, "sender")
    await sender.login(bench)
    clients: dict[str, Client] = {}
    results = []
    plan = [(10, 200 if args.quick else 1000), (100, 40 if args.quick else 200),
            (1000, 6 if args.quick else 30)]
    for online in (True, False):
        if not online:
            for c in clients.values():
                assert c.ws is not None
                c.ws.close()
            clients.clear()
            await asyncio.sleep(1.0)
        for size, k in plan:
            row = await bench_size(
                bench, server, sender, size, k, online, clients, args.max_offline_single
            )
            results.append(row)
            print(_line(row), flush=True)
    return results


def _line(r: dict[str, Any]) -> str:
    g, s = r["group"], r["single"]
    return (f"{r['size']:>5} {r['members']:>7} {r['copies']:>7} | "
            f"{g['copies_per_s']:>9.0f} {g['cpu_per_copy_us']:>8.1f} | "
            f"{s['copies_per_s']:>9.0f} {s['cpu_per_copy_us']:>8.1f} | "
            f"{r['cost_ratio']:>6.3f} {r['speedup']:>7.1f}x")


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-offline-single", type=int, default=1500)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)  # so the node is stopped by the finally below
    pin_self()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="bench-groups-"))
    server = Server("actorchat", workdir).start()
    try:
        server.seed(["sender", *[f"m{i:04d}" for i in range(1000)]])
        print("  size members  copies |  group copies/s  cpu us/copy |  1:1 copies/s  "
              "cpu us/copy | cost ratio  speedup")
        results = asyncio.run(main_async(args, server))
    finally:
        server.stop()
    print()
    for r in results:
        print(f"cost_ratio_{r['size']}_{r['members']}: {r['cost_ratio']:.3f}")
    for r in results:
        print(f"group_copies_per_s_{r['size']}_{r['members']}: {r['group']['copies_per_s']:.0f}")
        print(f"single_copies_per_s_{r['size']}_{r['members']}: "
              f"{r['single']['copies_per_s']:.0f}")
    goal = [r for r in results if r["size"] == 100]
    for r in goal:
        verdict = "met" if r["cost_ratio"] <= 0.1 else "not met"
        print(f"goal_group_100_at_most_a_tenth_{r['members']}: {verdict}")
    out = HERE / "results" / "groups.json"
    out.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_cpu": sorted(LOAD_CPU)},
        "quick": args.quick, "in_flight_copies": IN_FLIGHT_COPIES, "results": results,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
