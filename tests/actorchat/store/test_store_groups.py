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
