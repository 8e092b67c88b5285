"""Latency and server CPU per message against offered load, actorchat beside the bare
trio-websocket relay: where the issue's "p99 at half load" comes from.

    python benchmarks/latency_curve.py                         # ~2 minutes
    python benchmarks/latency_curve.py --rates 1000,2000,4000 --rounds 2

For each rate, each system in turn takes the relay scenario in open loop (100 users in a ring,
each ``deliver`` acked, 1 ms send ticks), on fresh users, pinned to one core as in run.py,
talking only to 127.0.0.1. In open loop frames rarely share a read or a write, so each message
pays its frames in full; a closed-loop run (run.py's peak) batches them, and half of that peak
can already be all of a core in open loop. Prints a table, then ``name: value`` lines (ratios
first), and writes ``benchmarks/results/latency_curve.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness as h

SYSTEMS = ("bare_trio", "actorchat")
USERS = 100


def one(server: h.Server, rate: int, prefix: str, duration: float) -> dict[str, Any]:
    server.seed(f"{prefix}{i}" for i in range(USERS))
    r = h.run_loadgen(
        "relay", server, timeout=60 + duration, users=USERS, window=1000, rate=rate,
        duration=duration, warmup=0.5, prefix=prefix,
        sources=",".join(f"127.0.0.{k}" for k in range(2, 6)),
    )
    lat = r.get("latency", {})
    delivered = r.get("delivered_per_s") or 0.0
    cpu = r.get("server_cpu")
    return {
        "rate": rate,
        "delivered_per_s": delivered,
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "server_cpu": cpu,
        "us_per_msg": cpu / delivered * 1e6 if cpu is not None and delivered else None,
        "error": r.get("error"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000")
    parser.add_argument("--rounds", type=int, default=1, help="runs per system and rate")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    parser.add_argument("--out", type=Path, default=h.HERE / "results")
    args = parser.parse_args()
    rates = [int(x) for x in args.rates.split(",") if x]
    h.pin_self()
    servers = {s: h.Server(s, h.workdir()).start() for s in SYSTEMS}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {s: {r: [] for r in rates} for s in SYSTEMS}
    k = 0
    try:
        for rate in rates:
            for _ in range(args.rounds):
                for system, server in servers.items():
                    k += 1
                    r = one(server, rate, f"lc{k}u", args.duration)
                    runs[system][rate].append(r)
                    print(
                        f"{system:10} {rate:6}/s offered: delivered {r['delivered_per_s']:7.0f}/s"
                        f"  p50 {r['p50_ms'] or float('nan'):6.1f}  p99 "
                        f"{r['p99_ms'] or float('nan'):6.1f} ms  cpu {r['server_cpu'] or 0:4.2f}"
                        f"  {r['us_per_msg'] or float('nan'):5.0f} us/msg {r['error'] or ''}",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()

    def median(system: str, rate: int, key: str) -> float | None:
        values = [r[key] for r in runs[system][rate] if r[key] is not None]
        return statistics.median(values) if values else None

    summary: dict[str, Any] = {}
    print(f"\n{'offered/s':>9} | {'us/msg bare':>11} {'actorchat':>9} {'ratio':>5} | "
          f"{'p99 ms bare':>11} {'actorchat':>9}")
    for rate in rates:
        bare = median("bare_trio", rate, "us_per_msg")
        ours = median("actorchat", rate, "us_per_msg")
        ratio = ours / bare if bare and ours else None
        p99b, p99a = median("bare_trio", rate, "p99_ms"), median("actorchat", rate, "p99_ms")
        summary[f"actorchat_vs_bare_trio_cpu_per_msg_at_{rate}"] = ratio
        summary[f"actorchat_p99_ms_at_{rate}"] = p99a
        summary[f"bare_trio_p99_ms_at_{rate}"] = p99b
        print(f"{rate:9} | {bare or float('nan'):11.0f} {ours or float('nan'):9.0f} "
              f"{ratio or float('nan'):5.2f} | {p99b or float('nan'):11.1f} "
              f"{p99a or float('nan'):9.1f}")
    print()
    for key in sorted(summary, key=lambda k: (not k.startswith("actorchat_vs"), k)):
        value = summary[key]
        print(f"{key}: {'n/a' if value is None else round(value, 3)}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency_curve.json").write_text(
        json.dumps({"rates": rates, "rounds": args.rounds, "runs": runs, "summary": summary},
                   indent=1)
    )


if __name__ == "__main__":
    main()
