"""The link between two nodes, sans-I/O: the handshake that proves the shared cluster secret,
and the sealed frames that follow it.

Nothing here touches a socket or a clock, so every rule is tested on bytes
(``tests/actorchat/cluster/test_link.py``):

* Handshake (three messages, binary). The acceptor sends a fresh challenge; the dialer answers
  with its name, incarnation, its own nonce and an HMAC over both nonces and its identity; the
  acceptor answers with an HMAC over both nonces. Each side has then proved it holds the secret
  without sending it, and a recorded handshake cannot be replayed (the challenge is fresh).
* Frames. Every frame after the handshake is ``seq (8 bytes) | HMAC-SHA256(session key, seq |
  payload) (32 bytes) | payload`` with ``seq`` counting up from 1, the session key derived from
  both nonces. A frame with a wrong MAC, a repeated, skipped or reordered ``seq``, or a payload
  that is not a valid ``Frame`` is refused (``LinkRefused``): the link is closed, nothing in it
  is acted on. So nothing that lacks the secret can join or inject mail.
* Payloads are msgpack (msgspec Structs, arrays for compactness) and are validated in the same
  step as they are decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import Struct

__all__ = [
    "Accepting",
    "Control",
    "Dialing",
    "Frame",
    "Lanes",
    "LinkRefused",
    "MailItem",
    "NoteItem",
    "Opener",
    "PresenceItem",
    "Refusal",
    "Sealer",
    "by_recipient_in_order",
    "coalesce_notes",
    "fill_frame",
    "item_bytes",
]

CHALLENGE_TAG = b"actorchat-link-1:"
NONCE_BYTES = 16
MAC_BYTES = 32
_SEQ = struct.Struct(">Q")
HEADER_BYTES = _SEQ.size + MAC_BYTES


class LinkRefused(Exception):
    """The other end failed the handshake, or sent a frame that is not authentic or valid."""


# -- payloads --------------------------------------------------------------------------------
class MailItem(Struct, array_like=True, frozen=True):
    """A ``send`` crossing to the node that owns the recipient's mailbox; with ``group``, a
    group's copy for member ``to``. ``to`` = ``"group:<id>"``: a client's group frame (``body``,
    its JSON) for the node that hosts the group's actor."""

    sender: str
    id: str
    to: str
    body: str
    group: str | None = None
    media: str | None = None


class NoteItem(Struct, array_like=True, frozen=True):
    """Something to tell a user connected on the receiving node: ``accepted`` (``ids``),
    ``receipt`` (``status``, ``by``, ``ids``, ``group`` for a group's copy) or ``frame``
    (``text``, sent as is). To the group actor of ``group`` on the receiving node, about
    copies of ``user``'s messages held by member ``by``: ``group_safe`` (acked or stored)
    and ``group_receipt`` (``status``)."""

    user: str
    kind: str
    ids: list[str] = []
    status: str | None = None
    by: str | None = None
    text: str | None = None
    group: str | None = None


class Refusal(Struct, array_like=True, frozen=True):
    """A mail item the receiving node did not take: ``moved`` (it does not own ``to``) or
    ``unavailable`` (the mailbox sheds load). The sender hears ``unavailable``."""

    sender: str
    id: str
    to: str
    code: str


class Control(Struct, array_like=True, frozen=True):
    """``release`` (hand ``user`` over to ``node``/``inc``; answered by ``released`` with the
    same ``req``), ``released``, ``moved`` (``user`` is now owned by ``node``)."""

    kind: str
    req: int = 0
    user: str = ""
    node: str = ""
    inc: int = 0
    ok: bool = False


class PresenceItem(Struct, array_like=True, frozen=True):
    """A user of the sending node came ``online`` there (since ``at``) or went ``offline``
    (after its grace, last seen ``at``). On a new link the sender first sends ``reset``, its
    online users, then ``synced``: users it reported before and not since are offline."""

    user: str
    status: str
    at: float = 0.0


class Frame(Struct, array_like=True, frozen=True):
    """One link frame: what the sending node had queued for the receiving one. The receiver
    handles ``mail`` in order, then ``notes``, ``refused``, ``control`` and ``presence``."""

    mail: list[MailItem] = []
    notes: list[NoteItem] = []
    refused: list[Refusal] = []
    control: list[Control] = []
    presence: list[PresenceItem] = []


def by_recipient_in_order(mail: list[MailItem]) -> dict[str, list[MailItem]]:
    """A frame's mail split by recipient (``to``), each recipient's items in frame order:
    what one mailbox call per recipient takes, keeping the order of every sender's mail."""
    out: dict[str, list[MailItem]] = {}
    for item in mail:
        items = out.get(item.to)
        if items is None:
            out[item.to] = [item]
        else:
            items.append(item)
    return out


