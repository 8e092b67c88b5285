"""The exception hierarchy of ``supervisors``.

::

    SupervisorsError
    ├── ActorDeadError              the actor is gone, or exited before replying (.reason)
    ├── MailboxFull                 send_nowait on a mailbox at its bound (like trio.WouldBlock)
    ├── CallTimeout (TimeoutError)  no reply within the call's timeout
    ├── InvalidChildSpec (ValueError)   a child spec or supervisor flags are malformed
    └── SupervisorError             OTP's dynamic-API errors
        ├── AlreadyStarted(ref)     {error, {already_started, Pid}}
        ├── AlreadyPresent          {error, already_present}
        ├── StartFailed(reason)     {error, Reason} from a child's start
        ├── NotFound                {error, not_found}
        ├── Running                 {error, running}
        ├── Restarting              {error, restarting}
        ├── SimpleOneForOneError    {error, simple_one_for_one}
        └── SupervisorGone          the supervisor itself is not running
"""

from __future__ import annotations

from typing import Any

from ._reasons import ExitReason

__all__ = [
    "ActorDeadError",
    "AlreadyPresent",
    "AlreadyStarted",
    "CallTimeout",
    "InvalidChildSpec",
    "MailboxFull",
    "NotFound",
    "Restarting",
    "Running",
    "SimpleOneForOneError",
    "StartFailed",
    "SupervisorError",
    "SupervisorGone",
    "SupervisorsError",
]


class SupervisorsError(Exception):
    """Base of every error this library raises on purpose."""


class ActorDeadError(SupervisorsError):
    """The actor is not running, or exited before it replied. ``reason`` is why, if known."""

    def __init__(self, message: str, reason: ExitReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class MailboxFull(SupervisorsError):
    """``send_nowait`` found the mailbox at its bound; ``await send()`` waits instead."""


class CallTimeout(SupervisorsError, TimeoutError):
    """A ``call`` got no reply within its timeout. The request may still be handled later."""


class InvalidChildSpec(SupervisorsError, ValueError):
    """A child spec or supervisor flags are malformed (OTP: ``{invalid_child_spec, ...}``)."""


class SupervisorError(SupervisorsError):
    """An error answer of the dynamic supervisor API."""


class AlreadyStarted(SupervisorError):
    def __init__(self, ref: Any) -> None:
        super().__init__(f"a child with this id is already running: {ref!r}")
        self.ref = ref


class AlreadyPresent(SupervisorError):
    """A (terminated) child spec with this id exists; restart_child or delete_child it first."""


class StartFailed(SupervisorError):
    def __init__(self, child_id: Any, reason: ExitReason) -> None:
        super().__init__(f"child {child_id!r} failed to start: {reason!r}")
        self.child_id = child_id
        self.reason = reason


class NotFound(SupervisorError):
    """No child with this id (or ref)."""


class Running(SupervisorError):
    """The child is running; terminate it first."""


class Restarting(SupervisorError):
    """The child is being restarted."""


class SimpleOneForOneError(SupervisorError):
    """The operation does not exist for a simple_one_for_one supervisor."""


class SupervisorGone(SupervisorError):
    """The supervisor is not running."""
