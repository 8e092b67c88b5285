"""Blob store fixtures: ``blob_store`` runs a test once on each store (the filesystem in
``tmp_path``, S3 on the session's moto server with a fresh bucket)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # blob_helpers (importlib mode)

from actorchat.blobs import BlobStore, FsBlobStore, S3BlobStore


@pytest.fixture(params=["fs", "s3"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "fs":
        store: BlobStore = FsBlobStore(tmp_path / "media")
    else:
        s3 = request.getfixturevalue("s3")
        store = S3BlobStore(s3.bucket, endpoint_url=s3.endpoint_url, spool_dir=str(tmp_path))
    yield store
    await store.aclose()