def _utf8(text: str | None) -> int:
    if text is None:
        return 0
    return len(text) if text.isascii() else len(text.encode())


def item_bytes(item: Any) -> int:
    """About what ``item`` adds to an encoded frame (at least that much: each field's UTF-8
    bytes plus room for msgpack's headers), so the writer can keep a frame within what the
    peer's gateway takes (``max_message_size``)."""
    kind = type(item)
    if kind is MailItem:
        return (_utf8(item.body) + _utf8(item.media) + _utf8(item.group) + _utf8(item.sender)
                + _utf8(item.id) + _utf8(item.to) + 24)
    if kind is NoteItem:
        return (_utf8(item.text) + _utf8(item.user) + _utf8(item.kind) + _utf8(item.status)
                + _utf8(item.by) + _utf8(item.group) + sum(_utf8(i) + 5 for i in item.ids) + 48)
    if kind is PresenceItem:
        return _utf8(item.user) + _utf8(item.status) + 32
    if kind is Refusal:
        return _utf8(item.sender) + _utf8(item.id) + _utf8(item.to) + _utf8(item.code) + 32
    return _utf8(item.user) + _utf8(item.node) + _utf8(item.kind) + 48  # Control


def fill_frame(
    first: Any, more: Callable[[], Any], budget: int, limit: int
) -> tuple[list[Any], Any]:
    """The items of the next frame: ``first`` (None: none) and then ``more()`` until it
    returns None, ``limit`` items, or the next item would take the frame past ``budget``
    bytes (``item_bytes``). Returns them and that next item (None if there is none), which
    opens the following frame; an item bigger than ``budget`` goes alone."""
    batch = [] if first is None else [first]
    size = 0 if first is None else item_bytes(first)
    while len(batch) < limit:
        item = more()
        if item is None:
            break
        size += item_bytes(item)
        if size > budget:
            return batch, item
        batch.append(item)
    return batch, None


class Lanes:
    """The mail a link brought, one lane per recipient, so that reading the link never waits
    for a mailbox: ``put`` queues a frame's mail and names the lanes to start; a lane's task
    loops on ``take`` (all its recipient's items queued so far, in order: one mailbox call)
    until ``take`` returns None, which ends the lane (test and end in one step: an item put
    later starts a new lane). One task per recipient keeps each pair's order; different
    recipients' calls overlap; ``queued`` counts items taken or waiting, for back-pressure."""

    def __init__(self) -> None:
        self._lanes: dict[str, list[MailItem]] = {}
        self.queued = 0

    def put(self, mail: list[MailItem]) -> list[str]:
        new: list[str] = []
        for to, items in by_recipient_in_order(mail).items():
            lane = self._lanes.get(to)
            if lane is None:
                self._lanes[to] = items
                new.append(to)
            else:
                lane.extend(items)
        self.queued += len(mail)
        return new

    def take(self, to: str) -> list[MailItem] | None:
        items = self._lanes[to]
        if not items:
            del self._lanes[to]
            return None
        self._lanes[to] = []
        return items

    def done(self, count: int) -> None:
        self.queued -= count


_MERGED = frozenset({"accepted", "receipt", "group_safe", "group_receipt"})


def coalesce_notes(notes: list[NoteItem]) -> list[NoteItem]:
    """Notes of one frame with the same user, kind, status, ``by`` and group become one note
    with all their ids (in order), at the place of the first: each mailbox reports its acks
    and receipts per sender, and a busy link gathers many such notes for the same sender.
    ``frame`` notes (an error text) stay as they are, in place."""
    if len(notes) < 2:
        return notes
    out: list[NoteItem] = []
    merged: dict[tuple[str, str, str | None, str | None, str | None], list[str]] = {}
    for note in notes:
        if note.kind not in _MERGED:
            out.append(note)
            continue
        key = (note.user, note.kind, note.status, note.by, note.group)
        ids = merged.get(key)
        if ids is None:
            ids = merged[key] = list(note.ids)
            out.append(NoteItem(note.user, note.kind, ids, note.status, note.by, group=note.group))
        else:
            ids.extend(note.ids)
    return out


_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(Frame)


class _Hello(Struct, array_like=True, frozen=True):
    node: str
    inc: int
    nonce: bytes
    mac: bytes


_hello_decoder = msgspec.msgpack.Decoder(_Hello)


