"""Media over HTTP beside the WebSocket: ``POST /media`` and ``GET /media/M`` (issue 7).

- ``POST /media`` with ``Authorization: Bearer T`` streams the body into the blob store
  (``actorchat.blobs``) while hashing it, records an upload with a random id in the database,
  and answers ``201 {"media":M,"size":N,"sha256":H,"mime":TYPE}``. Over
  ``Settings.max_media_bytes``: ``413``, at once from ``Content-Length`` when the client sent
  one, else as soon as the streamed body passes the limit (nothing is kept of it).
- ``GET /media/M`` streams the blob back to whoever may fetch M (the uploader, and the
  recipients of accepted messages referring to M); to anyone else ``404``, exactly as for an
  id that does not exist.
- A ``send`` with ``media`` is accepted only from someone who may fetch M; the recipients'
  grants are committed before the message reaches a mailbox (``share_media``), so a recipient
  can always fetch what it is delivered. Groups call ``share_media``/``grant_media`` too.

Media ids are random (``secrets.token_urlsafe``), not the content hash: knowing the bytes of a
file grants nothing. The node's token signer is the only judge of a token.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import h11
import trio

from actorchat import protocol as p
from actorchat.auth import BadToken
from actorchat.blobs import BlobError, BlobStore, FsBlobStore, S3BlobStore
from actorchat.config import Settings
from actorchat.store import StoreUnavailable
from actorchat.store._media import MediaRow
from actorchat.store._schema import MEDIA_ID_MAX, MIME_MAX

from ._http import HttpRequest, HttpResponse, text

if TYPE_CHECKING:
    from ._node import Node

__all__ = [
    "MediaService",
    "grant_media",
    "install_media",
    "make_blob_store",
    "may_share",
    "share_media",
]

log = logging.getLogger("actorchat.media")

PREFIX = "/media"
DEFAULT_MIME = "application/octet-stream"
READ_CHUNK = 256 * 1024  # bytes per chunk of a download (one thread hop and one socket write)
# What we repeat back as a Content-Type: type/subtype and parameters, printable ASCII only.
_MIME = re.compile(r"\A[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+(?:\s*;[\x20-\x7e]*)?\Z")
_MEDIA_ID = re.compile(rf"\A[A-Za-z0-9_\-]{{1,{MEDIA_ID_MAX}}}\Z")


def make_blob_store(settings: Settings) -> BlobStore:
    """The blob store the settings choose (nothing is opened yet: the first use does)."""
    if settings.blob_store == "s3":
        assert settings.s3_bucket is not None  # Settings checks it
        return S3BlobStore(
            settings.s3_bucket, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    return FsBlobStore(settings.media_dir)


def new_media_id() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits, 32 characters


def valid_media_id(media_id: str) -> bool:
    """Pure: could this be a media id of ours (a cheap filter before the database)?"""
    return bool(_MEDIA_ID.match(media_id))


def upload_mime(headers: dict[str, str]) -> str | None:
    """Pure: the Content-Type to keep for an upload (a default when there is none), or None
    when it is not one we are willing to send back."""
    mime = headers.get("content-type", "").strip()
    if not mime:
        return DEFAULT_MIME
    if len(mime) > MIME_MAX or not _MIME.match(mime):
        return None
    return mime


def declared_length(headers: dict[str, str]) -> int | None:
    """Pure: the Content-Length the client declared (h11 has checked its syntax)."""
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _json(status: int, value: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(value).encode(), "application/json")


def _unauthorized(message: str) -> HttpResponse:
    response = text(401, message + "\n")
    response.headers.append(("www-authenticate", 'Bearer realm="actorchat"'))
    return response


NOT_FOUND = "no such media\n"


class MediaService:
    """The media routes of one node, and its blob store."""

    def __init__(self, node: Node, blobs: BlobStore) -> None:
        self.node = node
        self.blobs = blobs

    def bearer_user(self, headers: dict[str, str]) -> str | HttpResponse:
        """The user of the request's bearer token, or the 401 to answer."""
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized(
                "authorization required: send 'Authorization: Bearer T' with the token "
                "of your welcome frame"
            )
        try:
            return self.node.signer.verify(token.strip(), self.node.wall())
        except BadToken as e:
            return _unauthorized(f"bad token: {e}")

    async def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if path == PREFIX or path == PREFIX + "/":
            if request.method != "POST":
                return _not_allowed("POST")
            user = self.bearer_user(request.headers)
            return user if isinstance(user, HttpResponse) else await self.upload(request, user)
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD")
        user = self.bearer_user(request.headers)
        if isinstance(user, HttpResponse):
            return user
        return await self.fetch(path[len(PREFIX) + 1 :], user, head=request.method == "HEAD")

    async def upload(self, request: HttpRequest, user: str) -> HttpResponse:
        limit = self.node.settings.max_media_bytes
        declared = declared_length(request.headers)
        if declared is not None and declared > limit:
            # Before reading a byte of the body.
            self.node.metrics["media_too_large"] += 1
            return text(413, f"the body is over {limit} bytes\n")
        mime = upload_mime(request.headers)
        if mime is None:
            return text(400, f"bad Content-Type: at most {MIME_MAX} characters of type/subtype\n")
        await _continue(request)
        # BodyTooLarge from the body passes through put (which removes what it wrote) to the
        # HTTP server, which answers 413.
        try:
            sha256, size = await self.blobs.put(request.body(limit))
        except BlobError as e:
            log.error("media upload by %s failed: %s", user, e)
            return text(503, "the blob store is unavailable; try again\n")
        media_id = new_media_id()
        try:
            await self.node.store.read(
                "create_media", media_id, sha256, size, mime, user, self.node.wall()
            )
        except StoreUnavailable:
            # The blob stays (content-addressed: a retry reuses it); no id was handed out.
            return text(503, "storage is unavailable; try again\n")
        self.node.metrics["media_uploaded"] += 1
        return _json(201, {"media": media_id, "size": size, "sha256": sha256, "mime": mime})

    async def fetch(self, media_id: str, user: str, *, head: bool = False) -> HttpResponse:
        if not valid_media_id(media_id):
            return text(404, NOT_FOUND)
        try:
            row: MediaRow | None = await self.node.store.read("media_for", media_id, user)
        except StoreUnavailable:
            return text(503, "storage is unavailable; try again\n")
        if row is None:
            return text(404, NOT_FOUND)
        headers = [
            ("etag", f'"{row.sha256}"'),
            ("cache-control", "private, max-age=31536000, immutable"),
            ("x-content-type-options", "nosniff"),
        ]
        if head:
            return HttpResponse(200, _empty(), row.mime, headers, length=row.size)
        try:
            chunks = self.blobs.read(row.sha256, READ_CHUNK)
            # Pull the first chunk now: a missing blob or a store that is down is a 503
            # before any header goes out, not a truncated 200.
            first = await anext(chunks, b"")
        except BlobError as e:
            log.error("media %s (blob %s) cannot be read: %s", media_id, row.sha256, e)
            return text(503, "the blob store is unavailable; try again\n")
        self.node.metrics["media_fetched"] += 1
        return HttpResponse(200, _prepend(first, chunks), row.mime, headers, length=row.size)


