"""Fixtures of the actorchat tests that more than one directory uses.

``s3`` gives an S3-compatible server to test against: moto's server (``moto[server]``, in the
``test`` extra) run as a subprocess on a free 127.0.0.1 port for the whole session, with a
fresh bucket for each test, and the AWS environment variables pointing boto3 at it with dummy
credentials (and at no file of this machine's real configuration).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


class S3Target(NamedTuple):
    endpoint_url: str
    bucket: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on {port} within {timeout} s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server run for this session."""
    pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
    pytest.importorskip("boto3", reason="needs boto3 (the test or s3 extra)")
    for _attempt in range(3):  # the free port may be taken between the probe and the bind
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **S3_ENV},
        )
        try:
            _wait_listening(port, proc, timeout=30)
        except RuntimeError:
            proc.kill()
            proc.wait()
            continue
        break
    else:
        pytest.fail("could not start moto_server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Target:
    """A fresh bucket on the session's moto server; boto3's environment points at it."""
    import boto3

    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"media-{secrets.token_hex(6)}"
    boto3.session.Session().client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return S3Target(s3_server, bucket)
