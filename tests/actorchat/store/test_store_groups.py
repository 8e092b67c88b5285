"""The store's group methods (migration 0003), each test on SQLite and on PostgreSQL."""

from __future__ import annotations

from actorchat.store import DedupeRow, MailRow, Store, StoreBatch


def copy(recipient: str, sender: str, client_id: str, ts: float = 1.0) -> MailRow:
    return MailRow(recipient, 0, sender, client_id, f"body {client_id}", ts, "g1", None)


def test_create_load_change_and_delete_a_group(db) -> None:
    async def body(store: Store) -> None:
        assert await store.load_group("g1") is None
        await store.create_group("g1", "friends", "ann", ["ann", "cat", "bob"], 10.0)
        await store.create_group("g2", "two", "bob", ["bob", "ann"], 11.0)
        assert await store.load_group("g1") == ("friends", "ann", ["ann", "cat", "bob"])
        assert await store.groups_of("ann") == [
            ("g1", "friends", "ann", ["ann", "cat", "bob"]),
            ("g2", "two", "bob", ["bob", "ann"]),
        ]
        assert await store.groups_of("nobody") == []
        await store.change_group("g1", ["dan", "cat"], ["ann"], "cat", 12.0)  # cat stays put
        assert await store.load_group("g1") == ("friends", "cat", ["cat", "bob", "dan"])
        assert [g[0] for g in await store.groups_of("ann")] == ["g2"]
        await store.change_group("g2", [], ["bob", "ann"], "bob", 13.0)  # nobody left
        assert await store.load_group("g2") is None
        assert await store.groups_of("bob") == [("g1", "friends", "cat", ["cat", "bob", "dan"])]

    db.run(body)


def test_groups_of_many_answers_as_groups_of_for_each_member(db) -> None:
    # Names of its own: on PostgreSQL the group tables are not emptied between tests.
    async def body(store: Store) -> None:
        await store.create_group("mg1", "friends", "kim", ["kim", "max", "lee"], 10.0)
        await store.create_group("mg2", "two", "lee", ["lee", "kim"], 11.0)
        await store.create_group("mg0", "solo", "ned", ["ned"], 12.0)
        try:
            members = ["kim", "lee", "max", "ned", "nobody", "kim"]
            members += [f"u{i}" for i in range(600)]
            many = await store.groups_of_many(members)
            assert set(many) == set(members)
            for member in set(members):
                assert many[member] == await store.groups_of(member), member
            assert [g[0] for g in many["kim"]] == ["mg1", "mg2"] and many["nobody"] == []
            assert many["ned"] == [("mg0", "solo", "ned", ["ned"])]
            # each answer is its own: changing one member's list leaves the others alone
            many["kim"][0][3].append("zed")
            assert many["max"][0][3] == ["kim", "max", "lee"]
            assert await store.groups_of_many([]) == {}
        finally:
            await store.change_group("mg1", [], ["kim", "max", "lee"], "kim", 13.0)
            await store.change_group("mg2", [], ["lee", "kim"], "lee", 13.0)
            await store.change_group("mg0", [], ["ned"], "ned", 13.0)

    db.run(body)


def test_group_copies_get_keys_above_the_mailbox_and_skip_retries(db) -> None:
    async def body(store: Store) -> None:
        now_us = 1_000_000
        # bob has stored mail with keys above now_us (keys come from his own mailbox)
        await store.apply(StoreBatch(put_mail=[
            MailRow("bob", 5_000_000, "x", "old", "b", 0.5, None, None)
        ]))
        # ann acknowledged m0 before (a dedupe row): it is not written again
        await store.apply(StoreBatch(put_dedupe=[DedupeRow("sue", "m0", "ann", 7, 0.5)]))
        copies = [copy(r, "sue", f"m{i}") for i in range(3) for r in ("ann", "bob")]
        assert await store.put_group_copies(copies, now_us) == 5
        ann = await store.fetch_mail("ann", None, 10)
        bob = await store.fetch_mail("bob", None, 10)
        assert [(r.client_id, r.key) for r in ann] == [("m1", now_us), ("m2", now_us + 1)]
        assert [(r.client_id, r.key) for r in bob] == [
            ("old", 5_000_000), ("m0", 5_000_001), ("m1", 5_000_002), ("m2", 5_000_003),
        ]
        assert {r.grp for r in bob[1:]} == {"g1"}
        # the same copies again (a group actor that crashed before hearing the commit)
        assert await store.put_group_copies(copies, now_us + 10) == 0
        assert len(await store.fetch_mail("bob", None, 10)) == 4
        found = await store.lookup_dedupe("sue", ["m0", "m1", "m2"], "bob")
        assert found == {"m0": 5_000_001, "m1": 5_000_002, "m2": 5_000_003}
        assert await store.put_group_copies([], now_us) == 0

    db.run(body)
