"""The pure parts of ``actorchat/node/_media.py`` and the blob store settings; the routes
themselves are tested end to end in ``test_e2e_media.py``."""

from __future__ import annotations

import importlib.util

import pytest

from actorchat.blobs import FsBlobStore, S3BlobStore
from actorchat.config import Settings, SettingsError, parse_settings
from actorchat.node._media import (
    DEFAULT_MIME,
    declared_length,
    make_blob_store,
    new_media_id,
    upload_mime,
    valid_media_id,
)

SECRET = b"s" * 32


def test_media_ids_are_random_and_url_safe() -> None:
    ids = {new_media_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(valid_media_id(m) and len(m) == 32 for m in ids)


@pytest.mark.parametrize("bad", ["", "a/b", "../x", "x" * 65, "a b", "é"])
def test_what_cannot_be_a_media_id(bad: str) -> None:
    assert not valid_media_id(bad)


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (None, DEFAULT_MIME),
        ("", DEFAULT_MIME),
        ("image/png", "image/png"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ("application/vnd.example+json", "application/vnd.example+json"),
        ("nonsense", None),
        ("text/html\x7f", None),
        ("a/" + "b" * 300, None),
    ],
)
def test_upload_mime(header: str | None, kept: str | None) -> None:
    headers = {} if header is None else {"content-type": header}
    assert upload_mime(headers) == kept


def test_declared_length() -> None:
    assert declared_length({}) is None
    assert declared_length({"content-length": "17"}) == 17


def test_the_settings_choose_the_blob_store(tmp_path) -> None:
    fs = make_blob_store(Settings(secret=SECRET, media_dir=str(tmp_path)))
    assert isinstance(fs, FsBlobStore) and fs.root == tmp_path
    s3 = make_blob_store(
        Settings(secret=SECRET, blob_store="s3", s3_bucket="b", s3_endpoint_url="http://h:1")
    )
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.endpoint_url) == ("b", "http://h:1")


def test_blob_store_settings_from_the_environment() -> None:
    settings = parse_settings(
        [],
        {
            "ACTORCHAT_BLOB_STORE": "S3",
            "ACTORCHAT_S3_BUCKET": "media",
            "ACTORCHAT_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "ACTORCHAT_S3_REGION": "eu-west-1",
        },
    )
    assert (settings.blob_store, settings.s3_bucket) == ("s3", "media")
    assert (settings.s3_endpoint_url, settings.s3_region) == ("http://127.0.0.1:9000", "eu-west-1")


def test_bad_blob_store_settings_are_clear(capsys, monkeypatch) -> None:
    with pytest.raises(SettingsError, match="blob_store"):
        Settings(secret=SECRET, blob_store="ftp")
    with pytest.raises(SettingsError, match="s3-bucket"):
        Settings(secret=SECRET, blob_store="s3")
    with pytest.raises(SystemExit):
        parse_settings(["--blob-store", "s3"], {})
    assert "--s3-bucket" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real(name, *a)
    )
    with pytest.raises(SystemExit):
        parse_settings(["--blob-store", "s3", "--s3-bucket", "b"], {})
    assert "pip install 'actorchat[s3]'" in capsys.readouterr().err
