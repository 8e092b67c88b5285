"""``FsBlobStore`` (``actorchat/blobs/_fs.py``): the layout on disk, and that a failed or
cancelled upload leaves nothing behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
from blob_helpers import Failing, achunks, digest_of, failing_after, from_list

from actorchat.blobs import BlobStoreUnavailable, FsBlobStore, sha256_of


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


async def test_a_blob_is_one_file_named_by_its_hash(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    sha, _ = await store.put(from_list([b"abc"]))
    await store.put(from_list([b"a", b"bc"]))  # the same bytes: nothing new
    assert sha == sha256_of(b"abc")
    assert files_under(tmp_path) == [f"blobs/{sha[:2]}/{sha}"]
    assert (tmp_path / "blobs" / sha[:2] / sha).read_bytes() == b"abc"


async def test_a_failed_upload_leaves_no_file(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    with pytest.raises(Failing):
        await store.put(failing_after(600_000))  # over one write batch: some was written
    assert files_under(tmp_path) == []


async def test_a_cancelled_upload_leaves_no_file(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    started = trio.Event()

    async def slow():
        async for chunk in achunks(1_000_000):
            yield chunk
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.put, slow())
        await started.wait()
        assert len(files_under(tmp_path / "tmp")) == 1  # the upload in progress
        nursery.cancel_scope.cancel()
    assert files_under(tmp_path) == []


async def test_stale_partial_uploads_are_swept_at_first_use(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    stale = tmp_path / "tmp" / "old.part"
    fresh = tmp_path / "tmp" / "fresh.part"  # perhaps another node's upload in progress
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    await FsBlobStore(tmp_path).put(from_list([b"z"]))
    assert not stale.exists() and fresh.exists()


async def test_large_upload_is_written_in_batches(tmp_path: Path) -> None:
    store = FsBlobStore(tmp_path)
    sha, size = await store.put(achunks(3_000_000, seed=5))
    assert (sha, size) == (digest_of(3_000_000, 5), 3_000_000)
    assert (tmp_path / "blobs" / sha[:2] / sha).stat().st_size == size


async def test_unusable_directory_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = FsBlobStore(tmp_path / "file" / "media")
    with pytest.raises(BlobStoreUnavailable):
        await store.put(from_list([b"x"]))
