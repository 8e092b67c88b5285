"""The messages actors of one node send each other: small typed records, ``msgspec.Struct``s
(made in C: about 80 ns each, where a frozen dataclass took ~680 ns, a dozen of them per relayed
message)."""

from __future__ import annotations

from typing import Any

import msgspec


# -- to a user's mailbox actor -------------------------------------------------------------------
class Incoming(msgspec.Struct, frozen=True):
    sender: str
    id: str
    body: str
    group: str | None = None
    media: str | None = None
    # Set when the sender's connection cast this instead of calling (``_connection._send``):
    # no reply comes back, so a refusal is told to this connection as an `unavailable` frame.
    reply: Any = None


class IncomingBatch(msgspec.Struct, frozen=True):
    """Several ``Incoming`` for one mailbox in one call: a link frame's mail for this user
    (``_cluster.py``), so a crossing message costs no actor round trip of its own. The answer
    is a list with one bool per message: taken (False: refused, the store is behind)."""

    items: tuple[Incoming, ...]


class Attach(msgspec.Struct, frozen=True):
    conn: Any  # the connection actor's ref


class Detach(msgspec.Struct, frozen=True):
    conn: Any


class AckMail(msgspec.Struct, frozen=True):
    mids: tuple[str, ...]


class ReadMail(msgspec.Struct, frozen=True):
    mids: tuple[str, ...]


class Tick(msgspec.Struct, frozen=True):
    pass


class Release(msgspec.Struct, frozen=True):
    """Stop once everything queued before this is handled (a handover to another node,
    ``_cluster._release``): sends cast to the mailbox before it are taken, then stored by
    ``on_stop``, instead of dropped with the mailbox as by ``ref.stop()``."""


# -- to a connection actor (things to write to the socket) ---------------------------------------
class OutFrame(msgspec.Struct, frozen=True):
    text: str


class OutDeliver(msgspec.Struct, frozen=True):
    items: tuple[Any, ...]  # _queue.Item
    to: str


class OutAccepted(msgspec.Struct, frozen=True):
    ids: tuple[str, ...]
    # The receipt an ack gives the same sender at the same time, carried along: one message
    # (one wake-up of the connection) instead of two. ``Node.notify`` splits it for a link.
    receipt: OutReceipt | None = None


class OutReceipt(msgspec.Struct, frozen=True):
    status: str
    by: str
    ids: tuple[str, ...]
    group: str | None = None


class OutReceipts(msgspec.Struct, frozen=True):
    """Many receipts at once, (status, by, group, ids) each: a group actor gathers its
    members' receipts for one sender, so a big group's acks do not flood that connection."""

    items: tuple[tuple[str, str, str | None, tuple[str, ...]], ...]


class Kick(msgspec.Struct, frozen=True):
    """Close the connection with this WebSocket close code and reason."""

    code: int
    reason: str