def _mac(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(_SEQ.pack(len(part)))  # length-prefixed: no ambiguity between parts
        h.update(part)
    return h.digest()


def _session_key(secret: bytes, challenge: bytes, nonce: bytes) -> bytes:
    return _mac(secret, b"session", challenge, nonce)


# -- the handshake ---------------------------------------------------------------------------
class Accepting:
    """The acceptor's side: ``challenge()`` to send, then ``check_hello(data)`` (raises
    ``LinkRefused``) returns the answer to send; then ``opener()``."""

    def __init__(self, secret: bytes, nonce: bytes | None = None) -> None:
        self._secret = secret
        self._nonce = nonce or os.urandom(NONCE_BYTES)
        self.peer: tuple[str, int] | None = None
        self._their_nonce: bytes | None = None

    def challenge(self) -> bytes:
        return CHALLENGE_TAG + self._nonce

    def check_hello(self, data: bytes | str) -> bytes:
        if not isinstance(data, bytes):
            raise LinkRefused("the hello is not a binary message")
        try:
            hello = _hello_decoder.decode(data)
        except msgspec.DecodeError as e:
            raise LinkRefused(f"malformed hello: {e}") from None
        expected = _mac(
            self._secret, b"dial", self._nonce, hello.nonce, hello.node.encode(),
            str(hello.inc).encode(),
        )
        if len(hello.nonce) != NONCE_BYTES or not hmac.compare_digest(expected, hello.mac):
            raise LinkRefused(f"{hello.node!r} does not hold the cluster secret")
        self.peer = (hello.node, hello.inc)
        self._their_nonce = hello.nonce
        return _mac(self._secret, b"accept", self._nonce, hello.nonce)

    def opener(self) -> Opener:
        assert self._their_nonce is not None, "check_hello first"
        return Opener(_session_key(self._secret, self._nonce, self._their_nonce))


class Dialing:
    """The dialer's side: ``hello(challenge)`` to send, ``check_answer(data)`` (raises
    ``LinkRefused``), then ``sealer()``."""

    def __init__(self, secret: bytes, node: str, inc: int, nonce: bytes | None = None) -> None:
        self._secret = secret
        self.node, self.inc = node, inc
        self._nonce = nonce or os.urandom(NONCE_BYTES)
        self._challenge: bytes | None = None

    def hello(self, challenge: bytes | str) -> bytes:
        if (
            not isinstance(challenge, bytes)
            or not challenge.startswith(CHALLENGE_TAG)
            or len(challenge) != len(CHALLENGE_TAG) + NONCE_BYTES
        ):
            raise LinkRefused("the peer's challenge is not an actorchat link challenge")
        self._challenge = challenge[len(CHALLENGE_TAG) :]
        mac = _mac(
            self._secret, b"dial", self._challenge, self._nonce, self.node.encode(),
            str(self.inc).encode(),
        )
        return _encoder.encode(_Hello(self.node, self.inc, self._nonce, mac))

    def check_answer(self, data: bytes | str) -> None:
        assert self._challenge is not None, "hello first"
        expected = _mac(self._secret, b"accept", self._challenge, self._nonce)
        if not isinstance(data, bytes) or not hmac.compare_digest(expected, data):
            raise LinkRefused("the peer does not hold the cluster secret")

    def sealer(self) -> Sealer:
        assert self._challenge is not None, "hello first"
        return Sealer(_session_key(self._secret, self._challenge, self._nonce))


# -- frames ----------------------------------------------------------------------------------
class Sealer:
    """Seals the frames of one link, in order."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.seq = 0

    def seal(self, frame: Frame) -> bytes:
        self.seq += 1
        payload = _encoder.encode(frame)
        seq = _SEQ.pack(self.seq)
        return seq + hmac.new(self._key, seq + payload, hashlib.sha256).digest() + payload


class Opener:
    """Opens the frames of one link: authentic, in order, each once, and valid."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.seq = 0

    def open(self, data: bytes | str) -> Frame:
        if not isinstance(data, bytes) or len(data) < HEADER_BYTES:
            raise LinkRefused("not a sealed link frame")
        seq_bytes, mac, payload = data[:8], data[8:HEADER_BYTES], data[HEADER_BYTES:]
        expected = hmac.new(self._key, seq_bytes + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise LinkRefused("a link frame failed its MAC (forged or corrupted)")
        (seq,) = _SEQ.unpack(seq_bytes)
        if seq != self.seq + 1:
            raise LinkRefused(f"link frame {seq} out of order (expected {self.seq + 1})")
        try:
            frame = _frame_decoder.decode(payload)
        except msgspec.DecodeError as e:
            raise LinkRefused(f"malformed link frame: {e}") from None
        self.seq = seq
        return frame
