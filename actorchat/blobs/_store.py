"""The blob store's interface: content-addressed bytes, streamed in and out.

A blob is named by the SHA-256 of its bytes (64 lowercase hex digits). ``put`` streams an
upload into a temporary place while hashing it and, once it is whole and durable, commits it
under its hash; putting the same bytes again commits nothing new. Readers stream a blob back
in chunks. Nothing here knows who may read what: access is the chat's business (media ids and
grants in the database, ``actorchat.node._media``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "BlobError",
    "BlobNotFound",
    "BlobStat",
    "BlobStore",
    "BlobStoreUnavailable",
    "check_sha256",
    "sha256_of",
]

CHUNK_SIZE = 64 * 1024
"""Bytes per chunk a reader yields (and about what a socket takes at once)."""

_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")


class BlobError(Exception):
    """Base of the blob store's errors."""


class BlobNotFound(BlobError):
    """No blob with this hash (an open or read of something never put)."""


class BlobStoreUnavailable(BlobError):
    """The backing store cannot be reached or refused the operation (disk, network, S3)."""


@dataclass(frozen=True, slots=True)
class BlobStat:
    sha256: str
    size: int


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits, else ``ValueError`` (it becomes a path or
    an object key: nothing else may get through)."""
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore(Protocol):
    """What the node needs of a blob store. Every method is async and keeps blocking I/O off
    the trio loop (worker threads)."""

    async def put(self, chunks: AsyncIterable[bytes]) -> tuple[str, int]:
        """Store the bytes of ``chunks``; returns ``(sha256, size)``. Streamed: memory stays
        bounded whatever the size. If ``chunks`` raises (a body over the limit, a client gone)
        nothing is committed, the temporary data is removed and the error propagates.
        Idempotent: the same bytes again give the same hash and store nothing new."""
        ...

    def read(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks of at most ``chunk_size``; ``BlobNotFound`` on the first
        iteration if there is none. Use ``stat`` first for the size (Content-Length)."""
        ...

    async def exists(self, sha256: str) -> bool: ...

    async def stat(self, sha256: str) -> BlobStat | None:
        """The blob's size, or None if there is no such blob."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections. The stored blobs stay."""
        ...
