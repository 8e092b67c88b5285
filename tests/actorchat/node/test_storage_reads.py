"""How the store thread answers a hop's reads (actorchat/node/_storage.py): the mailbox loads
and group reads of many logins become one store call each (``plan_reads``, pure), and each
read still gets its own answer, or its own failure. No sockets, no thread: ``StoreActor._hop``
runs on a fake store."""

from __future__ import annotations

import asyncio
from typing import Any

from actorchat.node._storage import Read, StoreActor, _Hop, plan_reads
from actorchat.store import StoreUnavailable


def plan(reads: list[Read]) -> list[tuple[str, tuple[Any, ...], list[int], list[str] | None]]:
    return [(c.method, c.args, c.indices, c.users) for c in plan_reads(reads)]


def test_mailbox_loads_and_group_reads_of_many_users_become_one_call_each():
    reads = [
        Read("load_mailbox", ("ann", 10_000, 500)),
        Read("groups_of", ("ann",)),
        Read("users_exist", (["bob"],)),
        Read("load_mailbox", ("bob", 10_000, 500)),
        Read("groups_of", ("cat",)),
        Read("load_mailbox", ("ann", 10_000, 500)),  # the same user again
    ]
    assert plan(reads) == [
        ("load_mailboxes", (10_000, 500), [0, 3, 5], ["ann", "bob", "ann"]),
        ("groups_of_many", (), [1, 4], ["ann", "cat"]),
        ("users_exist", (["bob"],), [2], None),
    ]


def test_other_reads_and_other_arguments_stay_apart_in_order():
    reads = [
        Read("ping"),
        Read("load_mailbox", ("ann", 10_000, 500)),
        Read("load_mailbox", ("bob", 10, 5)),  # other limits: a call of its own
        Read("fetch_mail", ("ann", None, 500)),
        Read("fetch_mail", ("bob", None, 500)),
        Read("load_mailbox", ("cat", 10, 5)),
        Read("groups_of", ("dan", ["unhashable"])),  # cannot key a batch: alone
    ]
    assert plan(reads) == [
        ("ping", (), [0], None),
        ("load_mailboxes", (10_000, 500), [1], ["ann"]),
        ("load_mailboxes", (10, 5), [2, 5], ["bob", "cat"]),
        ("fetch_mail", ("ann", None, 500), [3], None),
        ("fetch_mail", ("bob", None, 500), [4], None),
        ("groups_of", ("dan", ["unhashable"]), [6], None),
    ]
    assert plan([]) == []


class FakeStore:
    def __init__(self, down: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.down = down

    async def _answer(self, method: str, *args: Any) -> Any:
        self.calls.append((method, args))
        if method in self.down:
            raise StoreUnavailable(f"{method}: injected outage")
        return args

    async def load_mailboxes(self, users: list[str], dedupe_limit: int, page: int) -> Any:
        await self._answer("load_mailboxes", users, dedupe_limit, page)
        return {u: (len(u), [u], []) for u in users}

    async def groups_of_many(self, users: list[str]) -> Any:
        await self._answer("groups_of_many", users)
        return {u: [(f"g-{u}", "n", u, [u])] for u in users}

    async def users_exist(self, names: list[str]) -> Any:
        await self._answer("users_exist", names)
        return set(names)


def hop(store: FakeStore, reads: list[Read]) -> list[Any]:
    actor = StoreActor("sqlite:///unused")
    actor.store = store  # type: ignore[assignment]
    written, results = asyncio.run(actor._hop(_Hop(None, tuple(reads))))
    assert written is None
    return results


READS = [
    Read("load_mailbox", ("ann", 10_000, 500)),
    Read("groups_of", ("bob",)),
    Read("users_exist", (["x"],)),
    Read("load_mailbox", ("bobby", 10_000, 500)),
    Read("groups_of", ("ann",)),
]


def test_each_read_gets_its_own_users_answer_from_one_call():
    store = FakeStore()
    assert hop(store, READS) == [
        (3, ["ann"], []),
        [("g-bob", "n", "bob", ["bob"])],
        {"x"},
        (5, ["bobby"], []),
        [("g-ann", "n", "ann", ["ann"])],
    ]
    assert store.calls == [
        ("load_mailboxes", (["ann", "bobby"], 10_000, 500)),
        ("groups_of_many", (["bob", "ann"],)),
        ("users_exist", (["x"],)),
    ]


def test_a_failed_call_fails_every_read_it_answers_and_no_other():
    results = hop(FakeStore(down=frozenset({"load_mailboxes"})), READS)
    assert [type(r) for r in results] == [
        StoreUnavailable, list, set, StoreUnavailable, list,
    ]
    results = hop(FakeStore(down=frozenset({"groups_of_many"})), READS)
    assert [type(r) for r in results] == [
        tuple, StoreUnavailable, set, tuple, StoreUnavailable,
    ]
