"""The chat page: ``GET /`` is the page, ``GET /app/...`` its CSS and JavaScript modules.

The files are package data (``actorchat/web/``), read once when the node starts and served
from memory: a fixed set of names, so no request path ever reaches the filesystem. The page is
a client like any other: it speaks docs/protocol.md over a WebSocket to the same host and port,
and uses ``/media`` for pictures. Responses carry a Content-Security-Policy that lets the page
load only its own files, connect only to its own host (HTTP for media, ws/wss for the socket)
and show images only from itself or from ``blob:`` URLs (media fetched with the bearer token).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from ._http import HttpRequest, HttpResponse, text

if TYPE_CHECKING:
    from ._node import Node

PAGE = "index.html"
ASSETS_PREFIX = "/app"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# A Host header we are willing to repeat in the policy: a name or an IPv4/IPv6 address and an
# optional port. Anything else (it is the client's text) falls back to 'self' alone, which
# CSP level 3 browsers also apply to ws/wss on the same host.
_HOST = re.compile(r"\A(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?\Z")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def content_security_policy(host: str | None) -> str:
    """Pure: the policy for a page served to a request with this Host header."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob: data:",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def load_assets() -> dict[str, Asset]:
    """Every servable file under ``actorchat/web/``, by its URL path (``/app/js/main.js``);
    the page itself also at ``/``."""
    root = resources.files("actorchat") / "web"
    assets: dict[str, Asset] = {}

    def walk(directory: resources.abc.Traversable, prefix: str) -> None:
        for entry in directory.iterdir():
            name = entry.name
            if entry.is_dir():
                walk(entry, f"{prefix}/{name}")
                continue
            suffix = name[name.rfind(".") :] if "." in name else ""
            content_type = CONTENT_TYPES.get(suffix)
            if content_type is None:
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[f"{prefix}/{name}"] = Asset(body, content_type, etag)

    if root.is_dir():
        walk(root, ASSETS_PREFIX)
    page = assets.get(f"{ASSETS_PREFIX}/{PAGE}")
    if page is not None:
        assets["/"] = page
    return assets


class WebPage:
    """The handler of ``/`` and ``/app/...`` (``Node.add_route``)."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            response = text(405, "method not allowed\n")
            response.headers.append(("allow", "GET, HEAD"))
            return response
        asset = self.assets.get(request.path)
        if asset is None:
            return text(404, "not found\n")
        headers = [
            ("etag", asset.etag),
            # Revalidate every time (cheap with the etag): a new version of the node is seen
            # at the next load, never a stale mix of old and new modules.
            ("cache-control", "no-cache"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ]
        if asset.content_type.startswith("text/html"):
            headers.append(
                ("content-security-policy", content_security_policy(request.headers.get("host")))
            )
        if asset.etag in _etags(request.headers.get("if-none-match", "")):
            return HttpResponse(304, b"", asset.content_type, headers)
        if request.method == "HEAD":
            # h11 sends no body to a HEAD request; an empty body keeps its framing consistent.
            return HttpResponse(200, b"", asset.content_type, headers)
        return HttpResponse(200, asset.body, asset.content_type, headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def install_web(node: Node) -> None:
    """Serve the chat page from this node (called once from ``Node.__init__``)."""
    handler = WebPage(load_assets())
    node.add_route("/", handler)
    node.add_route(ASSETS_PREFIX, handler)
