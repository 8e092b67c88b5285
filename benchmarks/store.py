"""Store benchmark: write throughput through the real trio -> thread bridge against the raw
asyncpg ceiling, and drain speed of stored mail on SQLite and PostgreSQL.

Run from the repository root (PostgreSQL at ``$ACTORCHAT_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``; a fresh schema is made and dropped after)::

    python benchmarks/store.py            # full: 100,000 rows x 7 rounds, drains of 10k and 100k
    python benchmarks/store.py --quick    # 20,000 rows x 3 rounds, a drain of 10k

Writes (PostgreSQL, the same pre-built ``mail`` rows each time, the table truncated between
runs, the methods interleaved round by round; the table shows each method's median run and
the ratios are medians of back-to-back pairs, which stay put when a shared machine's load
shifts between rounds):

- ``store``: a ``StoreActor`` (thread, asyncio loop, ``Store.apply``) under a ``supervisors``
  supervisor with a ``StoreFront`` (group commit) in front of it, driven FROM TRIO by many
  concurrent writers, each calling ``front.call(Write(StoreBatch(put_mail=100 rows)))`` as a
  user actor does; the front merges whatever queued while one hop was in the thread.
- ``executemany``: raw asyncpg, ``INSERT ... ON CONFLICT DO NOTHING`` (the store's statement)
  in transactions of ``writers x batch`` rows (the store's hop size at saturation).
- ``copy``: raw asyncpg ``copy_records_to_table``, same transactions: the protocol ceiling,
  though not idempotent (a retried batch would fail on the primary key).
- ``copy+merge``: COPY into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT DO
  NOTHING``: the idempotent way to get near COPY (what the store could do).

Drains: ``n`` messages for one recipient are stored, then paged out as a mailbox does:
``fetch_mail(recipient, after_key, 500)``, then ``apply(StoreBatch(delete_mail=that page))``,
until nothing is left; directly on ``Store`` (asyncio), on a SQLite file (WAL,
synchronous=FULL: every page's delete is an fsync) and on PostgreSQL; the median of 3 runs
(1 with ``--quick``).

Prints a table, then ``name: value`` lines (ratios first); JSON goes to
``benchmarks/results/store.json`` (and a PNG plot beside it when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import trio  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import supervisors as sv  # noqa: E402
from actorchat.node._storage import StoreActor, StoreFront, Write  # noqa: E402
from actorchat.store import MailRow, Store, StoreBatch, upgrade  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PG_URL_ENV = "ACTORCHAT_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS = ["recipient", "key", "sender", "client_id", "body", "ts", "grp", "media"]
PAGE = 500
GOAL_RATIO = 0.70
GOAL_DRAIN = 20_000.0


# -- data ------------------------------------------------------------------------------------
def make_rows(n: int, users: int = 1000) -> list[MailRow]:
    """``n`` mail rows spread over ``users`` recipients, keys unique per recipient, with a
    64-character body (a typical chat line) and a 32-character client id."""
    now = time.time()
    body = "the quick brown fox jumps over the lazy dog, again and again. ok?"[:64]
    return [
        MailRow(
            f"user{i % users:04d}",
            1_700_000_000_000_000 + i,
            f"user{(i * 7 + 3) % users:04d}",
            f"{i:032x}",
            body,
            now + i * 1e-6,
        )
        for i in range(n)
    ]


def records(rows: list[MailRow]) -> list[tuple[Any, ...]]:
    return [(r.recipient, r.key, r.sender, r.client_id, r.body, r.ts, r.grp, r.media) for r in rows]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- PostgreSQL plumbing -----------------------------------------------------------------------
def urls(pg_url: str) -> tuple[str, str]:
    """(SQLAlchemy asyncpg URL, plain libpq DSN for asyncpg.connect)."""
    parsed = make_url(pg_url)
    sa_url = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return sa_url, dsn


async def pg_admin(dsn: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return [await connection.fetch(s) for s in statements]
    finally:
        await connection.close()


async def truncate(dsn: str, schema: str) -> None:
    """Empty ``mail`` and start each run from a clean server: no dirty pages of the previous
    run left for this one to flush (CHECKPOINT needs a superuser: skipped otherwise)."""
    await pg_admin(dsn, f"TRUNCATE {schema}.mail", f"VACUUM ANALYZE {schema}.mail")
    try:
        await pg_admin(dsn, "CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass


# -- 1. writes through the trio -> thread bridge --------------------------------------------
class CountingFront(StoreFront):
    """The real StoreFront, counting the requests each hop to the thread carried."""

    def __init__(self, lookup: Any) -> None:
        super().__init__(lookup)
        self.hop_requests: list[int] = []

    async def _hop_once(self) -> bool:
        self.hop_requests.append(len(self._queue))
        return await super()._hop_once()


async def _bridge_writes(
    sa_url: str, schema: str, batches: list[StoreBatch], writers: int
) -> dict[str, Any]:
    holder: dict[str, sv.SupervisorRef] = {}

    async def lookup() -> sv.ActorRef:
        ref = holder["sup"].whereis("store")
        if ref is None:
            raise sv.ActorDeadError("the store is not running")
        return ref

    fronts: list[CountingFront] = []

    def make_front() -> CountingFront:
        fronts.append(CountingFront(lookup))
        return fronts[-1]

    spec = sv.SupervisorSpec(
        sv.SupervisorFlags(sv.REST_FOR_ONE, intensity=0, period=5.0),
        [
            sv.ChildSpec("store", StoreActor, (sa_url, schema, False, 5, 30.0), shutdown=30.0),
            sv.ChildSpec("storefront", make_front, shutdown=30.0),
        ],
    )
    async with sv.open_supervisor(spec, name="bench") as sup:
        holder["sup"] = sup
        front = sup.whereis("storefront")
        assert front is not None
        todo = iter(batches)
        latencies: list[float] = []

        async def writer() -> None:
            for batch in todo:  # the writers share one iterator: each batch is taken once
                sent = time.perf_counter()
                await front.call(Write(batch), timeout=120)
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(writers):
                nursery.start_soon(writer)
        seconds = time.perf_counter() - started
        stats, hop_requests = fronts[-1].stats, sorted(fronts[-1].hop_requests)
        assert stats.rows == sum(len(b.put_mail) for b in batches) and stats.failures == 0
        sup.stop()
        await sup.wait()
    latencies.sort()
    return {
        "seconds": seconds,
        "hops": stats.batches,
        "mean_hop_rows": stats.rows / max(stats.batches, 1),
        "hop_requests_p50": hop_requests[len(hop_requests) // 2],
        "hop_requests_max": hop_requests[-1],
        "call_p50_ms": 1000 * latencies[len(latencies) // 2],
        "call_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def bridge_writes(sa_url: str, schema: str, rows: list[MailRow], batch: int, writers: int):
    batches = [StoreBatch(put_mail=chunk) for chunk in chunks(rows, batch)]
    return trio.run(_bridge_writes, sa_url, schema, batches, writers)


# -- 2. raw asyncpg ----------------------------------------------------------------------------
async def raw_writes(dsn: str, schema: str, recs: list[tuple[Any, ...]], txn_rows: int, how: str):
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema}, timeout=10)
    insert = (
        f"INSERT INTO mail ({', '.join(COLUMNS)}) VALUES "
        f"({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))}) "
        "ON CONFLICT (recipient, key) DO NOTHING"
    )
    merge = (
        f"INSERT INTO mail SELECT {', '.join(COLUMNS)} FROM mail_in "
        "ON CONFLICT (recipient, key) DO NOTHING"
    )
    try:
        if how == "copy+merge":
            await connection.execute(
                "CREATE TEMPORARY TABLE mail_in (LIKE mail) ON COMMIT DELETE ROWS"
            )
        started = time.perf_counter()
        for chunk in chunks(recs, txn_rows):
            async with connection.transaction():
                if how == "executemany":
                    await connection.executemany(insert, chunk)
                elif how == "copy":
                    await connection.copy_records_to_table(
                        "mail", records=chunk, columns=COLUMNS, schema_name=schema
                    )
                else:
                    await connection.copy_records_to_table(
                        "mail_in", records=chunk, columns=COLUMNS
                    )
                    await connection.execute(merge)
        seconds = time.perf_counter() - started
        count = await connection.fetchval("SELECT count(*) FROM mail")
    finally:
        await connection.close()
    assert count == len(recs), (how, count, len(recs))
    return {"seconds": seconds}


# -- 3. drains ---------------------------------------------------------------------------------
async def drain(url: str, schema: str | None, n: int, dsn: str | None) -> dict[str, Any]:
    async with await Store.open(url, schema=schema, statement_timeout=60.0) as store:
        rows = make_rows(n, users=1)
        for chunk in chunks(rows, 5000):
            await store.apply(StoreBatch(put_mail=chunk))
        recipient = rows[0].recipient
        if dsn is not None:  # fresh planner statistics, as autovacuum would have made
            await pg_admin(dsn, f"ANALYZE {schema}.mail")
        started = time.perf_counter()
        after: int | None = None
        drained = pages = 0
        while True:
            page = await store.fetch_mail(recipient, after, PAGE)
            if not page:
                break
            await store.apply(StoreBatch(delete_mail=[(recipient, r.key) for r in page]))
            after = page[-1].key
            drained += len(page)
            pages += 1
        seconds = time.perf_counter() - started
        left = await store.fetch_mail(recipient, None, 1)
    assert drained == n and not left, (drained, n, left)
    return {"seconds": seconds, "pages": pages}


# -- running -----------------------------------------------------------------------------------
def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--rows", type=int, help="rows written per run")
    parser.add_argument("--repeat", type=int, help="runs per write method (median reported)")
    parser.add_argument("--writers", type=int, default=64, help="concurrent trio writers")
    parser.add_argument("--batch", type=int, default=100, help="rows per writer call")
    parser.add_argument("--pg-url", default=os.environ.get(PG_URL_ENV, DEFAULT_PG_URL))
    parser.add_argument("--out", type=Path, default=RESULTS / "store.json")
    args = parser.parse_args(argv)
    total = args.rows or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (3 if args.quick else 7)
    drains = (10_000,) if args.quick else (10_000, 100_000)
    drain_repeat = 1 if args.quick else 3
    txn_rows = args.writers * args.batch

    sa_url, dsn = urls(args.pg_url)
    schema = f"actorchat_bench_{secrets.token_hex(4)}"
    try:
        version = asyncio.run(pg_admin(dsn, "SHOW server_version", f"CREATE SCHEMA {schema}"))
    except Exception as e:
        print(f"store benchmark: PostgreSQL at {make_url(args.pg_url)!r} is not usable: {e}",
              file=sys.stderr)
        return 1
    pg_version = version[0][0][0]
    results: dict[str, Any] = {}
    try:
        asyncio.run(upgrade(sa_url, schema))
        rows = make_rows(total)
        recs = records(rows)
        methods = ["store", "executemany", "copy", "copy+merge"]
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for round_ in range(repeat):
            for method in methods if round_ % 2 == 0 else methods[::-1]:  # no order bias
                asyncio.run(truncate(dsn, schema))
                if method == "store":
                    run = bridge_writes(sa_url, schema, rows, args.batch, args.writers)
                else:
                    run = asyncio.run(raw_writes(dsn, schema, recs, txn_rows, method))
                run["rows_per_s"] = total / run["seconds"]
                runs[method].append(run)
                print(f"  {method:<12} run {round_ + 1}: {run['rows_per_s']:>10,.0f} rows/s",
                      file=sys.stderr, flush=True)
        asyncio.run(truncate(dsn, schema))
        writes = {m: {**median_run(runs[m]), "runs": runs[m]} for m in methods}

        drain_results: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for n in drains:
                for dialect in ("sqlite", "postgresql"):
                    drain_runs = []
                    for round_ in range(drain_repeat):
                        if dialect == "sqlite":
                            url, sch = f"sqlite:///{tmp}/drain{n}_{round_}.db", None
                            admin = None
                        else:
                            url, sch, admin = sa_url, schema, dsn
                        run = asyncio.run(drain(url, sch, n, admin))
                        run["msgs_per_s"] = n / run["seconds"]
                        drain_runs.append(run)
                        print(f"  drain {dialect:<10} {n:>7,} run {round_ + 1}: "
                              f"{run['msgs_per_s']:>10,.0f} msgs/s", file=sys.stderr, flush=True)
                    drain_results[f"{dialect}_{n}"] = {
                        "dialect": dialect, "messages": n, **median_run(drain_runs),
                        "runs": drain_runs,
                    }
    finally:
        asyncio.run(pg_admin(dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))

    def paired(other: str) -> float:
        """Median over rounds of store / other, each pair measured back to back: steadier
        than a ratio of medians when the server's speed drifts between rounds."""
        pairs = sorted(
            a["rows_per_s"] / b["rows_per_s"]
            for a, b in zip(runs["store"], runs[other], strict=True)
        )
        return pairs[len(pairs) // 2]

    ratios = {
        "store_vs_executemany": paired("executemany"),
        "store_vs_copy_merge": paired("copy+merge"),
        "store_vs_copy": paired("copy"),
    }
    drain10 = {d: drain_results[f"{d}_10000"]["msgs_per_s"] for d in ("sqlite", "postgresql")}
    goals = {
        "goal_store_ge_70pct_of_executemany": ratios["store_vs_executemany"] >= GOAL_RATIO,
        "goal_store_ge_70pct_of_copy": ratios["store_vs_copy"] >= GOAL_RATIO,
        "goal_drain_10k_sqlite_ge_20k_per_s": drain10["sqlite"] >= GOAL_DRAIN,
        "goal_drain_10k_postgresql_ge_20k_per_s": drain10["postgresql"] >= GOAL_DRAIN,
    }
    results = {
        "benchmark": "store",
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "postgresql": pg_version,
        "sqlite": sqlite3.sqlite_version,
        "rows": total,
        "repeat": repeat,
        "writers": args.writers,
        "batch_rows": args.batch,
        "raw_txn_rows": txn_rows,
        "writes": writes,
        "drains": drain_results,
        "ratios": ratios,
        "goals": goals,
    }
    print_report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    return 0


def print_report(r: dict[str, Any]) -> None:
    w, ex = r["writes"], r["writes"]["executemany"]["rows_per_s"]
    cp = r["writes"]["copy"]["rows_per_s"]
    print(f"\nstore benchmark: PostgreSQL {r['postgresql']}, SQLite {r['sqlite']}, "
          f"{r['machine']['cpus']} CPUs; {r['rows']:,} mail rows per write run, "
          f"median of {r['repeat']}")
    print()
    head = (f"| {'writes (PostgreSQL), median run':<54} | {'rows/s':>10} | "
            f"{'vs executemany':>14} | {'vs copy':>7} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    labels = {
        "store": f"store: trio -> StoreFront -> StoreActor, {r['writers']} x "
        f"{r['batch_rows']} rows",
        "executemany": f"asyncpg executemany ON CONFLICT ({r['raw_txn_rows']:,}/txn)",
        "copy+merge": f"asyncpg COPY to temp + INSERT..SELECT ({r['raw_txn_rows']:,}/txn)",
        "copy": f"asyncpg copy_records_to_table ({r['raw_txn_rows']:,}/txn)",
    }
    for method in ("store", "executemany", "copy+merge", "copy"):
        rate = w[method]["rows_per_s"]
        print(f"| {labels[method]:<54} | {rate:>10,.0f} | {rate / ex:>14.2f} | {rate / cp:>7.2f} |")
    s = w["store"]
    print(f"\nstore (median run): {s['hops']} hops to the thread, {s['mean_hop_rows']:,.0f} rows "
          f"each on average ({s['hop_requests_p50']} writer calls merged per hop at the median, "
          f"{s['hop_requests_max']} at most); a writer's call took {s['call_p50_ms']:.0f} ms "
          f"(p50), {s['call_p99_ms']:.0f} ms (p99)")
    print("ratios below: median over rounds of back-to-back pairs")
    print()
    head = (f"| {'drain: fetch_mail(500) + delete, median':<40} | {'messages':>9} | "
            f"{'seconds':>8} | {'msgs/s':>10} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for d in r["drains"].values():
        print(f"| {d['dialect']:<40} | {d['messages']:>9,} | {d['seconds']:>8.3f} | "
              f"{d['msgs_per_s']:>10,.0f} |")
    print()
    for name, value in r["ratios"].items():
        print(f"{name}: {value:.3f}")
    for method in ("store", "executemany", "copy+merge", "copy"):
        print(f"write_{method.replace('+', '_')}_rows_per_s: {w[method]['rows_per_s']:.0f}")
    for key, d in r["drains"].items():
        print(f"drain_{key}_msgs_per_s: {d['msgs_per_s']:.0f}")
    for name, met in r["goals"].items():
        print(f"{name}: {'met' if met else 'NOT met'}")


def plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["store", "executemany", "copy+merge", "copy"]
    left.bar(names, [r["writes"][n]["rows_per_s"] for n in names], color="#4a7")
    left.set_title(f"PostgreSQL writes, {r['rows']:,} rows")
    left.set_ylabel("rows/s")
    keys = list(r["drains"])
    right.bar([k.replace("_", "\n") for k in keys],
              [r["drains"][k]["msgs_per_s"] for k in keys], color="#47a")
    right.axhline(GOAL_DRAIN, color="red", linestyle="--", linewidth=1, label="goal (10k)")
    right.set_title("drain: fetch_mail(500) + delete")
    right.set_ylabel("messages/s")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
