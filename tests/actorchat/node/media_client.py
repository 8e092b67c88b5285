"""Plain HTTP for the media tests, with the standard library's ``http.client`` (independent of
the node's h11) and, for bodies the server refuses mid-way, a raw socket."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    sha256: str = ""
    size: int = 0
    chunks: list[int] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def pattern(size: int, seed: int = 1) -> Iterator[bytes]:
    """``size`` deterministic bytes in 64 KiB chunks, made as they are sent."""
    block = 64 * 1024
    made, n = 0, seed
    while made < size:
        n += 1
        step = min(block, size - made)
        yield (n.to_bytes(8, "little") * (block // 8))[:step]
        made += step


def digest(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    keep_body: bool = True,
) -> Reply:
    """One request; the reply's body is read in chunks and hashed (kept if ``keep_body``).
    An iterable body without a Content-Length header goes out chunked."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()})
        h = hashlib.sha256()
        kept = []
        while chunk := response.read(256 * 1024):
            h.update(chunk)
            reply.size += len(chunk)
            reply.chunks.append(len(chunk))
            if keep_body:
                kept.append(chunk)
        reply.body = b"".join(kept)
        reply.sha256 = h.hexdigest()
        return reply
    finally:
        conn.close()


def upload(port: int, token: str | None, data: bytes, mime: str | None = None) -> Reply:
    headers = {"Content-Type": mime} if mime else {}
    return request(port, "POST", "/media", token=token, body=data, headers=headers)


def fetch(port: int, token: str | None, media_id: str, **options: Any) -> Reply:
    return request(port, "GET", f"/media/{media_id}", token=token, **options)


def raw_exchange(port: int, head: bytes, body: Iterable[bytes] = ()) -> bytes:
    """Send a request head and as much of ``body`` as the server takes, then read the
    answer. The server may answer and close before the body is all sent (a 413): sending
    then fails, and what it answered is still read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def chunked(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Chunked transfer coding of ``chunks``."""
    for chunk in chunks:
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"
