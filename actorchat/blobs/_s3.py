"""``S3BlobStore``: blobs as objects of an S3-compatible bucket (AWS S3, MinIO, Ceph, moto).

boto3 is blocking, so every call runs in a worker thread (``trio.to_thread``); the trio loop
never waits on the network. boto3 is an optional dependency (``pip install 'actorchat[s3]'``),
imported only when this store is made.

An upload is streamed to a temporary file on local disk while it is hashed (the "temporary
object"; memory holds one batch at a time), then committed under ``<prefix><sha256>`` with
boto3's managed transfer: multipart in ``part_size`` parts read from the file part by part, so
memory stays bounded, and an S3 object appears only once complete. An object already under that
key holds the same bytes (it is named by their hash), so a second put of them uploads nothing.
Reads stream ``GetObject``'s body in chunks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import trio

from ._fs import spool
from ._store import CHUNK_SIZE, BlobNotFound, BlobStat, BlobStoreUnavailable, check_sha256

__all__ = ["S3BlobStore", "boto3_missing"]

PART_SIZE = 8 * 1024 * 1024


def boto3_missing() -> str | None:
    """Why the S3 store cannot be used here (boto3 not installed), or None."""
    import importlib.util

    if importlib.util.find_spec("boto3") is None:
        return "the s3 blob store needs boto3: pip install 'actorchat[s3]'"
    return None


def _is_not_found(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


class S3BlobStore:
    """Blobs in ``bucket`` under ``prefix``. Credentials come from boto3's usual chain
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "blobs/",
        spool_dir: str | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        if (why := boto3_missing()) is not None:
            raise RuntimeError(why)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.prefix = prefix
        self.spool_dir = spool_dir
        self.part_size = part_size
        self._client: Any = None
        self._lock = trio.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def key_of(self, sha256: str) -> str:
        return self.prefix + check_sha256(sha256)

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            # Path-style URLs work with every S3-compatible server (no bucket DNS names).
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )

    async def client(self) -> Any:
        """The boto3 client, made once (in a thread: loading its models takes a while).
        boto3 clients are thread-safe, so every worker thread shares it."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await trio.to_thread.run_sync(self._make_client)
        return self._client

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self.client()
        try:
            return await trio.to_thread.run_sync(fn, client, *args)
        except ClientError as e:
            if _is_not_found(e):
                raise BlobNotFound(what) from e
            raise BlobStoreUnavailable(f"S3 {what}: {e}") from e
        except (BotoCoreError, Boto3Error) as e:  # Boto3Error: S3UploadFailedError
            raise BlobStoreUnavailable(f"S3 {what}: {e}") from e

    async def create_bucket(self) -> None:
        """Make the bucket if it is not there (tests, first setup)."""

        def create(client: Any) -> None:
            try:
                client.head_bucket(Bucket=self.bucket)
            except Exception as e:
                if not _is_not_found(e):
                    raise
                client.create_bucket(Bucket=self.bucket)

        await self._call(f"create bucket {self.bucket}", create)

    async def check(self) -> None:
        """``BlobStoreUnavailable`` unless the bucket answers."""
        try:
            await self._call("head_bucket", lambda c: c.head_bucket(Bucket=self.bucket))
        except BlobNotFound:
            raise BlobStoreUnavailable(f"S3 bucket {self.bucket!r} does not exist") from None

    # -- writing ------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterable[bytes]) -> tuple[str, int]:
        try:
            fd, path = await trio.to_thread.run_sync(
                lambda: tempfile.mkstemp(suffix=".part", prefix="blob-", dir=self.spool_dir)
            )
        except OSError as e:
            raise BlobStoreUnavailable(f"cannot make a spool file: {e}") from e
        file = os.fdopen(fd, "wb")
        try:
            digest = hashlib.sha256()
            size = 0
            size = await spool(chunks, file, digest)
            await trio.to_thread.run_sync(file.close)
            sha256 = digest.hexdigest()
            await self._call(f"put {sha256}", self._upload, path, self.key_of(sha256))
            return sha256, size
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_discard, file, path)

    def _upload(self, client: Any, path: str, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        try:
            client.head_object(Bucket=self.bucket, Key=key)
            return  # the same bytes are there already
        except Exception as e:
            if not _is_not_found(e):
                raise
        config = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=2,
        )
        client.upload_file(path, self.bucket, key, Config=config)

    # -- reading ------------------------------------------------------------------------------
    async def read(self, sha256: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        key = self.key_of(sha256)
        response = await self._call(
            f"get {sha256}", lambda c: c.get_object(Bucket=self.bucket, Key=key)
        )
        body = response["Body"]
        try:
            while True:
                try:
                    chunk = await trio.to_thread.run_sync(body.read, chunk_size)
                except Exception as e:  # the connection broke mid-object
                    raise BlobStoreUnavailable(f"S3 get {sha256}: {e}") from e
                if not chunk:
                    return
                yield chunk
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(body.close)

    async def stat(self, sha256: str) -> BlobStat | None:
        key = self.key_of(sha256)
        try:
            head = await self._call(
                f"head {sha256}", lambda c: c.head_object(Bucket=self.bucket, Key=key)
            )
        except BlobNotFound:
            return None
        return BlobStat(sha256, int(head["ContentLength"]))

    async def exists(self, sha256: str) -> bool:
        return await self.stat(sha256) is not None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await trio.to_thread.run_sync(client.close)
        else:
            await trio.lowlevel.checkpoint()


def _discard(file: Any, path: str) -> None:
    file.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
