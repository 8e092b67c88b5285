"""JSON text in, frames out, and back: `decode_client_frame` (never raises), `encode`."""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import ErrorCode, FrameError
from ._frames import (
    CLIENT_FRAME_TYPES,
    MAX_ID_LENGTH,
    USER_NAME_PATTERN,
    ClientFrame,
    Send,
    ServerFrame,
)

_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_encoder = msgspec.json.Encoder()

# Everything msgspec can raise while parsing hostile text: DecodeError (and its subclass
# ValidationError), UnicodeEncodeError for a str holding lone surrogates, and RecursionError
# for deep nesting such as '{"a":' * 60000. Guarded by test_decoder_never_raises_on_text.
_PARSE_ERRORS = (msgspec.DecodeError, UnicodeError, RecursionError)

_REGEX_IN_ERRORS = f"`str` matching regex {USER_NAME_PATTERN!r}"
_USER_NAME_RULE = "a user name (1 to 64 ASCII letters, digits, `_`, `-` or `.`)"


class _Envelope(msgspec.Struct):
    """The two fields read from a frame that failed validation, to explain the failure."""

    type: Any = None
    id: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def _utf8_over(text: str, limit: int) -> bool:
    """Whether `text` is over `limit` bytes in UTF-8, encoding only when length can't tell."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def decode_client_frame(
    data: str | bytes, *, max_frame_bytes: int, max_body_bytes: int
) -> ClientFrame | FrameError:
    """Decode and validate one WebSocket message from a client.

    Returns the frame, or a `FrameError` (code ``bad_frame``, ``unknown_type`` or ``too_large``)
    whose `ref` is the frame's `id` when it could be read. Never raises, whatever `data` is.
    `bytes` means a binary WebSocket message, which the protocol does not allow.
    """
    if not isinstance(data, str):
        return FrameError(ErrorCode.BAD_FRAME, "binary frames are not allowed; send JSON text")
    # Checked before parsing, so an oversized frame costs no parsing at all.
    if _utf8_over(data, max_frame_bytes):
        return FrameError(ErrorCode.TOO_LARGE, f"frame is over {max_frame_bytes} bytes")
    try:
        frame = _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        return _explain(data, str(exc))
    except _PARSE_ERRORS as exc:
        return FrameError(ErrorCode.BAD_FRAME, _describe(exc))
    if type(frame) is Send and _utf8_over(frame.body, max_body_bytes):
        return FrameError(ErrorCode.TOO_LARGE, f"body is over {max_body_bytes} bytes", frame.id)
    return frame


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, UnicodeError):
        return "text is not valid Unicode"
    if isinstance(exc, msgspec.ValidationError):
        return "a frame must be a JSON object"
    return f"not valid JSON: {exc}"


def _explain(data: str, detail: str) -> FrameError:
    """Tell an unknown `type` from a malformed known one (the slow path: errors only)."""
    try:
        envelope = _envelope_decoder.decode(data)
    except _PARSE_ERRORS as exc:
        return FrameError(ErrorCode.BAD_FRAME, _describe(exc))
    ref = envelope.id
    if not (isinstance(ref, str) and 0 < len(ref) <= MAX_ID_LENGTH):
        ref = None
    kind = envelope.type
    if kind is None:
        return FrameError(ErrorCode.BAD_FRAME, "missing `type`", ref)
    if not isinstance(kind, str):
        return FrameError(ErrorCode.BAD_FRAME, "`type` must be a string", ref)
    if kind not in CLIENT_FRAME_TYPES:
        return FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", ref)
    detail = detail.replace(_REGEX_IN_ERRORS, _USER_NAME_RULE)
    return FrameError(ErrorCode.BAD_FRAME, f"bad `{kind}` frame: {detail}", ref)


def encode(frame: msgspec.Struct) -> str:
    """One frame (normally a server frame) as the text of a WebSocket message."""
    return _encoder.encode(frame).decode()


def decode_server_frame(data: str | bytes) -> ServerFrame:
    """For clients and tests: parse a server frame, raising `msgspec.DecodeError` (or its
    subclass `msgspec.ValidationError`) when it is not one."""
    return _server_decoder.decode(data)
