"""``FsBlobStore``: blobs as files under one directory, the embedded default.

::

    <root>/tmp/<random>.part        an upload in progress (removed on any failure)
    <root>/blobs/<ab>/<sha256>      a committed blob (<ab>: the hash's first two digits)

An upload is written to a ``.part`` file while it is hashed, fsynced, then renamed to its hash
(``os.replace`` is atomic on POSIX) and the directory fsynced: a committed blob is whole and
survives a crash, and a crash mid-upload leaves only a ``.part`` file, swept at the first use
(files older than ``STALE_PART_SECONDS``). All file I/O runs in worker threads; writes are
batched (``WRITE_BATCH`` bytes a hop) so a thread hop is not paid per socket read.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import trio

from ._store import CHUNK_SIZE, BlobNotFound, BlobStat, BlobStoreUnavailable, check_sha256

__all__ = ["FsBlobStore"]

WRITE_BATCH = 256 * 1024
STALE_PART_SECONDS = 3600.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def spool(chunks: AsyncIterable[bytes], file: Any, digest: Any) -> int:
    """Write ``chunks`` to ``file`` and into ``digest``, off the loop in batches of about
    ``WRITE_BATCH`` bytes (never the whole body in memory); return the size. Both stores
    spool an upload through this."""
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        if not chunk:
            continue
        pending.append(chunk)
        pending_size += len(chunk)
        size += len(chunk)
        if pending_size >= WRITE_BATCH:
            data, pending, pending_size = b"".join(pending), [], 0
            await trio.to_thread.run_sync(_write, file, digest, data)
    if pending:
        await trio.to_thread.run_sync(_write, file, digest, b"".join(pending))
    return size


def _write(file: BinaryIO, digest: Any, data: bytes) -> None:
    digest.update(data)  # hashlib releases the GIL for large buffers
    file.write(data)


class FsBlobStore:
    """A content-addressed blob store in the directory ``root`` (made on first use)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._blobs = self.root / "blobs"
        self._ready = False

    def __repr__(self) -> str:
        return f"FsBlobStore({str(self.root)!r})"

    def path_of(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self._blobs / sha256[:2] / sha256

    def _prepare(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_PART_SECONDS
        for part in self._tmp.glob("*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
            except FileNotFoundError:
                pass

    async def _ensure_ready(self) -> None:
        if not self._ready:
            try:
                await trio.to_thread.run_sync(self._prepare)
            except OSError as e:
                raise BlobStoreUnavailable(f"blob directory {self.root}: {e}") from e
            self._ready = True

    # -- writing ------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterable[bytes]) -> tuple[str, int]:
        await self._ensure_ready()
        part = self._tmp / f"{secrets.token_hex(16)}.part"
        try:
            file: BinaryIO = await trio.to_thread.run_sync(part.open, "xb")
        except OSError as e:
            raise BlobStoreUnavailable(f"cannot create {part}: {e}") from e
        digest = hashlib.sha256()
        size = 0
        committed = False
        try:
            size = await spool(chunks, file, digest)
            sha256 = digest.hexdigest()
            await trio.to_thread.run_sync(self._commit, file, part, sha256)
            committed = True
            return sha256, size
        except OSError as e:
            raise BlobStoreUnavailable(f"writing a blob under {self.root}: {e}") from e
        finally:
            if not committed:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._discard, file, part)

    def _commit(self, file: BinaryIO, part: Path, sha256: str) -> None:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        final = self.path_of(sha256)
        if final.exists():  # the same bytes are there already: keep those
            part.unlink()
            return
        final.parent.mkdir(exist_ok=True)
        os.replace(part, final)
        _fsync_dir(final.parent)

    @staticmethod
    def _discard(file: BinaryIO, part: Path) -> None:
        file.close()
        part.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------
    async def read(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self.path_of(sha256)
        try:
            file = await trio.open_file(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        except OSError as e:
            raise BlobStoreUnavailable(f"reading {path}: {e}") from e
        async with file:
            while chunk := await file.read(chunk_size):
                yield chunk

    async def stat(self, sha256: str) -> BlobStat | None:
        path = self.path_of(sha256)
        try:
            st = await trio.to_thread.run_sync(path.stat)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BlobStoreUnavailable(f"stat {path}: {e}") from e
        return BlobStat(sha256, st.st_size)

    async def exists(self, sha256: str) -> bool:
        return await self.stat(sha256) is not None

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
