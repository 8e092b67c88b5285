"""Exit reasons, as in Erlang: ``normal``, ``shutdown``, ``{shutdown, Detail}``, ``killed`` and
an error carrying the exception.

Whether a reason is *abnormal* decides what a transient child's supervisor does and whether a
link propagates the exit (OTP's ``do_restart(transient, ...)``); it is a property of the value,
so the decision functions in ``_strategy`` stay pure.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["KILLED", "NORMAL", "SHUTDOWN", "Error", "ExitReason", "Killed", "Normal", "Shutdown"]


class ExitReason:
    """Why an actor's incarnation ended. Compare with ``==``; the singletons are ``is``-safe."""

    __slots__ = ()
    abnormal: bool = False

    def __repr__(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__


class Normal(ExitReason):
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Normal)

    def __hash__(self) -> int:
        return hash("normal")

    def __repr__(self) -> str:
        return "NORMAL"


class Shutdown(ExitReason):
    """``shutdown`` (``detail is None``) or ``{shutdown, detail}``."""

    __slots__ = ("detail",)

    def __init__(self, detail: Any = None) -> None:
        self.detail = detail

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shutdown) and other.detail == self.detail

    def __hash__(self) -> int:
        return hash(("shutdown", repr(self.detail)))

    def __repr__(self) -> str:
        return "SHUTDOWN" if self.detail is None else f"Shutdown({self.detail!r})"


class Killed(ExitReason):
    """Cancelled without running ``on_stop``: brutal kill, or a shutdown timeout that ran out."""

    __slots__ = ()
    abnormal = True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Killed)

    def __hash__(self) -> int:
        return hash("killed")

    def __repr__(self) -> str:
        return "KILLED"


class Error(ExitReason):
    """The actor raised ``exception``."""

    __slots__ = ("exception",)
    abnormal = True

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Error) and other.exception is self.exception

    def __hash__(self) -> int:
        return hash(("error", id(self.exception)))

    def __repr__(self) -> str:
        return f"Error({self.exception!r})"


NORMAL: Final = Normal()
SHUTDOWN: Final = Shutdown()
KILLED: Final = Killed()
