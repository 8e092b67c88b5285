"""The store's media methods (issue 7): uploads and who may fetch them.

A mixin of ``Store`` (it uses ``Store._read``/``_write`` and ``dialect``), kept in its own
module so the media feature stays in one place. Every method is one transaction; grants are
idempotent (a retried ``send`` grants again, harmlessly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ._rows import check_name, check_text, check_time
from ._schema import MEDIA_ID_MAX, MIME_MAX, media, media_access


class MediaRow(NamedTuple):
    id: str
    sha256: str
    size: int
    mime: str
    owner: str
    created_at: float


def _check_media_id(media_id: object) -> None:
    if type(media_id) is not str or not 0 < len(media_id) <= MEDIA_ID_MAX or "\x00" in media_id:
        raise ValueError(f"media_id must be a str of 1 to {MEDIA_ID_MAX} characters without NUL")


class MediaMethods:
    # Provided by Store.
    dialect: str
    _read: Callable[[str], contextlib.AbstractAsyncContextManager[AsyncConnection]]
    _write: Callable[[str], contextlib.AbstractAsyncContextManager[AsyncConnection]]

    def _insert_ignore(self, table: Any, keys: list[str]) -> Any:
        ins = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        return ins(table).on_conflict_do_nothing(index_elements=keys)

    async def create_media(
        self, media_id: str, sha256: str, size: int, mime: str, owner: str, now: float
    ) -> None:
        """Record an upload by ``owner`` (who may then fetch and share it)."""
        _check_media_id(media_id)
        check_text("sha256", sha256)
        check_text("mime", mime)
        if len(mime) > MIME_MAX or len(sha256) != 64:
            raise ValueError("sha256 must be 64 hex digits and mime at most 255 characters")
        if type(size) is not int or size < 0:
            raise ValueError("size must be a non-negative int")
        check_name("owner", owner)
        check_time("now", now)
        async with self._write("create_media") as connection:
            await connection.execute(
                media.insert().values(
                    id=media_id, sha256=sha256, size=size, mime=mime, owner=owner, created_at=now
                )
            )
            await connection.execute(
                self._insert_ignore(media_access, ["media_id", "user_name"]),
                {"media_id": media_id, "user_name": owner},
            )

    async def media_for(self, media_id: str, user: str) -> MediaRow | None:
        """Upload ``media_id`` if ``user`` may fetch it (uploader or granted); else None, the
        same answer as for an id that does not exist."""
        _check_media_id(media_id)
        check_name("user", user)
        async with self._read("media_for") as connection:
            return await self._media_for(connection, media_id, user)

    @staticmethod
    async def _media_for(connection: AsyncConnection, media_id: str, user: str) -> Any:
        row = (
            await connection.execute(
                select(*media.c)
                .join(media_access, media_access.c.media_id == media.c.id)
                .where(media.c.id == media_id, media_access.c.user_name == user)
            )
        ).first()
        return MediaRow(*row) if row is not None else None

    async def share_media(
        self, media_id: str, sharer: str, users: Iterable[str]
    ) -> MediaRow | None:
        """If ``sharer`` may fetch ``media_id``, let ``users`` fetch it too (committed when
        this returns) and return the upload; else None and nothing changes."""
        _check_media_id(media_id)
        check_name("sharer", sharer)
        grantees = sorted(set(users))
        for name in grantees:
            check_name("user", name)
        async with self._write("share_media") as connection:
            row = await self._media_for(connection, media_id, sharer)
            if row is not None and grantees:
                await self._grant(connection, media_id, grantees)
            return row

    async def grant_media(self, media_id: str, users: Iterable[str]) -> None:
        """Let ``users`` fetch ``media_id`` (no check of who asks: see ``share_media``)."""
        _check_media_id(media_id)
        grantees = sorted(set(users))
        for name in grantees:
            check_name("user", name)
        if grantees:
            async with self._write("grant_media") as connection:
                await self._grant(connection, media_id, grantees)

    async def _grant(self, connection: AsyncConnection, media_id: str, users: list[str]) -> None:
        await connection.execute(
            self._insert_ignore(media_access, ["media_id", "user_name"]),
            [{"media_id": media_id, "user_name": name} for name in users],
        )
