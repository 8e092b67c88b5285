"""The blob store contract (``actorchat/blobs/_store.py``), run on each store: the
filesystem and S3 (against moto's server). Streaming is checked by the peak of Python
allocations: a 16 MiB blob goes in and out while memory grows by a small fraction of it."""

from __future__ import annotations

import hashlib

import pytest
from blob_helpers import (
    Failing,
    MiB,
    achunks,
    digest_of,
    failing_after,
    from_list,
    peak_memory,
    read_all,
)

from actorchat.blobs import BlobNotFound, BlobStore, FsBlobStore, check_sha256, sha256_of


async def test_put_then_read_gives_the_bytes_back(blob_store: BlobStore) -> None:
    data = [b"hello ", b"", b"world", b"!" * 100_000]
    whole = b"".join(data)
    sha, size = await blob_store.put(from_list(data))
    assert (sha, size) == (hashlib.sha256(whole).hexdigest(), len(whole))
    assert await read_all(blob_store, sha) == whole
    assert await blob_store.exists(sha)
    stat = await blob_store.stat(sha)
    assert stat is not None and (stat.sha256, stat.size) == (sha, size)


async def test_read_yields_chunks_of_at_most_the_size_asked(blob_store: BlobStore) -> None:
    sha, _ = await blob_store.put(achunks(300_000))
    sizes = [len(chunk) async for chunk in blob_store.read(sha, 50_000)]
    assert sum(sizes) == 300_000 and max(sizes) <= 50_000


async def test_the_same_bytes_twice_are_one_blob(blob_store: BlobStore) -> None:
    first = await blob_store.put(achunks(200_000, seed=3))
    second = await blob_store.put(from_list([b"".join([c async for c in achunks(200_000, 3)])]))
    assert first == second == (digest_of(200_000, 3), 200_000)
    assert await read_all(blob_store, first[0]) == b"".join([c async for c in achunks(200_000, 3)])


async def test_empty_blob(blob_store: BlobStore) -> None:
    sha, size = await blob_store.put(from_list([]))
    assert (sha, size) == (sha256_of(b""), 0)
    assert await read_all(blob_store, sha) == b""


async def test_unknown_blob_is_not_found(blob_store: BlobStore) -> None:
    missing = sha256_of(b"never put")
    assert await blob_store.stat(missing) is None
    assert not await blob_store.exists(missing)
    with pytest.raises(BlobNotFound):
        await read_all(blob_store, missing)


async def test_a_failed_upload_commits_nothing(blob_store: BlobStore) -> None:
    with pytest.raises(Failing):
        await blob_store.put(failing_after(700_000))
    # What it would have been, had it finished: not there.
    assert not await blob_store.exists(digest_of(700_000))


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "A" * 64, "0" * 63, "0" * 64 + "\n"])
async def test_only_hex_digests_name_blobs(blob_store: BlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        check_sha256(bad)
    with pytest.raises(ValueError):
        await blob_store.stat(bad)


async def test_sixteen_mib_stream_in_and_out_in_bounded_memory(blob_store: BlobStore) -> None:
    size = 16 * MiB
    # Warm up: the first multipart upload loads boto3's transfer machinery (once per process).
    await blob_store.put(achunks(9 * MiB, seed=8))
    with peak_memory() as put_peak:
        sha, stored = await blob_store.put(achunks(size, seed=7))
    assert (sha, stored) == (digest_of(size, 7), size)
    h = hashlib.sha256()
    total = 0
    with peak_memory() as read_peak:
        async for chunk in blob_store.read(sha, 256 * 1024):
            h.update(chunk)
            total += len(chunk)
    assert (h.hexdigest(), total) == (sha, size)
    # Whole in memory would be 16 MiB; streamed it is a few batches. S3 adds botocore's reads
    # of 1 MiB blocks to sign each part in flight (measured ~4.6 MiB with two parts at once),
    # a constant, whatever the size of the blob.
    bound = size // 4 if isinstance(blob_store, FsBlobStore) else size * 3 // 8
    assert put_peak.growth < bound, put_peak.growth
    assert read_peak.growth < size // 4, read_peak.growth
