"""Test clients for the end-to-end node tests, and a checker of the wire contract.

Two independent WebSocket implementations speak to the node, so a bug shared by the server and
one client library cannot hide: ``Client`` (trio-websocket, for in-process async tests) and
``SyncClient`` (the ``websockets`` library's sync client, for subprocess nodes and threads).
``StalledClient`` logs in over a raw socket with ``websockets``' sans-I/O protocol and then
never reads again: the slow recipient of the bounded-memory tests.

Both real clients keep what they received in an ``Inbox``; tests wait on a predicate over it
(``until``), bounded in time, never on bare sleeps. Every frame is checked against
/work/shared/PROTOCOL.md (``check_frame``): exact keys, stable error codes. The parsing here is
plain ``json``, not ``actorchat.protocol``, so the node's encoder is checked from outside.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio
import trio_websocket
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.frames import Opcode
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

ERROR_CODES = frozenset(
    {
        "bad_frame",
        "unknown_type",
        "too_large",
        "not_authenticated",
        "bad_credentials",
        "user_exists",
        "no_such_user",
        "rate_limited",
        "unavailable",
        "not_member",
        "not_allowed",
        "no_such_group",
    }
)
# PROTOCOL.md, core frames: required keys and optional ones (anything else is a contract break).
SHAPES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "registered": (frozenset({"user"}), frozenset()),
    "welcome": (frozenset({"user", "token"}), frozenset()),
    "pong": (frozenset(), frozenset()),
    "accepted": (frozenset({"ids"}), frozenset()),
    "deliver": (frozenset({"messages"}), frozenset()),
    "receipt": (frozenset({"status", "by", "ids"}), frozenset({"group"})),
    "error": (frozenset({"code", "message", "ref"}), frozenset()),
    "typing": (frozenset({"from", "state"}), frozenset({"group"})),
    "group": (frozenset({"group", "name", "owner", "members"}), frozenset()),
    "group_removed": (frozenset({"group"}), frozenset()),
    "presence": (frozenset({"user", "status", "last_seen"}), frozenset()),
}
DELIVERY_KEYS = frozenset({"mid", "id", "from", "to", "body", "ts"})
DELIVERY_OPTIONAL = frozenset({"group", "media"})


class ProtocolViolation(AssertionError):
    pass


def check_frame(frame: Any) -> dict[str, Any]:
    """``frame`` as PROTOCOL.md writes it, or ``ProtocolViolation``."""
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolViolation(f"not a frame: {frame!r}")
    kind = frame["type"]
    if kind not in SHAPES:
        raise ProtocolViolation(f"unknown server frame type {kind!r}: {frame!r}")
    required, optional = SHAPES[kind]
    keys = set(frame) - {"type"}
    if not required <= keys or not keys <= required | optional:
        raise ProtocolViolation(f"{kind} frame with keys {sorted(keys)}: {frame!r}")
    if kind in ("accepted", "receipt") and not (
        frame["ids"] and all(isinstance(i, str) for i in frame["ids"])
    ):
        raise ProtocolViolation(f"bad ids: {frame!r}")
    if kind == "receipt" and frame["status"] not in ("delivered", "read"):
        raise ProtocolViolation(f"bad receipt status: {frame!r}")
    if kind == "error":
        if frame["code"] not in ERROR_CODES or not isinstance(frame["message"], str):
            raise ProtocolViolation(f"bad error frame: {frame!r}")
        if frame["ref"] is not None and not isinstance(frame["ref"], str):
            raise ProtocolViolation(f"bad error ref: {frame!r}")
    if kind == "presence" and (
        frame["status"] not in ("online", "offline")
        or not (frame["last_seen"] is None or isinstance(frame["last_seen"], float | int))
    ):
        raise ProtocolViolation(f"bad presence frame: {frame!r}")
    if kind == "deliver":
        if not frame["messages"]:
            raise ProtocolViolation("empty deliver frame")
        for item in frame["messages"]:
            keys = set(item)
            if not keys >= DELIVERY_KEYS or not keys <= DELIVERY_KEYS | DELIVERY_OPTIONAL:
                raise ProtocolViolation(f"deliver item with keys {sorted(keys)}: {item!r}")
            if not all(isinstance(item[k], str) for k in ("mid", "id", "from", "to", "body")):
                raise ProtocolViolation(f"deliver item field types: {item!r}")
            if not (isinstance(item["ts"], float | int) and math.isfinite(item["ts"])):
                raise ProtocolViolation(f"deliver item ts: {item!r}")
    return frame


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Closed:
    code: int | None
    reason: str


class ConnectionLost(Exception):
    """The node closed the connection while the test waited for something else."""

    def __init__(self, closed: Closed) -> None:
        super().__init__(f"connection closed: {closed}")
        self.closed = closed


class Inbox:
    """What one connection received, in order, plus the derived views tests look at."""

    def __init__(self, *, auto_ack: bool = True, auto_read: bool = False) -> None:
        self.auto_ack = auto_ack
        self.auto_read = auto_read
        self.frames: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []  # deliver items, as they came
        self.accepted: list[str] = []
        self.receipts: dict[str, list[tuple[str, str]]] = {"delivered": [], "read": []}
        self.errors: list[dict[str, Any]] = []
        self.refused: list[str] = []  # ids of sends answered `unavailable`: send them again
        self.user: str | None = None
        self.token: str | None = None
        self.closed: Closed | None = None

    def feed(self, text: str | bytes) -> list[dict[str, Any]]:
        """Take one server message; returns frames to send back (automatic acks)."""
        if not isinstance(text, str):
            raise ProtocolViolation("the node sent a binary frame")
        frame = check_frame(json.loads(text))
        self.frames.append(frame)
        kind = frame["type"]
        replies: list[dict[str, Any]] = []
        if kind == "deliver":
            self.deliveries.extend(frame["messages"])
            mids = [item["mid"] for item in frame["messages"]]
            if self.auto_ack:
                replies.append({"type": "ack", "mids": mids})
            if self.auto_read:
                replies.append({"type": "read", "mids": mids})
        elif kind == "accepted":
            self.accepted.extend(frame["ids"])
        elif kind == "receipt":
            self.receipts[frame["status"]].extend((frame["by"], i) for i in frame["ids"])
        elif kind == "error":
            self.errors.append(frame)
            if frame["code"] == "unavailable" and frame["ref"] is not None:
                self.refused.append(frame["ref"])
        elif kind == "welcome":
            self.user, self.token = frame["user"], frame["token"]
        return replies

    # -- views ------------------------------------------------------------------------------
    def delivered_ids(self, sender: str | None = None) -> list[str]:
        """Client ids of the deliveries (deduplicated by (from, id)), in arrival order."""
        seen: set[tuple[str, str]] = set()
        out = []
        for item in self.deliveries:
            key = (item["from"], item["id"])
            if key not in seen and (sender is None or item["from"] == sender):
                seen.add(key)
                out.append(item["id"])
        return out

    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.errors]

    def has_frame(self, kind: str) -> bool:
        return any(f["type"] == kind for f in self.frames)


# -- trio-websocket --------------------------------------------------------------------------
async def register_users(port: int, *names: str) -> None:
    """Register ``names`` (password ``pw``) over one connection to the node at ``port``."""
    async with Client.connect(port) as c:
        for name in names:
            await c.register(name)


class Client(Inbox):
    """A trio-websocket client for in-process tests."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, **options: Any) -> None:
        super().__init__(**options)
        self.ws = ws

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, port: int, **options: Any) -> AsyncIterator[Client]:
        async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/", max_message_size=64 * 1024 * 1024
        ) as ws:
            yield cls(ws, **options)

    async def send(self, **frame: Any) -> None:
        await self.ws.send_message(json.dumps(frame))

    async def _read_one(self) -> None:
        if self.closed is not None:
            raise ConnectionLost(self.closed)
        try:
            text = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            self.closed = Closed(e.reason.code, e.reason.reason or "")
            raise ConnectionLost(self.closed) from None
        for reply in self.feed(text):
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await self.send(**reply)

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Read frames until ``done()``; ``TooSlowError`` after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not done():
                await self._read_one()

    async def drain(self, seconds: float) -> None:
        """Read whatever comes for ``seconds`` (to check that nothing more arrives)."""
        with trio.move_on_after(seconds):
            while True:
                await self._read_one()

    async def wait_closed(self, timeout: float = 10.0) -> Closed:
        with trio.fail_after(timeout):
            while True:
                try:
                    await self._read_one()
                except ConnectionLost as e:
                    return e.closed

    async def expect_error(self, code: str, timeout: float = 10.0) -> dict[str, Any]:
        start = len(self.errors)
        await self.until(lambda: len(self.errors) > start, timeout)
        error = self.errors[start]
        assert error["code"] == code, error
        return error

    async def register(self, user: str, password: str = "pw") -> None:
        start = len(self.frames)
        await self.send(type="register", user=user, password=password)
        await self.until(lambda: len(self.frames) > start)
        assert self.frames[start] == {"type": "registered", "user": user}, self.frames[start]

    async def login(self, user: str, password: str = "pw", timeout: float = 10.0) -> str:
        start = len(self.frames)
        await self.send(type="login", user=user, password=password)
        await self.until(lambda: len(self.frames) > start, timeout)
        first = self.frames[start]
        assert first["type"] == "welcome" and first["user"] == user, first
        return first["token"]

    async def send_message(self, to: str, body: str, id: str | None = None) -> str:
        id = id or new_id()
        await self.send(type="send", id=id, to=to, body=body)
        return id

    def _answered(self, ids: list[str]) -> Callable[[], bool]:
        """A predicate: every one of ``ids`` sent from now on was accepted or refused."""
        waiting = set(ids)
        seen = [len(self.accepted), len(self.refused)]

        def answered() -> bool:
            waiting.difference_update(self.accepted[seen[0] :])
            waiting.difference_update(self.refused[seen[1] :])
            seen[:] = [len(self.accepted), len(self.refused)]
            return not waiting

        return answered

    async def send_until_accepted(
        self, to: str, messages: list[tuple[str, str]], timeout: float = 60.0
    ) -> int:
        """Send ``(id, body)`` pairs in order and, as a client must, send again every one the
        node refused (``unavailable``) until all are accepted. Returns how many were resent."""
        resent = 0
        bodies = dict(messages)
        pending = [id for id, _ in messages]
        with trio.fail_after(timeout):
            while pending:
                answered = self._answered(pending)
                for id in pending:
                    await self.send_message(to, bodies[id], id=id)
                await self.until(answered, timeout)
                accepted = set(self.accepted)
                pending = [id for id in pending if id not in accepted]
                resent += len(pending)
        return resent


