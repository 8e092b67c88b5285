"""The recording side of the harness: workers that log their lives, and the runtime specs
built from a model tree."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

import supervisors as sv

from ._model import ChildModel, Path, SupervisorModel

__all__ = ["RecordingWorker", "WorkerCrash", "World", "build_child_spec", "build_spec"]

#: The reasons a worker exits with when asked (``"error"`` raises, ``"killed"`` is a kill).
REASONS: dict[str, sv.ExitReason] = {
    "normal": sv.NORMAL,
    "shutdown": sv.SHUTDOWN,
    "shutdown_detail": sv.Shutdown("detail"),
}


class WorkerCrash(Exception):
    """What a recording worker raises to exit with ``Error``."""


@dataclass(eq=False)
class Parked:
    """A call parked in a worker incarnation (answered never; failed when it ends)."""

    worker: RecordingWorker | None = None
    outcome: BaseException | str | None = None


@dataclass
class World:
    """What the recording workers share with the harness."""

    log: list[tuple[str, Path]] = field(default_factory=list)
    live: set[RecordingWorker] = field(default_factory=set)
    dynamic: dict[Path, sv.ActorRef] = field(default_factory=dict)
    parked: list[Parked] = field(default_factory=list)
    parked_in: set[RecordingWorker] = field(default_factory=set)


class RecordingWorker(sv.Actor):
    """Logs its start and stop, exits on request, and parks the calls it is asked to park."""

    def __init__(self, world: World, path: Path) -> None:
        super().__init__()
        self.world, self.path = world, path

    async def on_start(self) -> None:
        self.world.log.append(("start", self.path))
        self.world.live.add(self)
        self.start_task(self._alive)

    async def _alive(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.world.live.discard(self)

    async def on_stop(self, reason: sv.ExitReason) -> None:
        self.world.log.append(("stop", self.path))

    def receive_now(self, message: Any) -> bool:
        # A cast exit (``ChildExit.cast``) while idle ends the worker in the harness's task
        # (``Actor.receive_now``); a called one, or a cast while busy, goes through receive.
        self._exit_if_asked(message)
        return False

    def _exit_if_asked(self, message: Any) -> None:
        match message:
            case ("exit", "error"):
                raise WorkerCrash(self.path)
            case ("exit", reason):
                raise sv.Exit(REASONS[reason])

    async def receive(self, message: Any) -> Any:
        self._exit_if_asked(message)
        match message:
            case ("park", Parked() as parked):
                parked.worker = self
                self.defer_reply()
        return None


def _start_worker(world: World, prefix: Path, *dynamic_id: str) -> RecordingWorker:
    return RecordingWorker(world, (*prefix, *dynamic_id))


def _start_supervisor(
    world: World, tree: SupervisorModel, prefix: Path, *dynamic_id: str
) -> sv.SupervisorSpec:
    return build_spec(world, tree, (*prefix, *dynamic_id))


def build_spec(world: World, tree: SupervisorModel, path: Path) -> sv.SupervisorSpec:
    """The runtime's spec for the model tree at ``path``."""
    flags = sv.SupervisorFlags(
        strategy=sv.Strategy(tree.strategy),
        intensity=tree.intensity,
        period=float(tree.period),
        auto_shutdown=sv.AutoShutdown(tree.auto_shutdown),
    )
    simple = tree.strategy == "simple_one_for_one"
    return sv.SupervisorSpec(
        flags, [build_child_spec(world, c, path, template=simple) for c in tree.children]
    )


def build_child_spec(
    world: World, child: ChildModel, sup_path: Path, *, template: bool = False
) -> sv.ChildSpec:
    # A template's instances get their ids ("#0", ...) as extra args (simple_one_for_one).
    prefix = sup_path if template else (*sup_path, child.id)
    shutdown = {"brutal_kill": sv.BRUTAL_KILL, "infinity": sv.INFINITY}.get(
        child.shutdown, child.shutdown  # type: ignore[call-overload]
    )
    if child.supervisor is None:
        start: Callable[..., Any] = _start_worker
        args: tuple[Any, ...] = (world, prefix)
    else:
        start, args = _start_supervisor, (world, child.supervisor, prefix)
    return sv.ChildSpec(
        id=child.id,
        start=start,
        args=args,
        restart=sv.Restart(child.restart),
        shutdown=shutdown,
        kind=sv.WORKER if child.supervisor is None else sv.SUPERVISOR,
        significant=child.significant,
    )


async def park(ref: sv.ActorRef, parked: Parked) -> None:
    """Call ``ref`` with a request it never answers; record how the call ends."""
    try:
        await ref.call(("park", parked), timeout=math.inf)
    except BaseException as e:
        parked.outcome = e
        if not isinstance(e, Exception):
            raise
    else:
        parked.outcome = "returned"
