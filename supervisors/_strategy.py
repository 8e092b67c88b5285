"""The supervisor's decisions as pure functions of data and a clock reading.

These mirror the small functions of OTP's ``supervisor.erl`` (``do_restart/3``,
``add_restart/3``, ``do_auto_shutdown/2``, ``split_child/2``) so they are tested without tasks
(``tests/supervisors/test_strategy.py``) and the runtime in ``_supervisor`` only carries them out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ._reasons import ExitReason, Normal, Shutdown
from ._spec import (
    ALL_SIGNIFICANT,
    ANY_SIGNIFICANT,
    ONE_FOR_ALL,
    PERMANENT,
    REST_FOR_ONE,
    TEMPORARY,
    AutoShutdown,
    Restart,
    Strategy,
)

__all__ = ["RestartIntensity", "children_to_restart", "should_auto_shutdown", "should_restart"]


def should_restart(restart: Restart, reason: ExitReason) -> bool:
    """OTP's ``do_restart``: permanent always; transient on an abnormal reason; temporary never.

    Note that ``KILLED`` is abnormal (a transient child that was killed is restarted) while
    ``SHUTDOWN`` and ``Shutdown(detail)`` are not.
    """
    if restart is PERMANENT:
        return True
    if restart is TEMPORARY:
        return False
    return not isinstance(reason, Normal | Shutdown)


@dataclass(frozen=True, slots=True)
class RestartIntensity:
    """At most ``intensity`` restarts in any ``period`` seconds (OTP's ``add_restart``).

    ``restarts`` holds the times of recent restarts, newest first. A restart at ``now`` keeps
    those at or after ``now - period``, adds ``now``, and the supervisor gives up when the count
    then exceeds ``intensity``.
    """

    intensity: int
    period: float
    restarts: tuple[float, ...] = ()

    def add_restart(self, now: float) -> tuple[RestartIntensity, bool]:
        """Returns the new state and whether the restart is allowed."""
        threshold = now - self.period
        kept: list[float] = []
        for t in self.restarts:
            if t < threshold:
                break
            kept.append(t)
        restarts = (now, *kept)
        return (
            RestartIntensity(self.intensity, self.period, restarts),
            len(restarts) <= self.intensity,
        )


def children_to_restart(
    strategy: Strategy, order: Sequence[Hashable], failed: Hashable
) -> list[Hashable]:
    """The children (in start order) a strategy terminates and restarts when ``failed`` dies.

    one_for_one and simple_one_for_one: the failed child alone; rest_for_one: it and every child
    started after it; one_for_all: every child.
    """
    if strategy is ONE_FOR_ALL:
        return list(order)
    if strategy is REST_FOR_ONE:
        index = list(order).index(failed)
        return list(order[index:])
    return [failed]


def should_auto_shutdown(
    auto_shutdown: AutoShutdown, significant: bool, significant_still_running: bool
) -> bool:
    """OTP's ``do_auto_shutdown``: after a significant child exits for good, does the
    supervisor shut down? ``any_significant``: yes; ``all_significant``: when no other
    significant child is running."""
    if not significant:
        return False
    if auto_shutdown is ANY_SIGNIFICANT:
        return True
    if auto_shutdown is ALL_SIGNIFICANT:
        return not significant_still_running
    return False
