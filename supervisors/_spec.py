"""Child specs and supervisor flags: frozen data with OTP's defaults and precise errors.

OTP's defaults (``supervisor.erl``): restart ``permanent``; shutdown 5000 ms for a worker and
``infinity`` for a supervisor; intensity 1 in 5 seconds; auto_shutdown ``never``. A significant
child must be transient or temporary, and only with an auto_shutdown other than ``never``
(``bad_combination`` in OTP).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ._errors import InvalidChildSpec

__all__ = [
    "ALL_SIGNIFICANT",
    "ANY_SIGNIFICANT",
    "BRUTAL_KILL",
    "DROP",
    "INFINITY",
    "KEEP",
    "NEVER",
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "PERMANENT",
    "REST_FOR_ONE",
    "SIMPLE_ONE_FOR_ONE",
    "SUPERVISOR",
    "TEMPORARY",
    "TRANSIENT",
    "WORKER",
    "AutoShutdown",
    "ChildKind",
    "ChildSpec",
    "MailboxPolicy",
    "Restart",
    "Strategy",
    "SupervisorFlags",
    "SupervisorSpec",
]


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class AutoShutdown(enum.Enum):
    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class ChildKind(enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class MailboxPolicy(enum.Enum):
    """What a restarted child finds in its mailbox: the queued mail (Akka) or nothing (Erlang)."""

    KEEP = "keep"
    DROP = "drop"


class _BrutalKill:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BRUTAL_KILL"


PERMANENT: Final = Restart.PERMANENT
TRANSIENT: Final = Restart.TRANSIENT
TEMPORARY: Final = Restart.TEMPORARY
ONE_FOR_ONE: Final = Strategy.ONE_FOR_ONE
ONE_FOR_ALL: Final = Strategy.ONE_FOR_ALL
REST_FOR_ONE: Final = Strategy.REST_FOR_ONE
SIMPLE_ONE_FOR_ONE: Final = Strategy.SIMPLE_ONE_FOR_ONE
NEVER: Final = AutoShutdown.NEVER
ANY_SIGNIFICANT: Final = AutoShutdown.ANY_SIGNIFICANT
ALL_SIGNIFICANT: Final = AutoShutdown.ALL_SIGNIFICANT
WORKER: Final = ChildKind.WORKER
SUPERVISOR: Final = ChildKind.SUPERVISOR
KEEP: Final = MailboxPolicy.KEEP
DROP: Final = MailboxPolicy.DROP
#: Cancel the child at once; ``on_stop`` does not run and the reason is ``KILLED``.
BRUTAL_KILL: Final = _BrutalKill()
#: Wait for the child's ``on_stop`` however long it takes (OTP's ``infinity``).
INFINITY: Final = math.inf

_DEFAULT: Any = object()


def _check_shutdown(child_id: Hashable, shutdown: Any) -> None:
    if shutdown is BRUTAL_KILL or shutdown == INFINITY:
        return
    if isinstance(shutdown, bool) or not isinstance(shutdown, int | float) or not shutdown > 0:
        raise InvalidChildSpec(
            f"child {child_id!r}: invalid shutdown {shutdown!r}; "
            "use BRUTAL_KILL, INFINITY or a number of seconds > 0"
        )


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child (OTP's ``child_spec()``)."""

    id: Hashable
    start: Callable[..., Any]
    args: tuple[Any, ...] = ()
    restart: Restart = PERMANENT
    shutdown: Any = _DEFAULT
    kind: ChildKind = WORKER
    significant: bool = False
    mailbox: MailboxPolicy = KEEP

    def __post_init__(self) -> None:
        try:
            hash(self.id)
        except TypeError:
            raise InvalidChildSpec(f"invalid child id {self.id!r}: ids must be hashable") from None
        if not callable(self.start):
            raise InvalidChildSpec(f"child {self.id!r}: start {self.start!r} is not callable")
        if not isinstance(self.args, tuple):
            raise InvalidChildSpec(f"child {self.id!r}: args must be a tuple, not {self.args!r}")
        if not isinstance(self.restart, Restart):
            raise InvalidChildSpec(f"child {self.id!r}: invalid restart type {self.restart!r}")
        if not isinstance(self.kind, ChildKind):
            raise InvalidChildSpec(f"child {self.id!r}: invalid child kind {self.kind!r}")
        if not isinstance(self.significant, bool):
            raise InvalidChildSpec(f"child {self.id!r}: significant must be a bool")
        if not isinstance(self.mailbox, MailboxPolicy):
            raise InvalidChildSpec(f"child {self.id!r}: invalid mailbox policy {self.mailbox!r}")
        if self.significant and self.restart is PERMANENT:
            raise InvalidChildSpec(
                f"child {self.id!r}: bad combination: a permanent child cannot be significant"
            )
        if self.shutdown is _DEFAULT:
            default = 5.0 if self.kind is WORKER else INFINITY
            object.__setattr__(self, "shutdown", default)
        _check_shutdown(self.id, self.shutdown)


@dataclass(frozen=True, slots=True)
class SupervisorFlags:
    """OTP's ``sup_flags()``: intensity 1 restart in 5 seconds unless told otherwise."""

    strategy: Strategy = ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    auto_shutdown: AutoShutdown = NEVER

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, Strategy):
            raise InvalidChildSpec(f"invalid strategy {self.strategy!r}")
        if isinstance(self.intensity, bool) or not isinstance(self.intensity, int):
            raise InvalidChildSpec(f"invalid intensity {self.intensity!r}: an int >= 0")
        if self.intensity < 0:
            raise InvalidChildSpec(f"invalid intensity {self.intensity!r}: an int >= 0")
        if isinstance(self.period, bool) or not isinstance(self.period, int | float):
            raise InvalidChildSpec(f"invalid period {self.period!r}: seconds > 0")
        if not self.period > 0:
            raise InvalidChildSpec(f"invalid period {self.period!r}: seconds > 0")
        if not isinstance(self.auto_shutdown, AutoShutdown):
            raise InvalidChildSpec(f"invalid auto_shutdown {self.auto_shutdown!r}")


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """What a supervisor is made of (the value OTP's ``init/1`` returns): flags and children."""

    flags: SupervisorFlags = field(default_factory=SupervisorFlags)
    children: Sequence[ChildSpec] = ()

    def __post_init__(self) -> None:
        children = tuple(self.children)
        object.__setattr__(self, "children", children)
        if not isinstance(self.flags, SupervisorFlags):
            raise InvalidChildSpec(f"flags must be SupervisorFlags, not {self.flags!r}")
        seen: set[Hashable] = set()
        for child in children:
            if not isinstance(child, ChildSpec):
                raise InvalidChildSpec(f"not a ChildSpec: {child!r}")
            if child.id in seen:
                raise InvalidChildSpec(f"duplicate child id {child.id!r}")
            seen.add(child.id)
            check_child_for(self.flags, child)
        if self.flags.strategy is SIMPLE_ONE_FOR_ONE and len(children) != 1:
            raise InvalidChildSpec(
                "a simple_one_for_one supervisor has exactly one child spec (the template), "
                f"got {len(children)}"
            )


def check_child_for(flags: SupervisorFlags, child: ChildSpec) -> None:
    """The checks that depend on the supervisor (OTP's ``validSignificant/3``)."""
    if child.significant and flags.auto_shutdown is NEVER:
        raise InvalidChildSpec(
            f"child {child.id!r}: bad combination: significant with auto_shutdown NEVER"
        )
