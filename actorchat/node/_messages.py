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
    # Set when the sender's connection cast this instead of calling (``_connection._send``):
    # no reply comes back, so a refusal is told to this connection as an `unavailable` frame.
    reply: Any = None


@dataclass(frozen=True, slots=True)
class IncomingBatch:
    """Several ``Incoming`` for one mailbox in one call: a link frame's mail for this user
    (``_cluster.py``), so a crossing message costs no actor round trip of its own. The answer
    is a list with one bool per message: taken (False: refused, the store is behind)."""

    items: tuple[Incoming, ...]


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


@dataclass(frozen=True, slots=True)
class Release:
    """Stop once everything queued before this is handled (a handover to another node,
    ``_cluster._release``): sends cast to the mailbox before it are taken, then stored by
    ``on_stop``, instead of dropped with the mailbox as by ``ref.stop()``."""


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
    # The receipt an ack gives the same sender at the same time, carried along: one message
    # (one wake-up of the connection) instead of two. ``Node.notify`` splits it for a link.
    receipt: OutReceipt | None = None


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