# -- websockets (sync) -------------------------------------------------------------------------
class SyncClient(Inbox):
    """The ``websockets`` sync client: for subprocess nodes and plain (thread) code."""

    def __init__(self, ws: ClientConnection, **options: Any) -> None:
        super().__init__(**options)
        self.ws = ws

    @classmethod
    @contextlib.contextmanager
    def connect(cls, port: int, **options: Any) -> Iterator[SyncClient]:
        with connect(
            f"ws://127.0.0.1:{port}/", max_size=64 * 1024 * 1024, open_timeout=10,
            close_timeout=2,
        ) as ws:
            yield cls(ws, **options)

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def _read_one(self, timeout: float) -> bool:
        if self.closed is not None:
            raise ConnectionLost(self.closed)
        try:
            text = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        except WsClosed as e:
            rcvd = e.rcvd
            self.closed = Closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "")
            raise ConnectionLost(self.closed) from None
        for reply in self.feed(text):
            with contextlib.suppress(WsClosed):
                self.send(**reply)
        return True

    def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout} s")
            self._read_one(left)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read_one(left)

    def register(self, user: str, password: str = "pw") -> None:
        start = len(self.frames)
        self.send(type="register", user=user, password=password)
        self.until(lambda: len(self.frames) > start)
        assert self.frames[start] == {"type": "registered", "user": user}, self.frames[start]

    def login(self, user: str, password: str = "pw") -> str:
        start = len(self.frames)
        self.send(type="login", user=user, password=password)
        self.until(lambda: len(self.frames) > start)
        first = self.frames[start]
        assert first["type"] == "welcome" and first["user"] == user, first
        return first["token"]

    def send_message(self, to: str, body: str, id: str | None = None) -> str:
        id = id or new_id()
        self.send(type="send", id=id, to=to, body=body)
        return id


# -- a client that stops reading -----------------------------------------------------------------
class StalledClient:
    """Logs in over a raw socket (``websockets``' sans-I/O protocol), then never reads again,
    so the node's writes to it stall: the slow recipient. A small receive buffer makes the
    kernel's share of the backlog small too."""

    def __init__(self, port: int, user: str, password: str = "pw") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self._wait_for(lambda event: hasattr(event, "status_code"))
        self.protocol.send_text(
            json.dumps({"type": "login", "user": user, "password": password}).encode()
        )
        self._flush()
        welcome = self._wait_for(lambda event: getattr(event, "opcode", None) is Opcode.TEXT)
        frame = json.loads(welcome.data)
        assert frame["type"] == "welcome", frame

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _wait_for(self, match: Callable[[Any], bool]) -> Any:
        while True:
            for event in self.protocol.events_received():
                if match(event):
                    return event
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the node closed the connection during login")
            self.protocol.receive_data(data)

    def close(self) -> None:
        self.sock.close()
