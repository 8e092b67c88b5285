"""Who is where on this node: each user's mailbox actor and connection.

A plain object, not an actor: the node runs on one trio thread, so a lookup is a dict access,
while a registry actor would add a ~31 us channel round trip to every message for no isolation
gain (a registry crash would take every route with it anyway). What it holds is rebuilt by the
actors themselves (they register and leave), so nothing here needs to survive a crash.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import supervisors as sv
from actorchat.store import StoreUnavailable

from ._messages import Tick
from ._queue import DeliveryQueue

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.registry")

KNOWN_USERS_LIMIT = 100_000


class Registry:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.mailboxes: dict[str, sv.ActorRef] = {}
        self.connections: dict[str, sv.ActorRef] = {}
        # Each registered mailbox's queue, read by /metrics at scrape time (mailbox depths);
        # entered and removed with ``mailboxes``.
        self.queues: dict[str, DeliveryQueue] = {}
        self.known_users: set[str] = set()
        self._starting: dict[str, trio.Event] = {}
        # Offline mailboxes with nothing pending, waiting out ``user_linger``: user -> (since
        # when, ref), oldest first (``UserActor._wake_ticker``; ``linger_round`` wakes the due).
        self.resting: dict[str, tuple[float, sv.ActorRef]] = {}

    async def mailbox(self, user: str, *, takeover: bool = False) -> sv.ActorRef:
        """The user's mailbox actor, started (with its stored state loaded) if need be.
        In a cluster it starts only once this node owns the mailbox (``takeover``: a login,
        which takes it from another node; otherwise only a free one is claimed)."""
        while True:
            ref = self.mailboxes.get(user)
            if ref is not None and ref.is_alive():
                return ref
            pending = self._starting.get(user)
            if pending is None:
                break
            await pending.wait()
        done = self._starting[user] = trio.Event()
        try:
            node = self.node
            bound = node.settings.mailbox_bound
            # At most this many spill-only messages wait in memory for the store; beyond it new
            # mail is refused (`unavailable`): memory stays proportional to the mailbox bound
            # even when the store is slower than the senders (contract 4).
            queue = DeliveryQueue(
                user, bound=bound, window=node.delivery_window, backlog=2 * max(bound, 1000)
            )
            if node.cluster is not None:
                await node.cluster.acquire(user, takeover=takeover)
            max_key, dedupe, page = await node.store.read("load_mailbox", user, 10_000, 500)
            queue.load(max_key, dedupe, page, 500)
            sup = await node.users()
            ref = await sup.start_child((user, queue, node))
            if node.cluster is not None and user not in node.cluster.owned:
                # Let go while it started (a fence; a release that stopped waiting for this
                # start): another node may own the user now, so no mailbox here.
                ref.stop()
                raise StoreUnavailable(f"{user}'s mailbox moved while it started; try again")
            self.mailboxes[user] = ref
            self.queues[user] = queue
            return ref
        finally:
            del self._starting[user]
            done.set()

    async def started(self, user: str) -> None:
        """Wait until no start of ``user``'s mailbox is under way (nor held by
        ``hold_offline``)."""
        while (pending := self._starting.get(user)) is not None:
            await pending.wait()

    def hold_offline(self, users: list[str]) -> tuple[list[str], trio.Event]:
        """Of ``users``, those with no mailbox actor running or starting, held off: until the
        returned event is set, a mailbox start for one of them waits (``mailbox`` waits on
        ``_starting``), so it loads what a group actor writes for them meanwhile and never
        hands out a key that collides with those rows (``Store.put_group_copies``)."""
        done = trio.Event()
        held = []
        for user in users:
            ref = self.mailboxes.get(user)
            if (ref is not None and ref.is_alive()) or user in self._starting:
                continue
            self._starting[user] = done
            held.append(user)
        return held, done

    def release(self, held: list[str], done: trio.Event) -> None:
        for user in held:
            if self._starting.get(user) is done:
                del self._starting[user]
        done.set()

    def mailbox_gone(self, user: str, ref: sv.ActorRef) -> None:
        if self.mailboxes.get(user) is ref:
            del self.mailboxes[user]
            self.queues.pop(user, None)
        resting = self.resting.get(user)
        if resting is not None and resting[1] is ref:
            del self.resting[user]

    def rest(self, user: str, ref: sv.ActorRef, since: float) -> None:
        """``user``'s mailbox rests from ``since`` (kept if it rests already): no timer of
        its own, ``linger_round`` wakes it once ``user_linger`` has passed."""
        if user not in self.resting:
            self.resting[user] = (since, ref)

    def wake(self, user: str) -> None:
        """``user``'s mailbox has work again (or a connection): it rests no more."""
        if self.resting:
            self.resting.pop(user, None)

    def linger_round(self, now: float) -> int:
        """Wake (a ``Tick``) every resting mailbox whose linger has passed, and forget it;
        it stops if it is still idle (``UserActor._tick``), or rests again. Returns how many.
        The oldest come first, so a round looks at the due ones and one more."""
        linger = self.node.user_linger
        due = []
        for user, (since, ref) in self.resting.items():
            if now - since < linger:
                break
            due.append((user, ref))
        for user, ref in due:
            del self.resting[user]
            try:
                ref.send_nowait(Tick())
            except (sv.ActorDeadError, sv.MailboxFull):
                pass  # gone, or busy: it rests again after its messages
        return len(due)

    def connection_arrived(self, user: str, ref: sv.ActorRef) -> None:
        self.connections[user] = ref

    def connection_gone(self, user: str, ref: sv.ActorRef) -> None:
        if self.connections.get(user) is ref:
            del self.connections[user]

    async def user_exists(self, user: str) -> bool:
        if user in self.known_users or user in self.mailboxes:
            return True
        found = await self.node.store.read("users_exist", [user])
        if user in found:
            if len(self.known_users) >= KNOWN_USERS_LIMIT:
                self.known_users.clear()
            self.known_users.add(user)
            return True
        return False
