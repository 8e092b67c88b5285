"""The frames of protocol v1 as typed msgspec Structs: decoding *is* validation.

Client frames form one tagged union (`ClientFrame`, tag field ``"type"``), server frames another
(`ServerFrame`). Every constraint a frame can state statically (user-name syntax, id lengths,
list bounds, `to` xor `group`) lives here, so `msgspec` checks it while parsing; limits that
depend on the server's settings (frame and body size) are checked in `_codec.py`.

Decisions beyond PROTOCOL.md (written down in docs/protocol.md):

- ids (`id`, `mid`, group ids, media ids) are strings of 1 to 128 characters, any content.
- every client frame may carry an optional `id`; when a frame fails, the error's `ref` is it.
- user names are ASCII only: letters, digits, `_`, `-`, `.`, 1 to 64 characters (no homoglyphs).
- lists are bounded: 1,000 `mids` per ack/read, 1,024 users per frame (a group's size).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct, field

USER_NAME_PATTERN = r"\A[A-Za-z0-9_.\-]{1,64}\Z"
"""Exactly the user names PROTOCOL.md allows (``\\Z``, unlike ``$``, rejects a final newline)."""
MAX_ID_LENGTH = 128
MAX_MIDS_PER_FRAME = 1000
MAX_USERS_PER_FRAME = 1024
"""Also a group's maximum size (PROTOCOL.md: at most 1,024 members)."""

UserName = Annotated[str, Meta(pattern=USER_NAME_PATTERN)]
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Password = Annotated[str, Meta(min_length=1, max_length=1024)]
Token = Annotated[str, Meta(min_length=1, max_length=1024)]
GroupName = Annotated[str, Meta(min_length=1, max_length=128)]
Mids = Annotated[list[Id], Meta(max_length=MAX_MIDS_PER_FRAME)]
Users = Annotated[list[UserName], Meta(max_length=MAX_USERS_PER_FRAME)]


class Media(Struct, frozen=True, kw_only=True):
    """A reference to an uploaded blob, in `send` and in a `deliver` item."""

    id: Id
    mime: Annotated[str, Meta(min_length=1, max_length=255)]
    size: Annotated[int, Meta(ge=0)]


# -- client frames ---------------------------------------------------------------------------


class _ClientFrame(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    id: Id | None = None


class Register(_ClientFrame, frozen=True, kw_only=True, tag="register"):
    user: UserName
    password: Password


class Login(_ClientFrame, frozen=True, kw_only=True, tag="login"):
    user: UserName
    password: Password


class Resume(_ClientFrame, frozen=True, kw_only=True, tag="resume"):
    token: Token


class Ping(_ClientFrame, frozen=True, kw_only=True, tag="ping"):
    pass


def _exactly_one_target(frame: Send | Typing) -> None:
    # msgspec turns a ValueError raised here into a ValidationError: one step still.
    if (frame.to is None) == (frame.group is None):
        raise ValueError("exactly one of `to` and `group` is required")


class Send(_ClientFrame, frozen=True, kw_only=True, tag="send"):
    """A message to a user (`to`) or a group (`group`); `body` may be empty with `media`."""

    id: Id
    to: UserName | None = None
    group: Id | None = None
    body: str = ""
    media: Media | None = None

    def __post_init__(self) -> None:
        _exactly_one_target(self)


class Ack(_ClientFrame, frozen=True, kw_only=True, tag="ack"):
    mids: Mids


class Read(_ClientFrame, frozen=True, kw_only=True, tag="read"):
    mids: Mids


class GroupCreate(_ClientFrame, frozen=True, kw_only=True, tag="group_create"):
    name: GroupName
    members: Users = []


class GroupAdd(_ClientFrame, frozen=True, kw_only=True, tag="group_add"):
    group: Id
    users: Users


class GroupRemove(_ClientFrame, frozen=True, kw_only=True, tag="group_remove"):
    group: Id
    users: Users


class GroupLeave(_ClientFrame, frozen=True, kw_only=True, tag="group_leave"):
    group: Id


class Subscribe(_ClientFrame, frozen=True, kw_only=True, tag="subscribe"):
    users: Users


class Unsubscribe(_ClientFrame, frozen=True, kw_only=True, tag="unsubscribe"):
    users: Users


class Typing(_ClientFrame, frozen=True, kw_only=True, tag="typing"):
    state: Literal["composing", "paused"]
    to: UserName | None = None
    group: Id | None = None

    def __post_init__(self) -> None:
        _exactly_one_target(self)


ClientFrame = (
    Register | Login | Resume | Ping | Send | Ack | Read | GroupCreate | GroupAdd | GroupRemove
    | GroupLeave | Subscribe | Unsubscribe | Typing
)
CLIENT_FRAME_TYPES: frozenset[str] = frozenset(
    msgspec.inspect.type_info(t).tag for t in ClientFrame.__args__  # type: ignore[attr-defined]
)
PRE_AUTH_FRAMES: tuple[type[_ClientFrame], ...] = (Register, Login, Resume, Ping)
"""The frames allowed before `welcome` (PROTOCOL.md, Session)."""


# -- server frames ---------------------------------------------------------------------------
# omit_defaults: an optional field left at None is not sent. Fields that PROTOCOL.md always
# spells out, null or not (`error.ref`, `presence.last_seen`), have no default, so they stay.


class _ServerFrame(Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    pass


class Registered(_ServerFrame, frozen=True, kw_only=True, tag="registered"):
    user: str


class Welcome(_ServerFrame, frozen=True, kw_only=True, tag="welcome"):
    user: str
    token: str


class Pong(_ServerFrame, frozen=True, kw_only=True, tag="pong"):
    pass


class Accepted(_ServerFrame, frozen=True, kw_only=True, tag="accepted"):
    ids: list[str]


class Delivery(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One item of a `deliver` frame."""

    mid: str
    id: str
    from_: str = field(name="from")
    to: str
    body: str
    ts: float
    group: str | None = None
    media: Media | None = None


class Deliver(_ServerFrame, frozen=True, kw_only=True, tag="deliver"):
    messages: list[Delivery]


class Receipt(_ServerFrame, frozen=True, kw_only=True, tag="receipt"):
    status: Literal["delivered", "read"]
    by: str
    ids: list[str]
    group: str | None = None


class ErrorFrame(_ServerFrame, frozen=True, kw_only=True, tag="error"):
    code: str
    message: str
    ref: str | None


class Group(_ServerFrame, frozen=True, kw_only=True, tag="group"):
    group: str
    name: str
    owner: str
    members: list[str]


class GroupRemoved(_ServerFrame, frozen=True, kw_only=True, tag="group_removed"):
    group: str


class Presence(_ServerFrame, frozen=True, kw_only=True, tag="presence"):
    user: str
    status: Literal["online", "offline"]
    last_seen: float | None


class TypingNotice(_ServerFrame, frozen=True, kw_only=True, tag="typing"):
    from_: str = field(name="from")
    state: Literal["composing", "paused"]
    group: str | None = None


ServerFrame = (
    Registered | Welcome | Pong | Accepted | Deliver | Receipt | ErrorFrame | Group | GroupRemoved
    | Presence | TypingNotice
)
