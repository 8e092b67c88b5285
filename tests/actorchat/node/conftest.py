"""Fixtures of the end-to-end node tests: nodes in-process (``start_node``) and as
subprocesses (``node_process``). Helpers are in ``node_harness.py``, clients in ``client.py``.

``start_node(**overrides)`` (async) runs ``Node(settings).run`` in the fixture's nursery with
``node_harness.make_settings`` (``port=0``, SQLite in ``tmp_path``, short timeouts, no rate
limit; ``user_linger=`` sets ``Node.user_linger``) and returns the started node; teardown stops
every node it started, the tree in reverse order, as SIGTERM does.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

# The suite runs with --import-mode=importlib: put this directory on sys.path so the test
# modules can import their helpers (client, node_harness).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_harness import NodeProcess, make_settings, stop_nodes

from actorchat.node import Node


@pytest.fixture
def dialect(request: pytest.FixtureRequest) -> tuple[str | None, str | None]:
    """(database_url, schema) for ``start_node``: SQLite unless a module parametrises it
    (``pytestmark = pytest.mark.parametrize("dialect", DIALECTS, indirect=True)``), in which
    case the PostgreSQL run gets a fresh schema of its own (the ``pg_url`` fixture's rules:
    skipped with a hint where no server answers, failed under ACTORCHAT_REQUIRE_POSTGRES=1)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None, None
    pg = request.getfixturevalue("pg_url")
    return pg.url, f"{pg.schema}_{secrets.token_hex(4)}"


@pytest.fixture
async def start_node(
    tmp_path: Path, dialect: tuple[str | None, str | None]
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    nodes: list[Node] = []
    url, schema = dialect
    async with trio.open_nursery() as nursery:

        async def start(**overrides: Any) -> Node:
            user_linger = overrides.pop("user_linger", None)
            if url is not None:
                overrides.setdefault("database_url", url)
            node = Node(make_settings(tmp_path, **overrides), db_schema=schema)
            if user_linger is not None:
                node.user_linger = user_linger
            await nursery.start(node.run)
            assert node.port
            nodes.append(node)
            return node

        yield start
        await stop_nodes(nodes)
        nursery.cancel_scope.cancel()


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    procs: list[NodeProcess] = []

    def start(**options: Any) -> NodeProcess:
        proc = NodeProcess(tmp_path / "t.db", tmp_path / "node.log", **options)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