async def _continue(request: HttpRequest) -> None:
    """Answer ``Expect: 100-continue`` (curl sends it for bodies over 1 MiB) once the request
    is acceptable, so the client sends its body now rather than after a wait; a refusal
    (401, 413) goes out instead and the body is never sent."""
    conn = request._conn
    if conn.they_are_waiting_for_100_continue:
        data = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
        if data:
            await request._stream.send_all(data)


def _not_allowed(allow: str) -> HttpResponse:
    response = text(405, "method not allowed\n")
    response.headers.append(("allow", allow))
    return response


async def _empty() -> AsyncIterator[bytes]:
    await trio.lowlevel.checkpoint()
    return
    yield b""  # an async generator that yields nothing


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


# -- for the send paths (1:1 here, groups in their own module) ------------------------------


async def may_share(node: Node, media_id: str, user: str) -> MediaRow | None:
    """The upload ``media_id`` if ``user`` may fetch (and so refer to) it, else None."""
    if not valid_media_id(media_id):
        return None
    return await node.store.read("media_for", media_id, user)


async def grant_media(node: Node, media_id: str, users: Iterable[str]) -> None:
    """Let ``users`` fetch ``media_id``; committed when this returns. No check of who asks:
    call ``may_share`` first, or use ``share_media``, which does both in one transaction."""
    await node.store.read("grant_media", media_id, list(users))


async def share_media(
    node: Node, sender: str, media: p.Media, users: Iterable[str]
) -> p.Media | None:
    """If ``sender`` may refer to ``media``, grant it to ``users`` (committed when this
    returns) and return the media object to deliver: the stored mime and size, whatever the
    client wrote. None if ``sender`` may not (the caller answers ``not_allowed``).
    Raises ``StoreUnavailable`` like any store call (the caller answers ``unavailable``)."""
    if not valid_media_id(media.id):
        return None
    row: MediaRow | None = await node.store.read("share_media", media.id, sender, list(users))
    if row is None:
        return None
    return p.Media(id=row.id, mime=row.mime, size=row.size)


def install_media(node: Node) -> MediaService:
    """Called from ``Node.__init__`` (``node.media``): the media routes and the blob store."""
    service = MediaService(node, make_blob_store(node.settings))
    node.add_route(PREFIX, service.handle)
    return service
