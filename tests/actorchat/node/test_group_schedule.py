"""Hypothesis generates group schedules (joins, leaves, sends from several members at once,
disconnects, crashes of the group actor and of members' mailboxes) and runs each against a real
node over real sockets; then every member's deliveries are checked against a model:

* the delivery contract per member: every message sent while it was a member (and accepted)
  reaches it, once after dedupe (a redelivery carries the same mid), and nothing else does;
* one order per group: any two members see their common messages in the same order (and each
  sender's messages in the order sent); every send is accepted.

Each example runs its own node on a fresh SQLite file (``GROUP_SCHEDULES`` examples, 10 by
default). Sends are concurrent; a membership change first waits until every outstanding send
is accepted (a client resends what was not accepted when it reconnects), so the model knows
which members each message was for.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio
from client import Client, ConnectionLost, new_id
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from node_harness import make_settings, stop_node

import supervisors as sv
from actorchat.node import Node

OWNER = "own"
USERS = ["u1", "u2", "u3"]

op = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(USERS)),
    st.tuples(st.just("leave"), st.sampled_from(USERS)),
    st.tuples(st.just("send"), st.sampled_from([OWNER, *USERS]), st.integers(1, 8)),
    st.tuples(st.just("disconnect"), st.sampled_from([OWNER, *USERS])),
    st.tuples(st.just("connect"), st.sampled_from([OWNER, *USERS])),
    st.tuples(st.just("crash_group")),
    st.tuples(st.just("crash_mailbox"), st.sampled_from([OWNER, *USERS])),
)


class User:
    def __init__(self, name: str) -> None:
        self.name = name
        self.inboxes: list[Client] = []  # every connection's, in order
        self.client: Client | None = None
        self.scope: trio.CancelScope | None = None
        self.outstanding: dict[str, str] = {}  # id -> body, sent and not accepted yet

    async def connect(self, nursery: trio.Nursery, port: int) -> Client:
        if self.client is None:

            async def run(task_status: Any) -> None:
                async with Client.connect(port) as c:
                    await c.login(self.name)
                    with trio.CancelScope() as scope:
                        task_status.started((c, scope))
                        try:
                            while True:
                                await c._read_one()
                        except ConnectionLost:
                            pass

            self.client, self.scope = await nursery.start(run)
            self.inboxes.append(self.client)
            for id, body in self.outstanding.items():  # a client resends what is unaccepted
                await self.client.send(type="send", id=id, group=self.group, body=body)
        return self.client

    def disconnect(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        self.client = self.scope = None

    def accepted(self) -> set[str]:
        return {i for c in self.inboxes for i in c.accepted}

    def deliveries(self) -> list[dict[str, Any]]:
        return [d for c in self.inboxes for d in c.deliveries]


async def _poll(done: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not done():
            await trio.sleep(0.005)


async def run_schedule(tmp: Path, schedule: list[tuple[Any, ...]]) -> None:
    node = Node(make_settings(tmp, ack_timeout=0.5))
    node.user_linger = 0.2  # mailboxes stop soon when idle: offline copies go to the store
    node.group_linger = 0.5
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        port = node.port
        assert port
        async with Client.connect(port) as c:
            for name in [OWNER, *USERS]:
                await c.register(name)
        users = {name: User(name) for name in [OWNER, *USERS]}
        owner = await users[OWNER].connect(nursery, port)
        start = len(owner.frames)
        await owner.send(type="group_create", name="g", members=[])
        await _poll(lambda: any(f["type"] == "group" for f in owner.frames[start:]))
        group = next(f for f in owner.frames[start:] if f["type"] == "group")["group"]
        for u in users.values():
            u.group = group  # type: ignore[attr-defined]
        members = [OWNER]
        recipients: dict[tuple[str, str], set[str]] = {}  # (from, id) -> members meant
        sent: dict[str, list[str]] = defaultdict(list)
        seq = 0

        async def barrier() -> None:
            for u in users.values():
                if u.outstanding:
                    await u.connect(nursery, port)
            for u in users.values():
                await _poll(lambda u=u: set(u.outstanding) <= u.accepted())
                u.outstanding.clear()

        async def change(actor: str, frame: dict[str, Any], want: list[str]) -> None:
            c = await users[actor].connect(nursery, port)
            owner_c = await users[OWNER].connect(nursery, port) if want else c
            mark = len(owner_c.frames)
            await c.send(**frame)
            if want:
                await _poll(lambda: any(
                    f["type"] == "group" and f["members"] == want
                    for f in owner_c.frames[mark:]
                ))
            else:
                await _poll(lambda: any(f["type"] == "group_removed" for f in c.frames[mark:]))

        for step in schedule:
            kind = step[0]
            if kind == "join" and step[1] not in members:
                await barrier()
                await change(OWNER, {"type": "group_add", "group": group, "users": [step[1]]},
                             [*members, step[1]])
                members.append(step[1])
            elif kind == "leave" and step[1] in members:
                await barrier()
                rest = [m for m in members if m != step[1]]
                if users[step[1]].client is not None:
                    await change(step[1], {"type": "group_leave", "group": group}, rest)
                else:
                    await change(OWNER, {"type": "group_remove", "group": group,
                                         "users": [step[1]]}, rest)
                members = rest
            elif kind == "send" and step[1] in members:
                u = users[step[1]]
                c = await u.connect(nursery, port)
                for _ in range(step[2]):
                    seq += 1
                    id, body = new_id(), f"{u.name} {seq}"
                    u.outstanding[id] = body
                    sent[u.name].append(id)
                    recipients[(u.name, id)] = set(members) - {u.name}
                    await c.send(type="send", id=id, group=group, body=body)
            elif kind == "disconnect":
                users[step[1]].disconnect()
            elif kind == "connect":
                await users[step[1]].connect(nursery, port)
            elif kind == "crash_group":
                ref = node.groups.actors.get(group)
                if ref is not None:
                    ref.kill(sv.Error(RuntimeError("injected")))
            elif kind == "crash_mailbox":
                ref = node.registry.mailboxes.get(step[1])
                if ref is not None:
                    ref.kill(sv.Error(RuntimeError("injected")))
        await barrier()
        expected: dict[str, set[tuple[str, str]]] = {name: set() for name in users}
        for key, meant in recipients.items():
            for name in meant:
                expected[name].add(key)
        for u in users.values():
            await u.connect(nursery, port)
        for u in users.values():
            await _poll(lambda u=u: {
                (d["from"], d["id"]) for d in u.deliveries() if d.get("group") == group
            } >= expected[u.name])
        for u in users.values():
            await u.client.drain(0.05)  # type: ignore[union-attr]
        orders: dict[str, list[tuple[str, str]]] = {}
        for u in users.values():
            mids: dict[tuple[str, str], set[str]] = defaultdict(set)
            order: list[tuple[str, str]] = []
            for d in u.deliveries():
                assert d.get("group") == group and d["to"] == u.name, d
                key = (d["from"], d["id"])
                if key not in mids:
                    order.append(key)
                mids[key].add(d["mid"])
            assert set(order) == expected[u.name], u.name  # nothing lost, nothing extra
            assert all(len(m) == 1 for m in mids.values()), u.name  # dedupe by mid
            orders[u.name] = order
            for sender, ids in sent.items():  # each sender's order
                mine = [i for s, i in order if s == sender]
                assert mine == [i for i in ids if i in set(mine)], (u.name, sender)
        names = list(orders)
        for a in names:  # one order: common messages in the same relative order
            for b in names:
                common = set(orders[a]) & set(orders[b])
                assert [k for k in orders[a] if k in common] == [
                    k for k in orders[b] if k in common
                ], (a, b)
        for u in users.values():
            assert set(sent[u.name]) <= u.accepted()
            u.disconnect()
        await stop_node(node)
        nursery.cancel_scope.cancel()


@settings(
    max_examples=int(os.environ.get("GROUP_SCHEDULES", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(op, min_size=1, max_size=14))
@example([
    ("join", "u1"), ("join", "u2"), ("disconnect", "u2"), ("send", "own", 5),
    ("send", "u1", 5), ("crash_group",), ("send", "own", 4), ("crash_mailbox", "u1"),
    ("send", "u1", 3), ("leave", "u1"), ("send", "own", 3), ("connect", "u2"),
    ("join", "u3"), ("crash_mailbox", "u2"), ("send", "u3", 4), ("send", "u2", 2),
])
async def test_group_schedules_keep_one_order_and_the_delivery_contract(tmp_path, schedule):
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        with trio.fail_after(120):
            await run_schedule(Path(tmp), schedule)
