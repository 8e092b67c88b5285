"""A cluster node on PostgreSQL renews its lease on its own store thread and connection
(``leasestore``, actorchat/node/_storage.py), so a store front stuck behind slow mail writes
does not fence it: before, a renewal queued behind the group commits for longer than the
lease was refused by the database ("lapsed"), and the node dropped every connection (4004)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster_harness import LEASE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from client import Client

from actorchat.node._storage import LEASE_STORE

pytestmark = pytest.mark.postgres


async def test_a_stalled_store_front_does_not_fence_the_node(cluster):
    n1 = await cluster("n1")
    await n1.cluster.joined.wait()
    assert n1.sup is not None and n1.sup.whereis(LEASE_STORE) is not None
    front = n1.front
    assert front is not None
    lookup = front._lookup
    release = trio.Event()

    async def stalled() -> Any:
        await release.wait()
        return await lookup()

    async with Client.connect(n1.port) as alice:
        await alice.register("alice")
        await alice.register("bob")
        await alice.login("alice")
        first = await alice.send_message("bob", "before")
        await alice.until(lambda: first in alice.accepted)
        # Every hop to the mail store now waits (a write of seconds under load), twice as
        # long as the lease: the renewals must go on beside it.
        front._lookup = stalled  # type: ignore[method-assign]
        stalled_at = trio.current_time()
        await alice.send_message("bob", "during", id="during")
        with trio.fail_after(LEASE * 4):
            # Renewed well after the stall began: the old path would have missed its deadline
            # (stalled_at + 0.75 x lease) and fenced.
            while n1.cluster.valid_until <= stalled_at + 2 * LEASE:
                await trio.sleep(0.02)
        assert n1.metrics["cluster_fenced"] == 0
        assert "during" not in alice.accepted  # its write is still waiting
        release.set()
        front._lookup = lookup  # type: ignore[method-assign]
        await alice.until(lambda: "during" in alice.accepted, timeout=10)
        assert n1.metrics["cluster_fenced"] == 0
        assert alice.closed is None
