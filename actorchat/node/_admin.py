"""The admin listener: the live supervision tree as JSON, for ``python -m actorchat tree``.

A second listening socket, apart from the public port, on ``--admin-host`` (loopback unless
told otherwise) and ``--admin-port`` (off when unset). Every request needs
``Authorization: Bearer <--admin-token>``; without it the answer is 401 and nothing else.

``GET /admin/tree[?max_children=N]``: ``{"node": name, "tree": TreeSnapshot.to_dict()}``; a
supervisor with more than N children (a node has one actor per user) lists the first N and
says how many it left out (``"omitted"``). N=0 lists them all.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio
from trio_websocket import WebSocketRequest

import supervisors as sv

from ._http import HttpRequest, HttpResponse, HttpServer

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.admin")

DEFAULT_MAX_CHILDREN = 100


def authorized(headers: dict[str, str], token: str) -> bool:
    """Pure: does the request carry ``Authorization: Bearer <token>``? (constant time)"""
    scheme, _, given = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def limit_children(tree: dict[str, Any], max_children: int) -> dict[str, Any]:
    """Pure: the tree (as ``TreeSnapshot.to_dict()``) with at most ``max_children`` children
    listed under each node (0: no limit) and ``omitted`` saying how many were left out."""
    children = tree.get("children", [])
    out = dict(tree)
    if max_children and len(children) > max_children:
        out["omitted"] = len(children) - max_children
        children = children[:max_children]
    out["children"] = [limit_children(c, max_children) for c in children]
    return out


def _json(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    body = (json.dumps(value) + "\n").encode()
    return HttpResponse(status, body, "application/json", headers or [])


class AdminActor(sv.Actor):
    """Serves the admin endpoint while it runs (a child of the node's tree)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._up = trio.Event()

    async def on_start(self) -> None:
        self.start_task(self._serve)
        await self._up.wait()

    async def _serve(self) -> None:
        settings = self.node.settings
        assert settings.admin_port is not None
        server = HttpServer(self._websocket, self.handle, max_message_size=1024)
        await server.serve(
            settings.admin_host, settings.admin_port, task_status=_Started(self._started)
        )

    def _started(self, server: HttpServer) -> None:
        self.node.admin_port = server.port
        log.info(
            "admin endpoint on http://%s:%s/admin/tree", self.node.settings.admin_host,
            server.port,
        )
        self._up.set()

    async def _websocket(self, request: WebSocketRequest, scope: trio.CancelScope) -> None:
        await request.reject(404)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        node = self.node
        token = node.settings.admin_token
        if token is None or not authorized(request.headers, token):
            return _json(
                401,
                {"error": "unauthorized", "message": "send Authorization: Bearer <admin token>"},
                [("www-authenticate", 'Bearer realm="actorchat admin"')],
            )
        if request.path != "/admin/tree":
            return _json(404, {"error": "not_found", "message": "GET /admin/tree"})
        if request.method != "GET":
            return _json(405, {"error": "method_not_allowed", "message": "GET /admin/tree"},
                         [("allow", "GET")])
        query = parse_qs(request.target.partition("?")[2])
        try:
            max_children = int(query.get("max_children", [str(DEFAULT_MAX_CHILDREN)])[0])
        except ValueError:
            return _json(400, {"error": "bad_request", "message": "max_children: an integer"})
        if node.sup is None:
            return _json(503, {"error": "starting", "message": "the tree is not up yet"})
        tree = limit_children(node.sup.snapshot().to_dict(), max(max_children, 0))
        return _json(200, {"node": node.settings.node_name, "tree": tree})


class _Started:
    def __init__(self, on_started: Any) -> None:
        self.on_started = on_started

    def started(self, value: Any = None) -> None:
        self.on_started(value)


def admin_children(node: Node) -> list[sv.ChildSpec]:
    """The admin listener's child spec, when ``--admin-port`` is set."""
    if node.settings.admin_port is None:
        return []
    return [sv.ChildSpec("admin", AdminActor, (node,), shutdown=2.0)]
