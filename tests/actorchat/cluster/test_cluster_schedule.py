"""Hypothesis generates schedules of sends, disconnects, logins on other nodes (takeovers)
and a node kill against two cluster nodes in this process (PostgreSQL, one fresh schema per
example); at the end every user logs in somewhere, sends again what it has no ``accepted``
for (as a client must), and the contract is checked: every message delivered exactly once
after dedupe by (from, id), in order per pair for the messages sent once, and a message
accepted before a kill never delivered under two mids.

A kill here is the node's tree cancelled with mail writes refused first and its lease left to
lapse: what the node held unstored is lost, as with SIGKILL (the subprocess version is
``test_cluster_process.py``). The node is then started again as a new incarnation.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
from cluster_harness import CLUSTER_SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "node"))

from client import Client, ConnectionLost, new_id
from node_harness import make_settings, stop_node

from actorchat.node import Node

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USERS = ("a", "b", "c")
LEASE = 1.0


@dataclass(frozen=True)
class Send:
    sender: int
    to: int
    count: int


@dataclass(frozen=True)
class Disconnect:
    user: int


@dataclass(frozen=True)
class Login:
    user: int
    node: int


@dataclass(frozen=True)
class Kill:
    node: int


ops = st.one_of(
    st.builds(Send, st.integers(0, 2), st.integers(0, 2), st.integers(1, 8)).filter(
        lambda s: s.sender != s.to
    ),
    st.builds(Disconnect, st.integers(0, 2)),
    st.builds(Login, st.integers(0, 2), st.integers(0, 1)),
    st.builds(Kill, st.integers(0, 1)),
)


@dataclass
class User:
    name: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, list[str]] = field(default_factory=dict)  # to -> ids in order
    resent: set[str] = field(default_factory=set)
    client: Client | None = None
    scope: trio.CancelScope | None = None


class Cluster:
    def __init__(self, tmp_path: Path, pg: Any, nursery: trio.Nursery) -> None:
        self.tmp_path, self.pg, self.nursery = tmp_path, pg, nursery
        self.schema = f"{pg.schema}_{secrets.token_hex(4)}"
        self.nodes: list[Node | None] = [None, None]
        self.scopes: list[trio.CancelScope | None] = [None, None]
        self.killed = False

    async def start(self, i: int) -> Node:
        settings = make_settings(
            self.tmp_path, database_url=self.pg.url, node_name=f"n{i + 1}",
            cluster_secret=CLUSTER_SECRET.encode(), cluster_lease=LEASE,
        )
        node = Node(settings, db_schema=self.schema)

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scopes[i] = scope
                await node.run(task_status=task_status)

        await self.nursery.start(run)
        self.nodes[i] = node
        return node

    async def kill(self, i: int) -> None:
        node, scope = self.nodes[i], self.scopes[i]
        assert node is not None and scope is not None
        node.fenced = True  # no mail write from here on: unstored mail is lost, as on SIGKILL

        async def no_leave() -> None:
            return None

        node.cluster.leave = no_leave  # the lease is left to lapse
        scope.cancel()
        self.nodes[i] = None
        self.killed = True

    def live(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n is not None]


async def connect(cluster: Cluster, user: User, i: int) -> None:
    await disconnect(user)
    node = cluster.nodes[i]
    assert node is not None
    ws = await trio_websocket.connect_websocket_url(
        cluster.nursery, f"ws://127.0.0.1:{node.port}/", max_message_size=1 << 24
    )
    client = Client(ws)
    client.deliveries, client.accepted, client.refused, client.errors = (
        user.deliveries, user.accepted, user.refused, user.errors)
    user.client = client

    async def read() -> None:
        with trio.CancelScope() as scope:
            user.scope = scope
            try:
                while True:
                    await client._read_one()
            except (ConnectionLost, trio_websocket.ConnectionClosed):
                pass

    cluster.nursery.start_soon(read)
    for _attempt in range(40):
        start = len(client.frames)
        await client.send(type="login", user=user.name, password="pw")
        with trio.move_on_after(10):
            while len(client.frames) == start and client.closed is None:
                await trio.sleep(0.01)
        if client.user == user.name:
            return
        if client.closed is not None:
            raise ConnectionLost(client.closed)
        await trio.sleep(0.1)  # `unavailable`: the mailbox is moving; log in again
    raise AssertionError(f"{user.name} could not log in: {client.errors[-3:]}")


async def disconnect(user: User) -> None:
    if user.client is not None:
        with trio.move_on_after(2):
            await user.client.ws.aclose()
        if user.scope is not None:
            user.scope.cancel()
    user.client = None


async def send_all(user: User, to: str, ids: list[str]) -> None:
    if user.client is None or user.client.closed is not None:
        return
    for id in ids:
        if id in user.sent.setdefault(to, []) and id not in user.resent:
            user.resent.add(id)
        elif id not in user.sent[to]:
            user.sent[to].append(id)
        try:
            await user.client.send(type="send", id=id, to=to, body=f"{user.name}>{to}")
        except trio_websocket.ConnectionClosed:
            return


async def run_schedule(tmp_path: Path, pg: Any, schedule: list[Any]) -> None:
    users = [User(name) for name in USERS]
    async with trio.open_nursery() as nursery:
        cluster = Cluster(tmp_path, pg, nursery)
        await cluster.start(0)
        await cluster.start(1)
        with trio.fail_after(15):
            while not all(n and n.cluster.status()["linked"] for n in cluster.nodes):
                await trio.sleep(0.02)
        async with Client.connect(cluster.nodes[0].port) as c:
            for user in users:
                await c.register(user.name)
        for i, user in enumerate(users):
            await connect(cluster, user, i % 2)
        accepted_before_kill: dict[str, set[str]] = {}
        for op in schedule:
            live = cluster.live()
            if isinstance(op, Send):
                sender = users[op.sender]
                await send_all(sender, USERS[op.to], [new_id() for _ in range(op.count)])
                await trio.sleep(0.01)
            elif isinstance(op, Disconnect):
                await disconnect(users[op.user])
            elif isinstance(op, Login):
                await connect(cluster, users[op.user], op.node if op.node in live else live[0])
            elif isinstance(op, Kill) and not cluster.killed and len(live) == 2:
                accepted_before_kill = {u.name: set(u.accepted) for u in users}
                await cluster.kill(op.node)
                for user in users:
                    if user.client is not None and user.client.closed is None:
                        continue
                    user.client = None
                await trio.sleep(0.05)
                await cluster.start(op.node)  # a new incarnation (waits out the old lease)
        # Settle: everyone logs in (again), and sends again what has no `accepted`.
        with trio.fail_after(60):
            for i, user in enumerate(users):
                if user.client is None or user.client.closed is not None:
                    await connect(cluster, user, cluster.live()[i % len(cluster.live())])
            for _round in range(100):
                missing = {
                    (u.name, to): [id for id in ids if id not in set(u.accepted)]
                    for u in users for to, ids in u.sent.items()
                }
                if not any(missing.values()):
                    break
                for (name, to), ids in missing.items():
                    user = users[USERS.index(name)]
                    if user.client is None or user.client.closed is not None:
                        await connect(cluster, user, cluster.live()[0])
                    user.resent.update(ids)
                    await send_all(user, to, ids)
                await trio.sleep(0.3)
            expected = {
                u.name: {(s.name, id) for s in users for id in s.sent.get(u.name, [])}
                for u in users
            }
            while not all(
                expected[u.name] <= {(d["from"], d["id"]) for d in u.deliveries} for u in users
            ):
                await trio.sleep(0.05)
            await trio.sleep(0.2)
        for user in users:
            await disconnect(user)
        for node in cluster.nodes:
            if node is not None:
                await stop_node(node)
        nursery.cancel_scope.cancel()
    check(users, accepted_before_kill)


def check(users: list[User], accepted_before_kill: dict[str, set[str]]) -> None:
    for user in users:
        assert {e["code"] for e in user.errors} <= {"unavailable"}, user.errors[:3]
    for recipient in users:
        firsts: dict[str, list[str]] = {}
        mids: dict[tuple[str, str], set[str]] = {}
        for d in recipient.deliveries:
            key = (d["from"], d["id"])
            if key not in mids:
                firsts.setdefault(d["from"], []).append(d["id"])
            mids.setdefault(key, set()).add(d["mid"])
        for sender in users:
            sent = sender.sent.get(recipient.name, [])
            got = firsts.get(sender.name, [])
            assert sorted(got) == sorted(sent), (sender.name, recipient.name)
            once = [id for id in got if id not in sender.resent]
            assert once == [id for id in sent if id in set(once)], (sender.name, recipient.name)
            for id in accepted_before_kill.get(sender.name, set()) & set(sent):
                assert len(mids[(sender.name, id)]) == 1, (sender.name, id)


@settings(
    max_examples=int(os.environ.get("ACTORCHAT_SCHEDULE_EXAMPLES", "3")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schedule=st.lists(ops, min_size=3, max_size=14))
def test_schedules_of_sends_logins_and_kills_keep_the_contract(
    tmp_path: Path, pg_url: Any, schedule: list[Any]
) -> None:
    trio.run(run_schedule, tmp_path, pg_url, schedule)
