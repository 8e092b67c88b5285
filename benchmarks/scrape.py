"""Cost of one ``/metrics`` scrape on the node's loop, against a full ``snapshot()`` of the
tree (what the admin endpoint serves) as the baseline, side by side.

A ``users`` simple_one_for_one supervisor holds N trivial mailbox actors, each registered with
a ``DeliveryQueue`` as the node's registry does; the node's real collector
(``actorchat.node._metrics.install_metrics``) is scraped with ``generate_latest``. Each is
timed 5 times, interleaved; the table shows medians and the ratio scrape/snapshot.

    python benchmarks/scrape.py            # N = 10,000 and 50,000
    python benchmarks/scrape.py --quick    # N = 10,000

JSON goes to ``benchmarks/results/scrape.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
import types
from pathlib import Path
from typing import Any

import trio
from prometheus_client import generate_latest

import supervisors as sv
from actorchat.config import Settings
from actorchat.node._metrics import install_metrics
from actorchat.node._queue import DeliveryQueue

RESULTS = Path(__file__).resolve().parent / "results" / "scrape.json"


class Idle(sv.Actor):
    def __init__(self, *args: Any) -> None:
        pass

    async def receive(self, message: Any) -> Any:
        return None


def users_spec() -> sv.SupervisorSpec:
    return sv.SupervisorSpec(
        sv.SupervisorFlags(sv.SIMPLE_ONE_FOR_ONE), [sv.ChildSpec("user", Idle)]
    )


async def measure(n: int, rounds: int = 5) -> dict[str, float]:
    spec = sv.SupervisorSpec(
        sv.SupervisorFlags(sv.ONE_FOR_ONE),
        [sv.ChildSpec("users", users_spec, kind=sv.SUPERVISOR)],
    )
    async with sv.open_supervisor(spec, name="bench") as sup:
        users = sup.child_supervisor("users")
        assert users is not None
        registry = types.SimpleNamespace(mailboxes={}, connections={}, queues={})
        for i in range(n):
            ref = await users.start_child((i,))
            registry.mailboxes[f"u{i}"] = ref
            registry.queues[f"u{i}"] = DeliveryQueue(f"u{i}")
        node = types.SimpleNamespace(
            settings=Settings(), metrics=collections.Counter(), metric_gauges={"connections"},
            sup=sup, front=None, store_down=lambda: False, registry=registry,
            add_route=lambda prefix, handler: None,
        )
        prometheus = install_metrics(node)  # type: ignore[arg-type]
        scrape, snapshot = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            generate_latest(prometheus)
            scrape.append(time.perf_counter() - t)
            t = time.perf_counter()
            sup.snapshot()
            snapshot.append(time.perf_counter() - t)
        sup.stop()
    s, b = statistics.median(scrape), statistics.median(snapshot)
    return {"actors": n, "scrape_s": s, "snapshot_s": b, "ratio": s / b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 50_000]
    rows = [trio.run(measure, n) for n in sizes]
    print(f"{'actors':>8} {'scrape s':>10} {'snapshot s':>11} {'scrape/snapshot':>16}")
    for r in rows:
        print(f"{r['actors']:>8} {r['scrape_s']:>10.3f} {r['snapshot_s']:>11.3f} "
              f"{r['ratio']:>16.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
