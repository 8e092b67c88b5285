"""Presence, pure: who is online, when a user counts as gone, and who must be told.

``PresenceBook`` holds no sockets, tasks or clocks: every method takes the time (``now`` on the
monotonic clock that the grace deadlines use, ``wall`` for last-seen values, seconds since the
epoch) and returns what to do (``Outcome``): presence notices for subscribers, and the changes
of this node's own users that must be persisted and announced to the cluster. The node side
(``_presence_node.py``) performs them. Tests drive it with explicit times
(tests/actorchat/node/test_presence.py).

Rules:

- A user is online while it has a connection on this node, or a peer node reports it online.
- When its last connection here closes it stays online for ``grace`` seconds; a connection
  within the grace (a quick reconnect, a takeover by a second device) cancels the offline
  change, so subscribers see no flap. After the grace, ``expire`` makes it offline here, with
  ``last_seen`` = the moment the last connection closed.
- ``last_seen`` in an ``online`` notice is the time the user came online (its session's start);
  in an ``offline`` notice the time it was last online; None for a user never seen.
- Subscribers are opaque hashable keys (the node uses a connection's ``ActorRef``, and a peer
  node may be one too); at most ``max_subscriptions`` users per subscriber.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["online", "offline"]
ONLINE: Status = "online"
OFFLINE: Status = "offline"


@dataclass(frozen=True, slots=True)
class Notice:
    """Tell ``to`` (the user's subscribers at the time of the change) its new status."""

    user: str
    status: Status
    last_seen: float | None
    to: tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class LocalChange:
    """A user came online on this node, or went offline here (after the grace), at ``at``
    (wall clock): persisted as its last-seen time, and announced to peer nodes."""

    user: str
    status: Status
    at: float


@dataclass(slots=True)
class Outcome:
    notices: list[Notice] = field(default_factory=list)
    local: list[LocalChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.notices or self.local)

    def extend(self, other: Outcome) -> None:
        self.notices.extend(other.notices)
        self.local.extend(other.local)


class TooManySubscriptions(Exception):
    """A subscribe would take a subscriber over ``max_subscriptions`` users; nothing changed."""


class PresenceBook:
    def __init__(
        self, grace: float, max_subscriptions: int = 1024, recent_limit: int = 10_000
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0, not {grace}")
        self.grace = grace
        self.max_subscriptions = max_subscriptions
        self.recent_limit = recent_limit
        # this node's connections: how many each user has here (``_user_of`` names them; a
        # count, not a set per user: a set is ~200 bytes of every idle user's memory)
        self._conns: dict[str, int] = {}
        self._user_of: dict[Hashable, str] = {}
        # users whose last connection here closed, within the grace: user -> (deadline, at)
        self._pending: dict[str, tuple[float, float]] = {}
        self._deadlines: list[tuple[float, int, str]] = []  # a heap; stale entries skipped
        self._seq = itertools.count()
        # peer nodes' reports: user -> {node: online since}, and node -> users
        self._remote: dict[str, dict[str, float]] = {}
        self._by_node: dict[str, set[str]] = {}
        # online users (anywhere): since when; users gone offline lately: last seen (bounded;
        # the store has them all, this covers the moments before a write-behind commits)
        self._since: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        # subscriptions, both ways
        self._watchers: dict[str, set[Hashable]] = {}
        self._watching: dict[Hashable, set[str]] = {}

    # -- queries ------------------------------------------------------------------------------
    def is_online(self, user: str) -> bool:
        return user in self._since

    def online_here(self, user: str) -> bool:
        """Online through a connection of this node (or within its grace)."""
        return user in self._conns or user in self._pending

    def status(self, user: str) -> tuple[Status, float | None]:
        """What this book knows now: (online, since) or (offline, last seen or None). For an
        offline user the store may know a last-seen time too; the later one is right."""
        since = self._since.get(user)
        if since is not None:
            return ONLINE, since
        return OFFLINE, self._seen.get(user)

    def users_here(self) -> list[tuple[str, float]]:
        """Users online through this node, with since when: a snapshot for a new peer."""
        return [(u, self._since.get(u, 0.0)) for u in (*self._conns, *self._pending)]

    def nodes_of(self, user: str) -> list[str]:
        """The peer nodes that report ``user`` online there."""
        return list(self._remote.get(user, ()))

    def reported_by(self, node: str) -> frozenset[str]:
        """The users ``node`` reports online."""
        return frozenset(self._by_node.get(node, ()))

    def user_of(self, conn: Hashable) -> str | None:
        return self._user_of.get(conn)

    def connections(self) -> list[Hashable]:
        return list(self._user_of)

    def last_seen_rows(self, wall: float) -> list[tuple[str, float]]:
        """What to persist when this node stops: users connected here were seen at ``wall``,
        users within their grace when their last connection closed."""
        rows = [(user, wall) for user in self._conns]
        rows += [(user, at) for user, (_, at) in self._pending.items()]
        return rows

    def subscriptions(self, sub: Hashable) -> frozenset[str]:
        return frozenset(self._watching.get(sub, ()))

    def watchers(self, user: str) -> frozenset[Hashable]:
        return frozenset(self._watchers.get(user, ()))

    def next_deadline(self) -> float | None:
        """When ``expire`` has something to do next (None: nothing pending)."""
        heap = self._deadlines
        while heap:
            deadline, _, user = heap[0]
            pending = self._pending.get(user)
            if pending is not None and pending[0] == deadline:
                return deadline
            heapq.heappop(heap)  # stale: the user reconnected (or expired) since
        return None

    # -- this node's connections ----------------------------------------------------------
    def connected(self, user: str, conn: Hashable, wall: float) -> Outcome:
        """``conn`` of ``user`` opened (a welcome). Idempotent per connection."""
        out = Outcome()
        previous = self._user_of.get(conn)
        if previous == user:
            return out
        if previous is not None:
            raise ValueError(f"{conn!r} belongs to {previous}; disconnect it first")
        was_here, was_online = self.online_here(user), self.is_online(user)
        self._user_of[conn] = user
        self._conns[user] = self._conns.get(user, 0) + 1
        self._pending.pop(user, None)  # a reconnect within the grace: no flap
        if not was_here:
            out.local.append(LocalChange(user, ONLINE, wall))
        if not was_online:
            self._came_online(user, wall, out)
        return out

    def disconnected(self, conn: Hashable, now: float, wall: float) -> float | None:
        """``conn`` closed (or died). Returns the deadline to wake ``expire`` at when it was
        its user's last connection here; None otherwise. Idempotent."""
        user = self._user_of.pop(conn, None)
        if user is None:
            return None
        conns = self._conns[user] - 1
        if conns:
            self._conns[user] = conns
            return None  # another device (or the connection taking over) is still here
        del self._conns[user]
        deadline = now + self.grace
        self._pending[user] = (deadline, wall)
        heapq.heappush(self._deadlines, (deadline, next(self._seq), user))
        return deadline

    def expire(self, now: float) -> Outcome:
        """Users whose grace ran out by ``now`` go offline here, last seen when their last
        connection closed."""
        out = Outcome()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, user = heapq.heappop(heap)
            pending = self._pending.get(user)
            if pending is None or pending[0] != deadline:
                continue
            del self._pending[user]
            at = pending[1]
            out.local.append(LocalChange(user, OFFLINE, at))
            if user not in self._remote:
                self._went_offline(user, at, out)
        return out

    # -- peer nodes (the cluster calls these) -----------------------------------------------
    def remote(self, node: str, user: str, status: Status, at: float) -> Outcome:
        """A peer node reports ``user``'s presence there: online since ``at``, or offline
        (after its own grace) last seen at ``at``."""
        out = Outcome()
        nodes = self._remote.get(user)
        if status == ONLINE:
            was = self.is_online(user)
            self._remote.setdefault(user, {})[node] = at
            self._by_node.setdefault(node, set()).add(user)
            if not was:
                self._came_online(user, at, out)
            return out
        if nodes is None or node not in nodes:
            return out
        del nodes[node]
        if not nodes:
            del self._remote[user]
        users = self._by_node.get(node)
        if users is not None:
            users.discard(user)
            if not users:
                del self._by_node[node]
        if user not in self._remote and not self.online_here(user):
            self._went_offline(user, at, out)
        return out

    def node_gone(self, node: str, wall: float) -> Outcome:
        """A peer node is gone (its lease lapsed): its users go offline, last seen ``wall``."""
        out = Outcome()
        for user in sorted(self._by_node.get(node, ())):
            out.extend(self.remote(node, user, OFFLINE, wall))
        return out

    # -- subscriptions ------------------------------------------------------------------------
    def subscribe(
        self, sub: Hashable, users: Iterable[str], limit: float | None = None
    ) -> list[str]:
        """Watch ``users``; returns those newly watched. All or nothing: over the limit
        (``max_subscriptions`` unless given) it raises ``TooManySubscriptions`` and changes
        nothing."""
        limit = self.max_subscriptions if limit is None else limit
        watching = self._watching.get(sub, set())
        new = [u for u in dict.fromkeys(users) if u not in watching]
        if len(watching) + len(new) > limit:
            raise TooManySubscriptions(f"at most {limit} subscriptions per connection")
        if new:
            self._watching[sub] = watching
            watching.update(new)
            for user in new:
                self._watchers.setdefault(user, set()).add(sub)
        return new

    def unsubscribe(self, sub: Hashable, users: Iterable[str]) -> None:
        watching = self._watching.get(sub)
        if watching is None:
            return
        for user in users:
            if user in watching:
                watching.discard(user)
                self._unwatch(user, sub)
        if not watching:
            del self._watching[sub]

    def drop(self, sub: Hashable) -> None:
        """Forget every subscription of ``sub`` (its connection left)."""
        for user in self._watching.pop(sub, ()):
            self._unwatch(user, sub)

    # -- internals ------------------------------------------------------------------------------
    def _unwatch(self, user: str, sub: Hashable) -> None:
        watchers = self._watchers.get(user)
        if watchers is not None:
            watchers.discard(sub)
            if not watchers:
                del self._watchers[user]

    def _came_online(self, user: str, since: float, out: Outcome) -> None:
        self._since[user] = since
        self._seen.pop(user, None)
        out.notices.append(Notice(user, ONLINE, since, self._to(user)))

    def _went_offline(self, user: str, at: float, out: Outcome) -> None:
        self._since.pop(user, None)
        seen = self._seen
        seen.pop(user, None)
        seen[user] = at
        if len(seen) > self.recent_limit:
            del seen[next(iter(seen))]  # the oldest
        out.notices.append(Notice(user, OFFLINE, at, self._to(user)))

    def _to(self, user: str) -> tuple[Hashable, ...]:
        watchers = self._watchers.get(user)
        return tuple(watchers) if watchers else ()
