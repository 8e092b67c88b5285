"""Presence and typing on the node: the frames, the subscribers, last seen in the store.

``Presence`` is a plain object on the node, like ``Registry``: the node is one trio thread, so
a subscribe or a connection leaving is a few dict operations, with no actor hop. Its decisions
come from the pure ``PresenceBook`` (``_presence.py``); this module performs them:

- ``presence`` frames go to subscribed connections (``OutFrame`` to the connection actor; a
  full queue is a stalled socket and is closed, as ``Node.notify`` does);
- a change of a user of this node (online; offline after the grace) writes its last-seen time
  through the store's group commit (write-behind: never on the path of a message);
- ``PresenceActor``, a child of the node's tree, runs the grace timer (trio's clock, so
  ``MockClock`` drives it in tests), monitors every welcomed connection (a killed connection
  runs no ``on_leave``: its ``Down`` counts instead), and on shutdown stores "last seen now"
  for every user still online here.

A login and a logout cost the presence actor nothing (issue 5, login storms): ``welcomed``
sets up its monitor of the connection directly (no message to it), ``left`` takes it down
again (no ``Down`` for a connection that left normally), and the timer is woken only when a
new deadline comes before the one it sleeps until (deadlines are now + grace, so almost never).

Typing is relayed, never stored, never acknowledged: to the recipient's connection if it is on
this node now, else dropped (a typing frame over the connection's rate limit is answered
``rate_limited`` by the session and dropped; the connection stays open).

The cluster plugs in here (``actorchat/cluster/_presence_link.py``): ``announce`` hooks hear every
change of this node's users (to tell peers), ``remote()``/``node_gone()`` take peers' reports,
``users_here()`` is the snapshot for a new peer, a peer may subscribe like a connection
(``subscribe_remote``, any object with ``presence_changed(frame)``), and ``forward_typing``
carries typing for users connected elsewhere, which a peer hands to ``deliver_typing``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import trio

import supervisors as sv
from actorchat import protocol as p
from actorchat.store import StoreBatch, StoreUnavailable

from ._connection import error_text, tell
from ._messages import OutFrame
from ._presence import (
    OFFLINE,
    LocalChange,
    Outcome,
    PresenceBook,
    Status,
    TooManySubscriptions,
)

if TYPE_CHECKING:
    from ._connection import ConnectionActor
    from ._node import Node

log = logging.getLogger("actorchat.presence")

E = p.ErrorCode
MAX_SUBSCRIPTIONS = p.MAX_USERS_PER_FRAME
"""Users one connection may watch at a time (as many as one frame may name)."""


class RemoteSubscriber(Protocol):
    """A subscriber that is not a connection of this node (a peer node, for its users)."""

    def presence_changed(self, frame: p.Presence) -> None: ...


class Presence:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.book = PresenceBook(node.settings.presence_grace, MAX_SUBSCRIPTIONS)
        self.wakeup = trio.Event()
        self.timer_at = math.inf  # the deadline the timer sleeps until
        self.actor: PresenceActor | None = None  # its running incarnation
        self._monitors: dict[Hashable, sv.Monitor] = {}  # of the welcomed connections
        # The cluster's side (docs/scaling.md): hooks told every LocalChange, and the relay
        # of typing to users that are not connected here.
        self.announce: list[Callable[[LocalChange], None]] = []
        self.forward_typing: Callable[[str, str], None] | None = None

    # -- connections (node hooks) ------------------------------------------------------------
    async def welcomed(self, conn: ConnectionActor, user: str) -> None:
        if conn.user != user or conn.closing:  # it left while the welcome went on
            return
        ref = conn.ref
        if self.book.user_of(ref) not in (None, user):  # the same socket, another user
            self._gone(ref)
        self.perform(self.book.connected(user, ref, self.node.wall()))
        self.watch(ref)  # without an actor, on_leave still covers every normal stop

    def watch(self, ref: sv.ActorRef) -> None:
        """Have the presence actor monitor ``ref``: set up here, synchronously (the node is
        one trio thread), rather than by a message that wakes it on every login."""
        actor = self.actor
        if actor is not None and ref not in self._monitors:
            self._monitors[ref] = actor.monitor(ref)

    def left(self, conn: ConnectionActor, user: str) -> None:
        self._gone(conn.ref)

    def connection_down(self, ref: sv.ActorRef) -> None:
        """A monitored connection exited (maybe killed, without on_leave)."""
        self._gone(ref)

    def _gone(self, ref: Hashable) -> None:
        monitor = self._monitors.pop(ref, None)
        if monitor is not None and self.actor is not None:
            self.actor.demonitor(monitor)
        self.book.drop(ref)
        deadline = self.book.disconnected(ref, trio.current_time(), self.node.wall())
        if deadline is not None and deadline < self.timer_at:
            self.wakeup.set()

    def expire(self) -> None:
        self.perform(self.book.expire(trio.current_time()))

    # -- client frames -------------------------------------------------------------------------
    async def on_subscribe(self, conn: ConnectionActor, frame: p.Subscribe) -> None:
        users = list(dict.fromkeys(frame.users))
        # Users online now exist; the others' existence and last seen come in one read.
        offline = [u for u in users if not self.book.is_online(u)]
        stored: dict[str, float | None] = {}
        if offline:
            stored = await self.node.store.read("presence_of", offline)
            # StoreUnavailable: the connection answers `unavailable`; nothing was subscribed.
        if conn.user is None:  # the connection left meanwhile
            return
        missing = {u for u in offline if u not in stored}
        wanted = [u for u in users if u not in missing]
        try:
            self.book.subscribe(conn.ref, wanted)
        except TooManySubscriptions as e:
            await conn.out(error_text(E.TOO_LARGE, f"{e}; unsubscribe first", frame.id))
            return
        # Each answer is the state when it is queued (a change during the store read included:
        # PresenceBook.status), and every later change is queued behind it, so the client's
        # last word on each user is current. Queued without waiting, so no change is told
        # twice; only if the connection's queue is full does it wait (back-pressure on this
        # client), and a change in that moment may then be told twice, never lost.
        for user in wanted:
            status, seen = self.book.status(user)
            if status == OFFLINE:
                seen = _later(seen, stored.get(user))
            text = p.encode(_frame(user, status, seen))
            try:
                conn.ref.send_nowait(OutFrame(text))
            except sv.MailboxFull:
                await conn.out(text)
        if missing:
            names = sorted(missing)
            listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            await conn.out(
                error_text(E.NO_SUCH_USER, f"no such user: {listed} (not subscribed)", frame.id)
            )

    async def on_unsubscribe(self, conn: ConnectionActor, frame: p.Unsubscribe) -> None:
        self.book.unsubscribe(conn.ref, frame.users)

    async def on_typing(self, conn: ConnectionActor, frame: p.Typing) -> None:
        user = conn.user
        if user is None:  # the connection is leaving
            return
        text = p.encode(p.TypingNotice(from_=user, state=frame.state, group=frame.group))
        if frame.to is not None:
            self.deliver_typing(frame.to, text, forward=True)
            return
        group = frame.group
        assert group is not None
        members_of: Callable[[str], Awaitable[list[str] | None]] | None = getattr(
            self.node, "group_members", None
        )
        members = await members_of(group) if members_of is not None else None
        if members is None:
            await conn.out(error_text(E.NO_SUCH_GROUP, f"no group {group}", frame.id))
            return
        if user not in members:
            await conn.out(error_text(E.NOT_MEMBER, f"not a member of {group}", frame.id))
            return
        for member in members:
            if member != user:
                self.deliver_typing(member, text, forward=True)

    def deliver_typing(self, user: str, text: str, *, forward: bool = False) -> bool:
        """Hand a typing frame to ``user``'s connection if it is here now; else to the
        cluster's ``forward_typing`` (if ``forward``), else drop it: typing is ephemeral,
        never queued, stored or retried. A peer node calls this for typing it forwards."""
        conn = self.node.registry.connections.get(user)
        if conn is None:
            if forward and self.forward_typing is not None:
                self.forward_typing(user, text)
            return False
        try:
            conn.send_nowait(OutFrame(text))
        except (sv.MailboxFull, sv.ActorDeadError):
            return False  # a stalled or closing socket: dropped (not worth closing it for)
        return True

    # -- the cluster's side ----------------------------------------------------------------------
    def remote(self, node: str, user: str, status: Status, at: float) -> None:
        """A peer node reports ``user`` online there since ``at``, or offline (after its
        grace) last seen ``at``."""
        self.perform(self.book.remote(node, user, status, at))

    def node_gone(self, node: str) -> None:
        self.perform(self.book.node_gone(node, self.node.wall()))

    def users_here(self) -> list[tuple[str, float]]:
        return self.book.users_here()

    def subscribe_remote(self, sub: RemoteSubscriber, users: Iterable[str]) -> list[p.Presence]:
        """A peer subscribes for its connections: the current statuses known here (the peer
        reads last-seen times of offline users from the shared store itself). No cap: a
        peer subscribes once per user for all its connections."""
        users = list(users)
        self.book.subscribe(sub, users, limit=math.inf)
        return [_frame(u, *self.book.status(u)) for u in users]

    def unsubscribe_remote(self, sub: RemoteSubscriber, users: Iterable[str] | None) -> None:
        if users is None:
            self.book.drop(sub)
        else:
            self.book.unsubscribe(sub, users)

    # -- performing the book's decisions ---------------------------------------------------------
    def perform(self, out: Outcome) -> None:
        if out.local:
            self._persist([(c.user, c.at) for c in out.local])
            for change in out.local:
                for hook in self.announce:
                    hook(change)
        for notice in out.notices:
            if not notice.to:
                continue
            frame = _frame(notice.user, notice.status, notice.last_seen)
            text = p.encode(frame)
            for sub in notice.to:
                if isinstance(sub, sv.ActorRef):
                    self._tell_local(sub, text)
                else:
                    sub.presence_changed(frame)

    @staticmethod
    def _tell_local(conn: sv.ActorRef, text: str) -> None:
        tell(conn, OutFrame(text))  # a dead one: its Down (or on_leave) drops its subscriptions

    def _persist(self, rows: list[tuple[str, float]]) -> None:
        try:
            self.node.store.write_behind(StoreBatch(last_seen=rows))
        except sv.ActorDeadError:  # no store front (the node is stopping)
            log.info("last seen of %d users not stored: the store front is not running", len(rows))


def _frame(user: str, status: Status, last_seen: float | None) -> p.Presence:
    return p.Presence(user=user, status=status, last_seen=last_seen)


def _later(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class PresenceActor(sv.Actor):
    """The grace timer and the connection monitors of ``Presence`` (the state is not here:
    it lives on the node, so a restart of this actor loses nothing; it re-monitors)."""

    mailbox_size = 100_000

    def __init__(self, presence: Presence, stop_timeout: float = 5.0) -> None:
        self.presence = presence
        self.stop_timeout = stop_timeout

    async def on_start(self) -> None:
        presence = self.presence
        presence.actor = self
        presence._monitors.clear()  # a former incarnation's: they died with it
        for conn in presence.book.connections():
            if isinstance(conn, sv.ActorRef):
                presence.watch(conn)  # a dead one answers with Down at once
        self.start_task(self._timer)

    async def receive(self, message: Any) -> Any:
        if type(message) is sv.Down:
            self.presence.connection_down(message.ref)
        return None

    async def _timer(self) -> None:
        presence = self.presence
        while True:
            deadline = presence.book.next_deadline()
            presence.timer_at = math.inf if deadline is None else deadline
            with trio.move_on_at(presence.timer_at):
                await presence.wakeup.wait()
            presence.wakeup = trio.Event()
            presence.expire()

    async def on_stop(self, reason: sv.ExitReason) -> None:
        # The node stops (or this actor restarts): everyone online here was seen now. Stored
        # with a wait, so it is committed before the store stops behind us.
        presence = self.presence
        if presence.actor is self:
            presence.actor = None
            presence.timer_at = math.inf  # no timer: a new one looks at every deadline
        rows = presence.book.last_seen_rows(presence.node.wall())
        if not rows:
            return
        with trio.move_on_after(self.stop_timeout):
            try:
                await presence.node.store.write(StoreBatch(last_seen=rows))
            except StoreUnavailable as e:
                log.warning("last seen of %d users not stored at stop: %s", len(rows), e)


def install_presence(node: Node) -> Presence:
    """Presence, last seen and typing on ``node``: its frames, welcome and leave hooks. The
    node's tree runs ``PresenceActor(node.presence)``."""
    presence = Presence(node)
    node.frame_handlers[p.Subscribe] = presence.on_subscribe
    node.frame_handlers[p.Unsubscribe] = presence.on_unsubscribe
    node.frame_handlers[p.Typing] = presence.on_typing
    node.on_welcome.append(presence.welcomed)
    node.on_leave.append(presence.left)
    return presence
