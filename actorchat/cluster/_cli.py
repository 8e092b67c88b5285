"""``python -m actorchat cluster``: the members of the cluster on a database, their state and
their user counts, read from the membership table (no node needs to be running)."""

from __future__ import annotations

import asyncio
import os
import sys
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


def main(argv: list[str]) -> int:
    from actorchat.config import parse_settings
    from actorchat.store import Store, StoreError

    settings = parse_settings(argv, os.environ)

    async def read() -> tuple[float, list[tuple[Any, ...]], dict[str, int]]:
        store = await Store.open(settings.database_url, migrate=False)
        try:
            return await store.cluster_status()
        finally:
            await store.close()

    try:
        now, rows, owned = asyncio.run(read())
    except StoreError as e:
        print(f"actorchat cluster: {e}", file=sys.stderr)
        return 1
    print(render(now, rows, owned, settings.cluster_secret))
    if settings.database_url.startswith("sqlite"):
        print("note: a cluster on SQLite works only on one host, with every node on the same "
              "file; use PostgreSQL for a real cluster")
    return 0
