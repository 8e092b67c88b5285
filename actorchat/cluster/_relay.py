"""The relay: mail that cannot cross a link goes through the shared store instead.

When the link to the recipient's owner is down (cut, or the owner died and its lease has not
lapsed yet), or breaks with mail on it that has no answer, the sender's node writes the mail
to ``cluster_relay`` and tells the sender ``accepted`` once that commits: it is stored. The
owner of the recipient's mailbox (whoever owns it then: a dead owner's users are claimed by
the next node that needs them) polls the relay, hands the rows to the mailbox in ``id``
order, and deletes a row only once the mailbox has it in custody (acknowledged or stored:
``in_custody``), so a crash in between loses nothing (the row is taken again; the mailbox's
dedupe drops the copy).

Order per sender-recipient pair: once a node has relayed mail for a user, ALL its mail for
that user goes through the relay (``marked``) until none of its relayed rows for that user
is left, so a later message can never overtake a relayed one by crossing a link that came
back, or by going straight to a new owner.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

import supervisors as sv
from actorchat.node._messages import Incoming, OutAccepted
from actorchat.store import StoreUnavailable

from ._link import MailItem

if TYPE_CHECKING:
    from ._cluster import Cluster

log = logging.getLogger("actorchat.cluster.relay")

POLL = 0.25  # seconds between looks at the relay while anything is waiting
IDLE_POLL = 1.0  # ...and while nothing is known to wait (to find orphans)
WRITE_BATCH = 1000
FETCH = 500
QUEUE_LIMIT = 20_000  # relay rows waiting to be written before senders hear `unavailable`


def in_custody(queue: Any, sender: str, client_id: str) -> bool:
    """Pure: has this mailbox queue taken (sender, client_id) for good: acknowledged (gone from
    memory, remembered as seen) or stored? Then the relay row may go."""
    if queue is None:
        return True  # the mailbox stopped: it stops only when everything is stored
    key = queue.seen.get((sender, client_id))
    if key is None:
        return False  # not taken (or forgotten long ago): keep the row; a copy is deduped
    item = queue.items.get(key) or queue.spilling.get(key)
    if item is None:
        return True  # acknowledged, or stored and paged out
    return bool(item.stored or item.accepted)


class Relay:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.node = cluster.node
        self.queue: list[MailItem] = []
        self.marked: set[str] = set()
        self.fed: dict[int, tuple[str, str, str]] = {}  # relay id -> (recipient, sender, id)
        self.wake = trio.Event()
        self.written = 0
        self.taken = 0

    def put(self, item: MailItem) -> bool:
        """Queue ``item`` for the relay; False if the queue is full (tell `unavailable`)."""
        if len(self.queue) >= QUEUE_LIMIT:
            return False
        self.queue.append(item)
        self.marked.add(item.to)
        self.wake.set()
        return True

    def reset(self) -> None:
        """After a fence: nothing queued was accepted; nothing fed is ours any more."""
        self.queue.clear()
        self.fed.clear()

    async def run(self) -> None:
        while True:
            busy = self.queue or self.marked or self.fed
            with trio.move_on_after(POLL if busy else IDLE_POLL):
                await self.wake.wait()
            self.wake = trio.Event()
            if not self.cluster.joined.is_set() or self.cluster.fenced:
                continue
            try:
                await self._write()
                await self._unmark()
                await self._ingest()
            except StoreUnavailable as e:
                log.info("relay postponed: %s", e)

    async def _write(self) -> None:
        node = self.node
        while self.queue:
            batch = self.queue[:WRITE_BATCH]
            now = node.wall()
            rows = [
                (self.cluster.name, i.to, i.sender, i.id, i.body, now, i.group, i.media)
                for i in batch
            ]
            await node.store.read("cluster_relay_put", rows)
            del self.queue[: len(batch)]
            self.written += len(batch)
            node.metrics["cluster_relayed"] += len(batch)
            accepted: dict[str, list[str]] = {}
            for item in batch:
                if item.group is not None:  # a group's copy: safe now, for its group actor
                    self.cluster.copies_safe(item.group, item.to, item.sender, [item.id])
                    continue
                accepted.setdefault(item.sender, []).append(item.id)
            for sender, ids in accepted.items():
                node.notify(sender, OutAccepted(tuple(ids)))

    async def _unmark(self) -> None:
        if not self.marked:
            return
        waiting = await self.node.store.read("cluster_relay_waiting", self.cluster.name)
        queued = {item.to for item in self.queue}
        self.marked = {u for u in self.marked if u in waiting or u in queued}

    async def _ingest(self) -> None:
        cluster, node = self.cluster, self.node
        rows, orphans = await node.store.read(
            "cluster_relay_fetch", cluster.name, cluster.incarnation, FETCH
        )
        for user in orphans[:20]:  # relayed mail for a user nobody owns: claim it here
            try:
                await node.registry.mailbox(user)
            except StoreUnavailable:
                pass
        blocked: set[str] = set()
        for rid, recipient, sender, client_id, body, _ts, grp, media in rows:
            if rid in self.fed or recipient in blocked:
                continue
            if recipient not in cluster.owned or recipient in cluster.moving:
                blocked.add(recipient)
                continue
            try:
                ref = await node.registry.mailbox(recipient)
                taken = await ref.call(Incoming(sender, client_id, body, grp, media), timeout=None)
            except (sv.ActorDeadError, StoreUnavailable):
                taken = False
            if not taken:
                blocked.add(recipient)  # later rows wait behind this one: order holds
                continue
            self.fed[rid] = (recipient, sender, client_id)
            self.taken += 1
        done = [
            rid
            for rid, (recipient, sender, client_id) in self.fed.items()
            if in_custody(node.registry.queues.get(recipient), sender, client_id)
        ]
        if done:
            await node.store.read("cluster_relay_delete", done)
            for rid in done:
                del self.fed[rid]
