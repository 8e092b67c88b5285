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

import msgspec
from msgspec import Struct

__all__ = [
    "Accepting",
    "Control",
    "Dialing",
    "Frame",
    "LinkRefused",
    "MailItem",
    "NoteItem",
    "Opener",
    "PresenceItem",
    "Refusal",
    "Sealer",
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
