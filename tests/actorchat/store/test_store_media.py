"""The store's media methods (``actorchat/store/_media.py``) on SQLite and PostgreSQL: an
upload is fetchable by its uploader, sharing needs access and grants in one transaction, and
an id nobody was granted looks exactly like one that does not exist. Ids are random per test
(the PostgreSQL schema is shared by the session)."""

from __future__ import annotations

import secrets

import pytest

from actorchat.store import Store
from actorchat.store._media import MediaRow

SHA = "ab" * 32


def new_id() -> str:
    return secrets.token_urlsafe(24)


def test_upload_is_the_uploaders(db) -> None:
    m = new_id()

    async def body(store: Store) -> None:
        await store.create_media(m, SHA, 1234, "image/png", "ann", 5.0)
        assert await store.media_for(m, "ann") == MediaRow(m, SHA, 1234, "image/png", "ann", 5.0)
        assert await store.media_for(m, "bob") is None
        assert await store.media_for(new_id(), "ann") is None  # the same answer as for bob

    db.run(body)


def test_share_needs_access_and_grants(db) -> None:
    m = new_id()

    async def body(store: Store) -> None:
        await store.create_media(m, SHA, 10, "text/plain", "ann", 1.0)
        assert await store.share_media(m, "eve", ["eve", "bob"]) is None  # eve may not
        assert await store.media_for(m, "bob") is None  # and nothing was granted
        row = await store.share_media(m, "ann", ["bob", "cat", "bob"])
        assert row is not None and (row.id, row.size, row.mime) == (m, 10, "text/plain")
        assert await store.media_for(m, "bob") is not None
        # A recipient may pass it on, and granting again is harmless (a retried send).
        assert await store.share_media(m, "bob", ["dan", "cat"]) is not None
        assert await store.share_media(m, "bob", ["dan"]) is not None
        for user in ("ann", "bob", "cat", "dan"):
            assert await store.media_for(m, user) is not None
        assert await store.share_media(new_id(), "ann", ["bob"]) is None

    db.run(body)


def test_grant_without_check(db) -> None:
    m = new_id()

    async def body(store: Store) -> None:
        await store.create_media(m, SHA, 0, "application/octet-stream", "ann", 1.0)
        await store.grant_media(m, [f"u{i}" for i in range(600)])  # past one IN list
        await store.grant_media(m, [])
        assert await store.media_for(m, "u599") is not None

    db.run(body)


def test_bad_values_fail_where_they_are_made(db) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(ValueError):
            await store.create_media("x" * 65, SHA, 1, "a/b", "ann", 1.0)
        with pytest.raises(ValueError):
            await store.create_media(new_id(), "short", 1, "a/b", "ann", 1.0)
        with pytest.raises(ValueError):
            await store.create_media(new_id(), SHA, -1, "a/b", "ann", 1.0)
        with pytest.raises(ValueError):
            await store.media_for(new_id(), "x" * 65)

    db.run(body)
