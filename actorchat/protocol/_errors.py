"""Stable error codes, and the two ways an error travels: a value (`FrameError`) or an exception
(`ProtocolError`). Both become an `error` frame with `to_frame()`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ._frames import ErrorFrame


class ErrorCode(StrEnum):
    """The codes of PROTOCOL.md, exactly. The values are the wire strings."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    NOT_AUTHENTICATED = "not_authenticated"
    BAD_CREDENTIALS = "bad_credentials"
    USER_EXISTS = "user_exists"
    NO_SUCH_USER = "no_such_user"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    NOT_MEMBER = "not_member"
    NOT_ALLOWED = "not_allowed"
    NO_SUCH_GROUP = "no_such_group"


@dataclass(frozen=True, slots=True)
class FrameError:
    """What `decode_client_frame` returns instead of a frame; it never raises."""

    code: ErrorCode
    message: str
    ref: str | None = None

    def to_frame(self) -> ErrorFrame:
        return ErrorFrame(code=self.code.value, message=self.message, ref=self.ref)


class ProtocolError(Exception):
    """Raised by a handler for an error the client caused, e.g. ``NOT_MEMBER``; the connection
    turns it into an `error` frame and carries on."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(code, message, ref)
        self.code = code
        self.message = message
        self.ref = ref

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    def to_frame(self) -> ErrorFrame:
        return ErrorFrame(code=self.code.value, message=self.message, ref=self.ref)
