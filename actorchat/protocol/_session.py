"""The session-level rules of one connection, sans I/O: text and a clock in, one event out.

`ServerSession.receive(data, now)` decodes a message and applies the rules that need no node:

- before `welcome` (`authenticated(user)`), only register, login, resume and ping pass;
  anything else is a ``not_authenticated`` error, and after `max_unauthenticated_frames`
  frames without a welcome the connection is closed (bounds password guessing per socket);
- `max_bad_frames` undecodable frames in a row close the connection: PROTOCOL.md closes only
  where continuing is unsafe, and a peer that speaks garbage again and again is that case;
- `send` and `typing` frames each draw from their own token bucket; an empty bucket is a
  ``rate_limited`` error and the frame is dropped (nothing accepted, the client may retry).

Every other error keeps the connection open. The clock is a float passed in by the caller
(`trio.current_time()`), so tests drive it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._codec import decode_client_frame
from ._errors import ErrorCode, FrameError
from ._frames import PRE_AUTH_FRAMES, ClientFrame, ErrorFrame, Send, Typing


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; it starts full."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Take one token at time `now`; False (and nothing taken) when the bucket is empty."""
        if self._last is not None and now > self._last:  # a clock going back refills nothing
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-connection limits; `actorchat.config.Settings` takes its defaults from here."""

    max_frame_bytes: int = 64 * 1024
    max_body_bytes: int = 16 * 1024
    messages_per_second: float = 50.0
    message_burst: int = 100
    typing_per_second: float = 5.0
    typing_burst: int = 10
    max_bad_frames: int = 10
    max_unauthenticated_frames: int = 20


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Answer with `to_frame()`; then, if `close`, close the connection."""

    code: ErrorCode
    message: str
    ref: str | None = None
    close: bool = False

    def to_frame(self) -> ErrorFrame:
        return ErrorFrame(code=self.code.value, message=self.message, ref=self.ref)


Event = ClientFrame | ErrorEvent


class ServerSession:
    """One connection's rules. Feed it every message in order, one at a time; call
    `authenticated(user)` when answering `welcome`, before feeding the next message."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits = limits or SessionLimits()
        self._user: str | None = None
        self._bad_in_a_row = 0
        self._unauthenticated_frames = 0
        self._closing: ErrorEvent | None = None
        # Made on the first send or typing frame: a bucket starts full and untouched, so one
        # made then is the same bucket, and an idle user (most of them) holds none.
        self._sends: TokenBucket | None = None
        self._typing: TokenBucket | None = None

    @property
    def user(self) -> str | None:
        """The user this connection belongs to, or None before `welcome`."""
        return self._user

    def authenticated(self, user: str) -> None:
        self._user = user

    def receive(self, data: str | bytes, now: float) -> Event:
        """The frame to handle, or the error to answer (closing the connection if it says so)."""
        if self._closing is not None:  # the caller should have closed; stay closed
            return self._closing
        limits = self.limits
        if self._user is None:
            self._unauthenticated_frames += 1
            if self._unauthenticated_frames > limits.max_unauthenticated_frames:
                return self._close(ErrorCode.NOT_AUTHENTICATED, "too many frames before welcome")
        frame = decode_client_frame(
            data, max_frame_bytes=limits.max_frame_bytes, max_body_bytes=limits.max_body_bytes
        )
        if isinstance(frame, FrameError):
            self._bad_in_a_row += 1
            if self._bad_in_a_row >= limits.max_bad_frames:
                return self._close(frame.code, f"{frame.message}; too many bad frames", frame.ref)
            return ErrorEvent(frame.code, frame.message, frame.ref)
        self._bad_in_a_row = 0
        if self._user is None and not isinstance(frame, PRE_AUTH_FRAMES):
            return ErrorEvent(ErrorCode.NOT_AUTHENTICATED, "log in first", frame.id)
        if type(frame) is Send:
            sends = self._sends
            if sends is None:
                sends = self._sends = TokenBucket(limits.messages_per_second, limits.message_burst)
            if not sends.take(now):
                return ErrorEvent(
                    ErrorCode.RATE_LIMITED, "too many messages; retry later", frame.id
                )
        elif type(frame) is Typing:
            typing = self._typing
            if typing is None:
                typing = self._typing = TokenBucket(limits.typing_per_second, limits.typing_burst)
            if not typing.take(now):
                return ErrorEvent(ErrorCode.RATE_LIMITED, "too many typing frames", frame.id)
        return frame

    def _close(self, code: ErrorCode, message: str, ref: str | None = None) -> ErrorEvent:
        self._closing = ErrorEvent(code, message, ref, close=True)
        return self._closing
