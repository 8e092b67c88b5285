"""The messages actors of one node send each other: small typed records with ``__slots__``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# -- to a user's mailbox actor -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Incoming:
    sender: str
    id: str
    body: str
    group: str | None = None
    media: str | None = None


@dataclass(frozen=True, slots=True)
class Attach:
    conn: Any  # the connection actor's ref


@dataclass(frozen=True, slots=True)
class Detach:
    conn: Any


@dataclass(frozen=True, slots=True)
class AckMail:
    mids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadMail:
    mids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    pass


# -- to a connection actor (things to write to the socket) ---------------------------------------
@dataclass(frozen=True, slots=True)
class OutFrame:
    text: str


@dataclass(frozen=True, slots=True)
class OutDeliver:
    items: tuple[Any, ...]  # _queue.Item
    to: str


@dataclass(frozen=True, slots=True)
class OutAccepted:
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutReceipt:
    status: str
    by: str
    ids: tuple[str, ...]
    group: str | None = None


@dataclass(frozen=True, slots=True)
class OutReceipts:
    """Many receipts at once, (status, by, group, ids) each: a group actor gathers its
    members' receipts for one sender, so a big group's acks do not flood that connection."""

    items: tuple[tuple[str, str, str | None, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Kick:
    """Close the connection with this WebSocket close code and reason."""

    code: int
    reason: str
