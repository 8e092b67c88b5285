"""Content-addressed blob storage for media: one small interface (``BlobStore``), a
filesystem store (the embedded default) and an S3-compatible one (``pip install
'actorchat[s3]'``). Streamed in and out: a blob is never whole in memory."""

from ._fs import FsBlobStore as FsBlobStore
from ._s3 import S3BlobStore as S3BlobStore
from ._s3 import boto3_missing as boto3_missing
from ._store import CHUNK_SIZE as CHUNK_SIZE
from ._store import BlobError as BlobError
from ._store import BlobNotFound as BlobNotFound
from ._store import BlobStat as BlobStat
from ._store import BlobStore as BlobStore
from ._store import BlobStoreUnavailable as BlobStoreUnavailable
from ._store import check_sha256 as check_sha256
from ._store import sha256_of as sha256_of

__all__ = [
    "CHUNK_SIZE",
    "BlobError",
    "BlobNotFound",
    "BlobStat",
    "BlobStore",
    "BlobStoreUnavailable",
    "FsBlobStore",
    "S3BlobStore",
    "boto3_missing",
    "check_sha256",
    "sha256_of",
]
