"""``S3BlobStore`` (``actorchat/blobs/_s3.py``) against moto's S3 server: multipart uploads,
one object per content, the local spool file removed, and clear errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import boto3
import pytest
from blob_helpers import Failing, MiB, achunks, digest_of, failing_after, from_list, read_all

from actorchat.blobs import BlobStoreUnavailable, S3BlobStore, boto3_missing, sha256_of


def objects(s3) -> dict[str, int]:
    client = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url)
    listed = client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


async def test_multipart_upload_in_parts(s3, tmp_path: Path) -> None:
    store = S3BlobStore(
        s3.bucket, endpoint_url=s3.endpoint_url, spool_dir=str(tmp_path), part_size=5 * MiB
    )
    size = 11 * MiB + 123  # three parts
    sha, stored = await store.put(achunks(size, seed=11))
    assert (sha, stored) == (digest_of(size, 11), size)
    assert objects(s3) == {f"blobs/{sha}": size}
    head = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url).head_object(
        Bucket=s3.bucket, Key=f"blobs/{sha}"
    )
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    data = await read_all(store, sha)
    assert len(data) == size and sha256_of(data) == sha
    assert list(tmp_path.iterdir()) == []  # the spool file is gone
    await store.aclose()


async def test_the_same_bytes_are_uploaded_once(s3, tmp_path: Path, monkeypatch) -> None:
    store = S3BlobStore(s3.bucket, endpoint_url=s3.endpoint_url, spool_dir=str(tmp_path))
    first = await store.put(from_list([b"same bytes"]))
    client = await store.client()

    def no_upload(*args, **kwargs):
        raise AssertionError("uploaded again")

    monkeypatch.setattr(client, "upload_file", no_upload)
    assert await store.put(from_list([b"same ", b"bytes"])) == first
    assert objects(s3) == {f"blobs/{first[0]}": 10}


async def test_a_failed_upload_leaves_no_object_nor_spool_file(s3, tmp_path: Path) -> None:
    store = S3BlobStore(s3.bucket, endpoint_url=s3.endpoint_url, spool_dir=str(tmp_path))
    with pytest.raises(Failing):
        await store.put(failing_after(300_000))
    assert objects(s3) == {}
    assert list(tmp_path.iterdir()) == []


async def test_a_missing_bucket_is_a_clear_error(s3, tmp_path: Path) -> None:
    store = S3BlobStore("no-such-bucket", endpoint_url=s3.endpoint_url, spool_dir=str(tmp_path))
    with pytest.raises(BlobStoreUnavailable, match="no-such-bucket"):
        await store.check()
    with pytest.raises(BlobStoreUnavailable):
        await store.put(from_list([b"x"]))
    assert list(tmp_path.iterdir()) == []
    await S3BlobStore(s3.bucket, endpoint_url=s3.endpoint_url).check()  # the real one answers


async def test_create_bucket_is_idempotent(s3) -> None:
    store = S3BlobStore("made-by-test", endpoint_url=s3.endpoint_url)
    await store.create_bucket()
    await store.create_bucket()
    await store.check()


def test_without_boto3_the_store_says_what_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real(name, *a)
    )
    assert "pip install 'actorchat[s3]'" in (boto3_missing() or "")
    with pytest.raises(RuntimeError, match="boto3"):
        S3BlobStore("bucket")
