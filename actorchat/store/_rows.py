"""The values the store reads and writes: rows, a write batch, and its result.

Rows validate themselves when built, so a bad value fails where it was made (in the actor that
handled that one message), never inside a group commit where it would fail everyone else's
messages with it. The limits are the schema's (``_schema.py``) plus what PostgreSQL refuses and
SQLite would silently accept: longer names, U+0000 in text, non-finite floats, keys outside a
signed 64-bit integer. Both dialects therefore see only values they store identically
(guarded by ``test_store_differential.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

NAME_MAX = 64
CLIENT_ID_MAX = 128
KEY_MIN = -(2**63)
KEY_MAX = 2**63 - 1

_isfinite = math.isfinite


def _bad_name(value: object, limit: int = NAME_MAX) -> bool:
    return type(value) is not str or len(value) > limit or "\x00" in value


def _bad_text(value: object) -> bool:
    return type(value) is not str or "\x00" in value


def _bad_key(value: object) -> bool:
    return type(value) is not int or not KEY_MIN <= value <= KEY_MAX


def _bad_time(value: object) -> bool:
    return type(value) not in (float, int) or not _isfinite(value)  # type: ignore[arg-type]


def check_name(what: str, value: object) -> None:
    """Raise ValueError unless ``value`` can be a user, sender or group name."""
    if _bad_name(value):
        raise ValueError(f"{what} must be a str of at most {NAME_MAX} characters without NUL")


def check_text(what: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a str PostgreSQL can store (no NUL)."""
    if _bad_text(value):
        raise ValueError(f"{what} must be a str without NUL (U+0000)")


def check_time(what: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a finite number (SQLite stores NaN as NULL)."""
    if _bad_time(value):
        raise ValueError(f"{what} must be a finite float")


def _explain(fields: dict[str, tuple[object, str]]) -> str:
    checks = {"name": _bad_name, "id": lambda v: _bad_name(v, CLIENT_ID_MAX),
              "text": _bad_text, "key": _bad_key, "time": _bad_time}
    bad = [name for name, (value, kind) in fields.items()
           if not (value is None and kind.endswith("?")) and checks[kind.rstrip("?")](value)]
    return (f"invalid {', '.join(bad)}: names are str of <= {NAME_MAX} chars, client_id <= "
            f"{CLIENT_ID_MAX}, text has no NUL, key is a signed 64-bit int, times are finite")


class MailRow(msgspec.Struct, frozen=True):
    """One stored message for one recipient; ``key`` orders a recipient's mail (unique per
    recipient, chosen by the mailbox). ``media`` is JSON text, opaque to the store."""

    recipient: str
    key: int
    sender: str
    client_id: str
    body: str
    ts: float
    grp: str | None = None
    media: str | None = None

    def __post_init__(self) -> None:
        # One flat expression: this runs for every message accepted, so no per-field calls
        # on the happy path; _explain finds the culprit only when something is wrong.
        r, s, c, b, k, t, g, m = (self.recipient, self.sender, self.client_id, self.body,
                                  self.key, self.ts, self.grp, self.media)
        if (
            type(r) is not str or len(r) > NAME_MAX or "\x00" in r
            or type(s) is not str or len(s) > NAME_MAX or "\x00" in s
            or type(c) is not str or len(c) > CLIENT_ID_MAX or "\x00" in c
            or type(b) is not str or "\x00" in b
            or type(k) is not int or not KEY_MIN <= k <= KEY_MAX
            or _bad_time(t)
            or (g is not None and _bad_name(g))
            or (m is not None and _bad_text(m))
        ):
            raise ValueError("MailRow: " + _explain({
                "recipient": (r, "name"), "sender": (s, "name"), "client_id": (c, "id"),
                "body": (b, "text"), "key": (k, "key"), "ts": (t, "time"),
                "grp": (g, "name?"), "media": (m, "text?"),
            }))


class DedupeRow(msgspec.Struct, frozen=True):
    """"``recipient`` was given ``sender``'s message ``client_id`` as ``key``": remembered
    after the mail row is deleted, so a retried id is dropped instead of delivered twice."""

    sender: str
    client_id: str
    recipient: str
    key: int
    created_at: float

    def __post_init__(self) -> None:
        s, c, r, k, t = self.sender, self.client_id, self.recipient, self.key, self.created_at
        if (
            type(s) is not str or len(s) > NAME_MAX or "\x00" in s
            or type(c) is not str or len(c) > CLIENT_ID_MAX or "\x00" in c
            or type(r) is not str or len(r) > NAME_MAX or "\x00" in r
            or type(k) is not int or not KEY_MIN <= k <= KEY_MAX
            or _bad_time(t)
        ):
            raise ValueError("DedupeRow: " + _explain({
                "sender": (s, "name"), "client_id": (c, "id"), "recipient": (r, "name"),
                "key": (k, "key"), "created_at": (t, "time"),
            }))


class StoreBatch(msgspec.Struct, frozen=True):
    """Everything one group commit writes, applied in ONE transaction by ``Store.apply``.

    Every part is idempotent (puts ignore rows already present, deletes of absent rows do
    nothing, ``last_seen`` keeps the latest time), so a batch whose outcome is unknown (the
    store raised ``StoreUnavailable``) is simply applied again. Puts run before deletes: a
    message stored and acknowledged within one batch ends deleted.
    """

    put_mail: Sequence[MailRow] = ()
    delete_mail: Sequence[tuple[str, int]] = ()
    put_dedupe: Sequence[DedupeRow] = ()
    last_seen: Sequence[tuple[str, float]] = ()

    def __bool__(self) -> bool:
        return bool(self.put_mail or self.delete_mail or self.put_dedupe or self.last_seen)


class BatchResult(msgspec.Struct, frozen=True):
    """What one ``apply`` committed: rows sent per kind (rows already present are counted
    too: the write is idempotent and PostgreSQL's executemany reports no per-row counts),
    and ``seconds`` from the first statement to the commit, for metrics."""

    mail_put: int
    mail_deleted: int
    dedupe_put: int
    last_seen: int
    seconds: float
