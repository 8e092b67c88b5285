"""Helpers of the blob store tests: chunk sources and a peak-memory probe."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import trio

MiB = 1024 * 1024


def pattern(size: int, seed: int = 0) -> Iterator[bytes]:
    """``size`` deterministic bytes in 64 KiB chunks, made one at a time (never whole)."""
    block = 64 * 1024
    made = 0
    n = seed
    while made < size:
        n += 1
        step = min(block, size - made)
        chunk = (n.to_bytes(8, "little") * (block // 8))[:step]
        made += step
        yield chunk


def digest_of(size: int, seed: int = 0) -> str:
    h = hashlib.sha256()
    for chunk in pattern(size, seed):
        h.update(chunk)
    return h.hexdigest()


async def achunks(size: int, seed: int = 0) -> AsyncIterator[bytes]:
    for chunk in pattern(size, seed):
        await trio.lowlevel.checkpoint()
        yield chunk


async def from_list(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await trio.lowlevel.checkpoint()
        yield chunk


class Failing(Exception):
    pass


async def failing_after(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes, then an error (a client gone, a body over the limit)."""
    async for chunk in achunks(size):
        yield chunk
    raise Failing


class Peak:
    growth: int = 0


@contextmanager
def peak_memory() -> Iterator[Peak]:
    """The peak growth of Python allocations (every thread) inside the block, in bytes."""
    peak = Peak()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        yield peak
        _, top = tracemalloc.get_traced_memory()
        peak.growth = top - before
    finally:
        tracemalloc.stop()


async def read_all(store, sha256: str, chunk_size: int = 64 * 1024) -> bytes:
    return b"".join([chunk async for chunk in store.read(sha256, chunk_size)])
