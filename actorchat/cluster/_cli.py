"""``python -m actorchat cluster``: the members of the cluster on a database, their state and
their user counts, read from the membership table (no node needs to be running)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ._lease import Member, trusted


def render(now: float, rows: list[tuple[Any, ...]], owned: dict[str, int],
           secret: bytes | None) -> str:
    """Pure: the table ``python -m actorchat cluster`` prints."""
    lines = [f"{'node':<16} {'state':<10} {'lease':>8} {'connected':>9} {'mailboxes':>9}  address"]
    for row in rows:
        member = Member.from_row(row)
        if secret is not None and not trusted(member, secret):
            state = "untrusted"
        elif member.alive(now):
            state = "up"
        elif member.lease_expires == 0:
            state = "left"
        else:
            state = "down"
        left = member.lease_expires - now
        lease = f"{left:.1f}s" if left > 0 else "-"
        users = member.users if state == "up" else 0
        lines.append(
            f"{member.name:<16} {state:<10} {lease:>8} {users:>9} "
            f"{owned.get(member.name, 0) if state == 'up' else 0:>9}  {member.address}"
        )
    if not rows:
        lines.append("(no members: no node with a cluster secret has run on this database)")
    return "\n".join(lines)


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[str, bytes | None]:
    """The database URL and cluster secret, from the command line over ``ACTORCHAT_*``
    over the node's default: only the two options this command uses, not the node's list."""
    from dataclasses import fields

    from actorchat.config import Settings, _database_url, _secret

    default_url = next(f.default for f in fields(Settings) if f.name == "database_url")
    parser = argparse.ArgumentParser(
        prog="python -m actorchat cluster",
        description="The members of the cluster on a database: state, lease left, connected "
        "users and mailboxes. Reads the database only; no node needs to be running.",
        epilog="Each option can also be set by the environment variable shown beside it.",
    )
    parser.add_argument(
        "--database-url", type=_database_url,
        help="the cluster's database (ACTORCHAT_DATABASE_URL; default: "
        f"{default_url})",
    )
    parser.add_argument(
        "--cluster-secret", type=_secret,
        help="the cluster's secret: members whose proof does not check out show as untrusted "
        "(ACTORCHAT_CLUSTER_SECRET; prefer the environment variable)",
    )
    args = parser.parse_args(list(argv))
    values: dict[str, Any] = {}
    for name, convert in (("database_url", _database_url), ("cluster_secret", _secret)):
        value, env = getattr(args, name), f"ACTORCHAT_{name.upper()}"
        if value is None and environ.get(env):
            try:
                value = convert(environ[env])
            except argparse.ArgumentTypeError as exc:
                parser.error(f"environment variable {env}: {exc}")
        values[name] = value
    return values["database_url"] or default_url, values["cluster_secret"]


def main(argv: list[str]) -> int:
    from actorchat.store import Store, StoreError

    database_url, secret = parse(argv, os.environ)

    async def read() -> tuple[float, list[tuple[Any, ...]], dict[str, int]]:
        store = await Store.open(database_url, migrate=False)
        try:
            return await store.cluster_status()
        finally:
            await store.close()

    try:
        now, rows, owned = asyncio.run(read())
    except StoreError as e:
        print(f"actorchat cluster: {e}", file=sys.stderr)
        return 1
    print(render(now, rows, owned, secret))
    if database_url.startswith("sqlite"):
        print("note: a cluster on SQLite works only on one host, with every node on the same "
              "file; use PostgreSQL for a real cluster")
    return 0
