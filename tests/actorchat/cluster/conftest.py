"""Fixtures of the cluster tests: a fresh PostgreSQL database per test (``cluster_db``) and
node processes sharing it (``cluster_nodes``), killed at teardown whatever happened; and
nodes in this process sharing a fresh schema (``cluster``).

Subprocess nodes need their own database (a node takes no schema option), so ``cluster_db``
creates ``<test schema>_<hex>`` as a DATABASE on the ``pg_url`` server and drops it after
the test (``DROP DATABASE ... WITH (FORCE)``), skipping like ``pg_url`` where there is none.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from cluster_harness import CLUSTER_SECRET, LEASE
from node_harness import NodeProcess, make_settings, stop_nodes

from actorchat.node import Node


async def _admin(url: str, sql: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def cluster_db(pg_url: Any) -> Iterator[str]:
    """A ``postgresql+asyncpg://`` URL of a fresh, empty database."""
    name = f"{pg_url.schema}_{secrets.token_hex(3)}"
    asyncio.run(_admin(pg_url.url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url.url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(pg_url.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def cluster_nodes(
    tmp_path: Path, cluster_db: str
) -> Iterator[Callable[..., NodeProcess]]:
    """``start(name, **options)``: ``python -m actorchat`` as cluster member ``name`` on a
    free port, sharing ``cluster_db``; every one is killed at teardown."""
    procs: list[NodeProcess] = []

    def start(name: str, **options: Any) -> NodeProcess:
        values: dict[str, Any] = {
            "database_url": cluster_db,
            "node_name": name,
            "cluster_secret": CLUSTER_SECRET,
            "cluster_lease": LEASE,
            **options,
        }
        if values["cluster_secret"] is None:
            del values["cluster_secret"]
        proc = NodeProcess(tmp_path / "unused.db", tmp_path / f"{name}.log", **values)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


@pytest.fixture
async def cluster(
    tmp_path: Path, pg_url: Any
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """``await start(name, **settings)``: a cluster node in this process (the test's trio
    run) on ``pg_url`` in a schema of its own, stopped at teardown, last started first."""
    schema = f"{pg_url.schema}_{secrets.token_hex(4)}"
    nodes: list[Node] = []
    async with trio.open_nursery() as nursery:

        async def start(name: str, **overrides: Any) -> Node:
            values: dict[str, Any] = {
                "database_url": pg_url.url,
                "node_name": name,
                "cluster_secret": CLUSTER_SECRET.encode(),
                "cluster_lease": LEASE,
                **overrides,
            }
            node = Node(make_settings(tmp_path, **values), db_schema=schema)
            await nursery.start(node.run)
            nodes.append(node)
            return node

        yield start
        await stop_nodes(nodes)
        nursery.cancel_scope.cancel()
