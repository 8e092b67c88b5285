"""The cluster at run time: the lease heartbeat, the links to peers, cross-node mail, and the
hand-over of a user's mailbox from one node to another.

``Cluster`` is what the node's actors use (``node.cluster``); ``ClusterActor`` is the child
of the node's tree that runs it (heartbeat and links), between the store front and the
users: on a stop, every mailbox has stored what it holds before the cluster leaves (ends its
lease) and the links close.

Shape (docs/guarantees.md, "Cluster"):

* Exactly one node owns a user's mailbox: the one in the user's ``cluster_owners`` row, while
  it is a live member. A node starts a user's mailbox only after claiming it (``acquire``).
  A login on another node takes the user over: it asks the owner over the link to let go
  (the owner closes the old connection with 4001, stops the mailbox, which stores what it
  holds, hands the row over, and answers); an owner that does not answer is waited out
  until its lease lapses.
* A ``send`` to a user owned elsewhere crosses the link (``MailItem``); the owner's mailbox
  decides as on one node, and its ``accepted``/``receipt`` notices travel back (``NoteItem``)
  to the node the mail came from. Until then the item is *pending* on the link; if the link
  breaks or the peer goes down first, every pending sender hears ``unavailable`` (nothing
  was promised; a retry is deduplicated by the owner).
* Groups (docs/guarantees.md, "Groups across nodes"): a group's actor runs on the node that
  holds its ``group:<id>`` row (``group_host``; other nodes forward group frames to it); its
  copies for members owned elsewhere cross the link (``group_copy``) and their ``group_safe``
  notices come back, or go through the relay. Presence and typing: ``_presence_link.py``.
* The heartbeat renews the lease every lease/4 and fences the node (drops every connection
  and mailbox, writes no mail) if it could not renew within lease x 0.75: by then no one
  else may have claimed its users, and it rejoins as a new incarnation.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url

import supervisors as sv
from actorchat.node._connection import tell
from actorchat.node._messages import (
    Incoming,
    IncomingBatch,
    Kick,
    OutAccepted,
    OutFrame,
    OutReceipt,
    Release,
)
from actorchat.store import StoreUnavailable

from ._lease import Route, member_proof, renew_every, route, valid_until, view
from ._link import (
    Accepting,
    Control,
    Dialing,
    Frame,
    Lanes,
    LinkRefused,
    MailItem,
    NoteItem,
    Opener,
    PresenceItem,
    Refusal,
    coalesce_notes,
    fill_frame,
)
from ._presence_link import PresenceLink
from ._relay import Relay

if TYPE_CHECKING:
    from actorchat.node import Node

log = logging.getLogger("actorchat.cluster")

LINK_PATH = "/cluster/link"
PEER_QUEUE = 10_000  # link items queued for one peer before senders wait
FRAME_ITEMS = 1024  # items per link frame at most
LANE_LIMIT = PEER_QUEUE  # items an incoming link holds for busy mailboxes before it waits
KEEPALIVE = 0.5  # an idle link sends an empty frame this often...
LINK_IDLE = 3.0  # ...and a link silent this long is taken for cut
HOME_LIMIT = 200_000  # sender -> node entries kept for routing notices
GROUP_KEY = "group:"  # cluster_owners name of a group's host ("group:<id>"; no user has ':')


def new_incarnation() -> int:
    """Distinct across restarts of one node name: microseconds since the epoch, plus noise."""
    return int(time.time() * 1_000_000) * 16 + secrets.randbelow(16)


class Peer:
    """Our outgoing link to one live member: a bounded queue of link items and the mail items
    sent on it that are not accepted yet."""

    def __init__(self, name: str, incarnation: int, address: str) -> None:
        self.name, self.incarnation, self.address = name, incarnation, address
        self.send_channel, self.receive_channel = trio.open_memory_channel[Any](PEER_QUEUE)
        self.pending: dict[tuple[str, str], MailItem] = {}  # sent, no `accepted` back yet
        # release requests sent on this link, no `released` back yet: their waiters, woken
        # (as a "no") when the link ends (``Cluster._request_release``)
        self.releases: set[trio.Event] = set()
        # group copies sent, no `group_safe` back yet: (member, sender, id) -> item
        self.copies: dict[tuple[str, str, str], MailItem] = {}
        self.up = False
        self.closed = False
        self.cancel = trio.CancelScope()
        self.frames = 0
        self.items = 0

    def put_nowait(self, item: Any) -> bool:
        try:
            self.send_channel.send_nowait(item)
            return True
        except trio.WouldBlock:
            return False

    def drop_queued(self, items: list[MailItem]) -> None:
        """Take these items out of the queue, keeping the rest in order. Mail that was
        pending when a link failed goes to the relay; a copy of it still queued here must
        not cross the next link too, or it would reach the owner before the relayed mail
        sent ahead of it (order per pair). Synchronous: nothing is queued meanwhile."""
        if not items:
            return
        gone = {id(item) for item in items}
        kept: list[Any] = []
        while True:
            try:
                item = self.receive_channel.receive_nowait()
            except trio.WouldBlock:
                break
            if id(item) not in gone:
                kept.append(item)
        for item in kept:
            self.put_nowait(item)  # full only past blocked group frames: dropped, as notes are


class _Slot:
    """One user's place in a batch of claims."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: tuple[str, int] | None = None
        self.error: BaseException | None = None


class Cluster:
    def __init__(self, node: Node) -> None:
        settings = node.settings
        assert settings.cluster_secret is not None
        self.node = node
        self.secret: bytes = settings.cluster_secret
        self.name = settings.node_name
        self.lease = settings.cluster_lease
        self.incarnation = new_incarnation()
        self.address = ""
        self.joined = trio.Event()
        self.fenced = False
        self.valid_until = float("-inf")
        self.members: dict[str, int] = {}  # live trusted peers: name -> incarnation
        self.member_rows: list[tuple[Any, ...]] = []
        self.down_since: dict[str, float] = {}  # wall time we first saw a member down
        self.untrusted: frozenset[str] = frozenset()
        self.owned: set[str] = set()
        self.owners: dict[str, str] = {}  # user -> peer that owns its mailbox (a cache)
        self.moving: dict[str, trio.Event] = {}
        self.home: OrderedDict[str, str] = OrderedDict()  # sender -> node its mail came from
        self.group_home: OrderedDict[str, str] = OrderedDict()  # group -> node of its copies
        self.peers: dict[str, Peer] = {}
        self.lanes: dict[str, Lanes] = {}  # incoming links' mail for busy mailboxes, by peer
        self.requests: dict[int, tuple[trio.Event, list[bool]]] = {}
        self._next_req = 0
        self.actor: ClusterActor | None = None
        self.refused_links = 0
        self.relay = Relay(self)
        self.presence_link = PresenceLink(self)
        self._claims: dict[str, _Slot] = {}
        self._claiming = False
        # users with an ``acquire`` in flight, and those of them released meanwhile: a claim
        # that comes back "ours" after a release handed the row on is stale (``acquire``)
        self._acquiring: set[str] = set()
        self._lost: set[str] = set()

    # -- identity ----------------------------------------------------------------------------
    @property
    def me(self) -> tuple[str, int]:
        return self.name, self.incarnation

    def status(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "incarnation": self.incarnation,
            "joined": self.joined.is_set(),
            "members": sorted(self.members),
            "linked": sorted(n for n, p in self.peers.items() if p.up),
            "down": sorted(self.down_since),
            "untrusted": sorted(self.untrusted),
            "owned": len(self.owned),
            "connected": len(self.node.registry.connections),
            "refused_links": self.refused_links,
            # per outgoing link: frames written and items in them (items/frame = batching)
            "links": {n: [p.frames, p.items] for n, p in sorted(self.peers.items())},
            # per link: items queued to send, and items taken in but not yet in a mailbox
            "queued": {n: p.receive_channel.statistics().current_buffer_used
                       for n, p in sorted(self.peers.items())},
            "lanes": {n: lanes.queued for n, lanes in sorted(self.lanes.items())},
            "relay": {"written": self.relay.written, "taken": self.relay.taken},
        }

    def lapsed(self) -> bool:
        """Past the deadline of the last renewal: this node may no longer act on its lease.
        The heartbeat fences it at its next step; a starved or paused process can do other
        work first, and that work must not write mail (``StoreClient.write``)."""
        return self.joined.is_set() and trio.current_time() >= self.valid_until

    # -- ownership -----------------------------------------------------------------------------
    async def acquire(self, user: str, *, takeover: bool) -> None:
        """Make this node the owner of ``user``'s mailbox before it starts here. Without
        ``takeover`` only a free mailbox is claimed; with it (a login), a live owner is asked
        to let go, or waited out until its lease lapses. Raises ``StoreUnavailable``."""
        if user in self.owned and not self.fenced:
            return
        with trio.move_on_after(self.lease * 2):
            await self.joined.wait()
        if not self.joined.is_set() or self.fenced:
            raise StoreUnavailable("this node is not in the cluster yet; try again")
        deadline = trio.current_time() + self.lease * 2 + 2.0
        asked: set[str] = set()
        self._acquiring.add(user)
        try:
            while True:
                owner = await self._claim(user)
                if user in self._lost:
                    # A release ran while the claim was out: its answer may say "ours" from
                    # before the row was handed on. Claim again to learn where it is now.
                    self._lost.discard(user)
                    continue
                if owner == self.me:
                    self.owned.add(user)
                    self.owners.pop(user, None)
                    return
                holder = owner[0]
                if not takeover:
                    self.owners[user] = holder
                    raise StoreUnavailable(f"{user}'s mailbox is on node {holder}; try again")
                peer = self.peers.get(holder)
                if peer is not None and peer.up and holder not in asked:
                    asked.add(holder)
                    if await self._request_release(peer, user):
                        continue
                if trio.current_time() > deadline:
                    raise StoreUnavailable(
                        f"{user}'s mailbox is held by node {holder}, which does not answer; "
                        "try again"
                    )
                await trio.sleep(0.2)  # wait for the holder's lease to lapse
        finally:
            self._acquiring.discard(user)
            self._lost.discard(user)

    async def _claim(self, user: str) -> tuple[str, int]:
        """``cluster_claim``, batched: the claims that arrive while one is in the database go
        together in the next transaction (a node's death sends all its users to log in again
        at once; one claim a round trip would serialize them)."""
        slot = self._claims.get(user)
        if slot is None:
            slot = self._claims[user] = _Slot()
        if not self._claiming:
            self._claiming = True
            batch: dict[str, _Slot] = {}
            try:
                while self._claims:
                    await trio.sleep(0)  # let the claims of this scheduler pass join
                    batch, self._claims = self._claims, {}
                    try:
                        owners = await self.node.store.read(
                            "cluster_claim_many", list(batch), self.name, self.incarnation
                        )
                    except StoreUnavailable as e:
                        for waiting in batch.values():
                            waiting.error = e
                            waiting.done.set()
                        continue
                    for name, waiting in batch.items():
                        waiting.value = owners[name]
                        waiting.done.set()
            finally:
                self._claiming = False
                for waiting in [*batch.values(), *self._claims.values()]:
                    if not waiting.done.is_set():  # this task was cancelled: nobody waits
                        waiting.error = StoreUnavailable("the claim was interrupted")
                        waiting.done.set()
                self._claims = {k: v for k, v in self._claims.items() if not v.done.is_set()}
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.value is not None
        return slot.value

    async def _request_release(self, peer: Peer, user: str) -> bool:
        self._next_req += 1
        req = self._next_req
        done, result = trio.Event(), [False]
        self.requests[req] = (done, result)
        try:
            control = Control("release", req, user, self.name, self.incarnation)
            if not peer.up or not peer.put_nowait(control):
                return False
            # A link that ends before the answer ends the wait too (``run_peer``): a holder
            # killed with SIGKILL never answers, and its users then waited the full bound
            # (15 s by default) before waiting out its lease.
            peer.releases.add(done)
            with trio.move_on_after(self.lease + self.node.settings.ack_timeout):
                await done.wait()
            return result[0]
        finally:
            self.requests.pop(req, None)
            peer.releases.discard(done)

    async def _release(self, origin: str, control: Control) -> None:
        """A peer asks us to hand ``control.user`` over: close the user's connection, stop the
        mailbox (it stores everything it holds, in key order), hand the row over, answer."""
        node, user = self.node, control.user
        ok = False
        event = self.moving.setdefault(user, trio.Event())
        try:
            # A start of this mailbox here (claimed, its mail loading) ends first, and its
            # mailbox is then stopped like any other. Overtaken, the start went on to own the
            # user and register a mailbox on a node that had handed the row on: mail stored
            # here and accepted while the user was online on the claimant.
            with trio.move_on_after(node.settings.ack_timeout + 5):
                await node.registry.started(user)
            if user in self._acquiring:
                self._lost.add(user)  # the wait ran out mid-claim: that claim's answer is stale
            self.owned.discard(user)
            conn = node.registry.connections.get(user)
            if conn is not None:
                try:
                    conn.send_nowait(Kick(4001, "session taken over on another node"))
                except (sv.ActorDeadError, sv.MailboxFull):
                    conn.kill()
            ref = node.registry.mailboxes.get(user)
            if ref is not None:
                # In order, after whatever was cast to it before ``moving`` held new sends back
                # (``route_send``): those are taken and stored, not dropped with the mailbox.
                try:
                    ref.send_nowait(Release())
                except sv.MailboxFull:
                    ref.stop()  # 10,000 deep: calls (they fail and are routed again), not casts
                except sv.ActorDeadError:
                    pass
                with trio.move_on_after(node.settings.ack_timeout + 5):
                    await ref.wait()
                node.registry.mailbox_gone(user, ref)
            try:
                ok = await node.store.read(
                    "cluster_transfer", user, self.me, (control.node, control.inc)
                )
                ok = True  # not ours any more either way: the claimant claims again
            except StoreUnavailable:
                ok = False
            if ok:
                self.owners[user] = control.node
                for peer in self.peers.values():
                    if peer.up and peer.name != control.node:
                        peer.put_nowait(Control("moved", 0, user, control.node, control.inc))
        finally:
            if self.moving.get(user) is event:
                del self.moving[user]
            event.set()
        peer = self.peers.get(origin)
        if peer is not None:
            peer.put_nowait(Control("released", control.req, user, ok=ok))

    # -- sending -------------------------------------------------------------------------------
    async def _holder(self, user: str) -> str | None:
        """The member holding ``user``'s mailbox (cached, else from the store, then cached);
        None: it is here, or free for us to start here."""
        holder = self.owners.get(user)
        if holder is None or holder not in self.members:
            owner = await self.node.store.read("cluster_owner", user)
            where, holder = route(
                None if owner is None else owner[:2],
                self.me,
                self.members,
                [name for name, peer in self.peers.items() if peer.up],
            )
            if where is Route.LOCAL:
                return None
            assert holder is not None
            self.owners[user] = holder
        return holder

    async def route_send(self, conn: Any, to: str, message: Incoming, client_id: str) -> bool:
        """Called by a connection for every ``send`` to a user. False: the mailbox is (or
        may be started) here, go on as on one node. True: handled here (crossed a link, or
        answered ``unavailable``)."""
        while to in self.moving:
            await self.moving[to].wait()
        relay = self.relay
        if relay.marked and to in relay.marked:
            # Some of our mail for `to` waits in the relay: this goes behind it (order).
            return self._relay(MailItem(
                message.sender, client_id, to, message.body, message.group, message.media))
        if to in self.owned:
            return False
        holder = await self._holder(to)
        if holder is None:
            return False
        peer = self.peers.get(holder)
        item = MailItem(message.sender, client_id, to, message.body, message.group, message.media)
        if peer is None or not peer.up:
            # The owner is alive (its lease holds) but unreachable: through the store.
            return self._relay(item)
        peer.pending[(message.sender, client_id)] = item
        if not peer.put_nowait(item):  # no checkpoint per message while the queue has room
            await peer.send_channel.send(item)
        self.node.metrics["cluster_sent"] += 1
        return True

    def _relay(self, item: MailItem) -> bool:
        if not self.relay.put(item):
            self.node.unavailable(item.sender, item.id)
        return True

    def notify_remote(self, user: str, message: Any) -> None:
        """``Node.notify`` for a user not connected here: to the node its mail came from (its
        ``accepted`` and receipts), or the node that owns it. Dropped if there is none: the
        sender's client retries what it has no ``accepted`` for."""
        holder = self.home.get(user) or self.owners.get(user)
        if holder is None:
            return
        peer = self.peers.get(holder)
        if peer is None or not peer.up:
            return
        kind = type(message)
        if kind is OutAccepted:
            note = NoteItem(user, "accepted", list(message.ids))
        elif kind is OutReceipt:
            note = NoteItem(
                user, "receipt", list(message.ids), message.status, message.by,
                group=message.group,
            )
        elif kind is OutFrame:
            note = NoteItem(user, "frame", text=message.text)
        else:
            return
        peer.put_nowait(note)

    # -- groups ---------------------------------------------------------------------------------
    async def group_host(self, group: str) -> str | None:
        """Where ``group``'s actor runs: None for here (claimed now if need be), else the live
        node that holds its ``group:<id>`` row. One host per group cluster-wide, so one
        sequencer and one order. Raises ``StoreUnavailable``."""
        key = GROUP_KEY + group
        if key in self.owned and not self.fenced:
            return None
        cached = self.owners.get(key)  # dropped when that peer goes or says "moved"
        if cached is not None and cached in self.members:
            return cached
        if not self.joined.is_set() or self.fenced:
            raise StoreUnavailable("this node is not in the cluster yet; try again")
        owner = await self._claim(key)
        if owner == self.me:
            self.owned.add(key)
            self.owners.pop(key, None)
            return None
        self.owners[key] = owner[0]
        return owner[0]

    async def forward_group_frame(self, host: str, user: str, frame: Any) -> None:
        """A client's group frame (send, add, remove, leave) to the node hosting the group.
        A ``send`` is pending until its ``accepted`` comes back; if the host is unreachable
        or the link breaks first, the sender hears ``unavailable`` (retries are deduped)."""
        import msgspec

        from actorchat import protocol as p

        item = MailItem(user, frame.id, GROUP_KEY + frame.group,
                        msgspec.json.encode(frame).decode(), frame.group)
        peer = self.peers.get(host)
        is_send = isinstance(frame, p.Send)
        if peer is None or not peer.up:
            self.node.unavailable(user, frame.id)
            return
        if is_send:
            peer.pending[(user, frame.id)] = item
        await peer.send_channel.send(item)

    async def _take_group_frame(self, origin: str, item: MailItem) -> None:
        import msgspec

        from actorchat import protocol as p
        from actorchat.node._groups import take_remote_frame

        peer = self.peers.get(origin)
        try:
            host = await self.group_host(item.group or "")
        except StoreUnavailable:
            host = ""
        if host is not None:  # not (or no longer) the host here: the sender tries again
            if peer is not None:
                peer.put_nowait(Refusal(item.sender, item.id, item.to, "moved"))
            return
        frame = msgspec.json.decode(item.body, type=p.ClientFrame)
        await take_remote_frame(self.node, item.sender, frame)

    async def group_copy(self, member: str, item: MailItem) -> str:
        """Where a group's copy for ``member`` goes: ``"local"`` (a mailbox here: the caller
        hands it), ``"sent"`` (over the link to the member's owner, or into the relay, whose
        commit makes it safe), ``"retry"`` (the relay is full)."""
        relay = self.relay
        if relay.marked and member in relay.marked:
            return "sent" if relay.put(item) else "retry"  # behind its relayed copies
        if member in self.owned or self.fenced:
            return "local"
        holder = await self._holder(member)
        if holder is None:
            return "local"
        peer = self.peers.get(holder)
        if peer is None or not peer.up:
            return "sent" if relay.put(item) else "retry"
        peer.copies[(member, item.sender, item.id)] = item
        await peer.send_channel.send(item)
        self.node.metrics["cluster_group_copies"] += 1
        return "sent"

    def copies_safe(self, group: str, member: str, sender: str, ids: list[str]) -> None:
        """Copies of ``group`` for ``member`` are safe (relay commit or the owner's notice):
        tell the group actor here."""
        from actorchat.node._groups import CopiesSafe

        ref = self.node.groups.actors.get(group)
        if ref is None:
            return  # no actor: nothing waits (a rehand asks again)
        try:
            ref.send_nowait(CopiesSafe(member, sender, tuple(ids)))
        except (sv.MailboxFull, sv.ActorDeadError):
            pass

    def group_effect(
        self, kind: str, group: str, member: str, sender: str, ids: list[str],
        status: str | None = None,
    ) -> bool:
        """A mailbox here made copies of ``group`` safe (``group_safe``) or got receipts
        (``group_receipt``) and the group actor is elsewhere: to the node its copies came
        from. False if there is none (the caller falls back)."""
        holder = self.group_home.get(group)
        peer = None if holder is None else self.peers.get(holder)
        if peer is None or not peer.up:
            return False
        return peer.put_nowait(NoteItem(sender, kind, list(ids), status, member, group=group))

    def _take_group_note(self, peer: Peer | None, note: NoteItem) -> None:
        from actorchat.node._groups import Receipts

        group, member = note.group or "", note.by or ""
        if note.kind == "group_safe":
            if peer is not None:
                for client_id in note.ids:
                    peer.copies.pop((member, note.user, client_id), None)
            self.copies_safe(group, member, note.user, note.ids)
            return
        ref = self.node.groups.actors.get(group)
        status = note.status or "delivered"
        try:
            if ref is None:
                raise sv.ActorDeadError(group)
            ref.send_nowait(Receipts(member, status, note.user, tuple(note.ids)))
        except (sv.MailboxFull, sv.ActorDeadError):
            self.node.notify(note.user, OutReceipt(status, member, tuple(note.ids), group))

    # -- receiving -----------------------------------------------------------------------------
    async def _take_mail(self, origin: str, to: str, items: list[MailItem]) -> None:
        """One recipient's mail from a link (its lane), in order: one mailbox call for all of it
        (``IncomingBatch``), and a ``Refusal`` back for each item it did not take."""
        node = self.node
        peer = self.peers.get(origin)
        home = self.home
        for item in items:
            home[item.sender] = origin
            if item.group is not None:
                self.group_home[item.group] = origin
                self.group_home.move_to_end(item.group)
                if len(self.group_home) > HOME_LIMIT:
                    self.group_home.popitem(last=False)
        while len(home) > HOME_LIMIT:
            home.popitem(last=False)
        if to.startswith(GROUP_KEY):
            for item in items:
                await self._take_group_frame(origin, item)
            return
        batch = IncomingBatch(tuple(
            Incoming(item.sender, item.id, item.body, item.group, item.media) for item in items
        ))
        for _attempt in range(3):
            if to not in self.owned or self.fenced or to in self.moving:
                break
            try:
                ref = await node.registry.mailbox(to)
                taken = await ref.call(batch, timeout=None)
            except sv.ActorDeadError:
                continue  # stopped or crashed: the next one dedupes what this one took
            except StoreUnavailable:
                taken = [False] * len(items)
            if peer is not None:
                for item, ok in zip(items, taken, strict=True):
                    if not ok:
                        peer.put_nowait(Refusal(item.sender, item.id, item.to, "unavailable"))
            node.metrics["cluster_received"] += len(items)
            node.metrics["cluster_mailbox_calls"] += 1
            return
        if peer is not None:
            for item in items:
                peer.put_nowait(Refusal(item.sender, item.id, item.to, "moved"))

    async def _run_lane(self, origin: str, lanes: Lanes, to: str, room: list[trio.Event]) -> None:
        """One recipient's lane of an incoming link: its mail in order, as much as is queued
        in each mailbox call, until none is left."""
        while (items := lanes.take(to)) is not None:
            try:
                await self._take_mail(origin, to, items)
            finally:
                lanes.done(len(items))
                room[0].set()

    def _take_note(self, origin: str, note: NoteItem) -> None:
        peer = self.peers.get(origin)
        if note.kind == "group_safe" or note.kind == "group_receipt":
            self._take_group_note(peer, note)
            return
        if note.kind == "accepted" and peer is not None:
            for client_id in note.ids:
                peer.pending.pop((note.user, client_id), None)
        conn = self.node.registry.connections.get(note.user)
        if conn is None:
            return
        if note.kind == "accepted":
            message: Any = OutAccepted(tuple(note.ids))
        elif note.kind == "receipt":
            message = OutReceipt(
                note.status or "delivered", note.by or "", tuple(note.ids), note.group
            )
        elif note.kind == "frame" and note.text is not None:
            message = OutFrame(note.text)
        else:
            return
        tell(conn, message)

    def _take_refusal(self, origin: str, refusal: Refusal) -> None:
        peer = self.peers.get(origin)
        if peer is not None and peer.copies.pop((refusal.to, refusal.sender, refusal.id), None):
            # A group's copy: the group actor hands it out again later (its own order).
            if self.owners.get(refusal.to) == origin:
                del self.owners[refusal.to]
            return
        if peer is not None:
            peer.pending.pop((refusal.sender, refusal.id), None)
        if refusal.code == "moved" and self.owners.get(refusal.to) == origin:
            del self.owners[refusal.to]
        self.node.unavailable(refusal.sender, refusal.id)

    def _take_control(self, origin: str, control: Control) -> None:
        if control.kind == "release":
            assert self.actor is not None
            self.actor.start_task(self._release, origin, control)
        elif control.kind == "released":
            pending = self.requests.get(control.req)
            if pending is not None:
                pending[1][0] = control.ok
                pending[0].set()
        elif control.kind == "moved":
            if control.node == self.name:
                self.owners.pop(control.user, None)
            else:
                self.owners[control.user] = control.node

    async def accept_link(self, request: WebSocketRequest) -> None:
        """An incoming link (``/cluster/link`` on the gateway's port): handshake, then frames
        from that peer, in order, until it closes or fails a check."""
        ws = await request.accept()
        accepting = Accepting(self.secret)
        origin = "?"
        lanes, room = Lanes(), [trio.Event()]
        try:
            with trio.fail_after(5):
                await ws.send_message(accepting.challenge())
                answer = accepting.check_hello(await ws.get_message())
                await ws.send_message(answer)
            assert accepting.peer is not None
            origin = accepting.peer[0]
            opener = accepting.opener()
            # A node that just joined may dial us before our next renewal shows it: answers
            # to its mail travel on our link to it, so wait (briefly) until we have one.
            with trio.move_on_after(renew_every(self.lease) * 1.5):
                while origin not in self.peers:
                    await trio.sleep(0.05)
            self.lanes[origin] = lanes
            async with trio.open_nursery() as nursery:
                try:
                    failure = await self._read_link(ws, opener, origin, lanes, room, nursery)
                finally:
                    # The lanes stop with the link: the peer relays what they held (it has
                    # no `accepted` for it), and the owner drops what it took already.
                    nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
        except (LinkRefused, trio.TooSlowError) as e:
            self.refused_links += 1
            self.node.metrics["cluster_links_refused"] += 1
            log.warning("link from %s refused: %s", origin, e)
            with trio.move_on_after(1):
                await ws.aclose(1008, "refused")
            return
        except ConnectionClosed:
            pass
        except Exception:  # never let one link take the gateway down
            log.exception("link from %s failed", origin)
        finally:
            if self.lanes.get(origin) is lanes:
                del self.lanes[origin]
            # Notices for mail we sent that peer may have been lost with this link.
            peer = self.peers.get(origin)
            if peer is not None:
                self._fail_pending(peer)
        with trio.move_on_after(1):
            await ws.aclose()

    async def _read_link(
        self, ws: Any, opener: Opener, origin: str, lanes: Lanes, room: list[trio.Event],
        nursery: trio.Nursery,
    ) -> Exception | None:
        """Frames from ``origin``, in order. Mail goes to its recipients' lanes and this loop
        reads on: a frame is never waited for, so the link's pings are answered while
        mailboxes work, and a lane's call takes all its recipient's mail that came meanwhile.
        Only a backlog of ``LANE_LIMIT`` items makes it wait (back-pressure on the peer).
        Returns the error that ended the link (raised in the caller, outside the nursery)."""
        try:
            while True:
                while lanes.queued >= LANE_LIMIT:
                    room[0] = trio.Event()
                    await room[0].wait()
                with trio.move_on_after(LINK_IDLE) as idle:
                    data = await ws.get_message()
                if idle.cancelled_caught:
                    log.warning("link from %s silent for %.1f s: closing it", origin, LINK_IDLE)
                    return None
                frame = opener.open(data)
                for to in lanes.put(frame.mail):
                    nursery.start_soon(self._run_lane, origin, lanes, to, room)
                for note in frame.notes:
                    self._take_note(origin, note)
                for refusal in frame.refused:
                    self._take_refusal(origin, refusal)
                for control in frame.control:
                    self._take_control(origin, control)
                for presence in frame.presence:
                    self.presence_link.take(origin, presence)
        except (LinkRefused, ConnectionClosed) as e:
            return e

    # -- links out -----------------------------------------------------------------------------
    def _fail_pending(self, peer: Peer) -> None:
        """The link broke (either way) with mail on it that has no ``accepted`` back: the
        peer may or may not have it. Relay every item, in the order sent: stored, it is
        accepted, and the owner drops what it already had (dedupe)."""
        pending, peer.pending = peer.pending, {}
        copies, peer.copies = peer.copies, {}
        peer.drop_queued([*pending.values(), *copies.values()])
        for item in pending.values():
            if item.to.startswith(GROUP_KEY):
                self.node.unavailable(item.sender, item.id)  # a group frame: not accepted
            else:
                self._relay(item)
        for item in copies.values():  # group copies, in the group's order per member
            if not self.relay.put(item):
                pass  # still unsafe in its group: handed out again later

    async def run_peer(self, peer: Peer) -> None:
        """Dial ``peer`` and write its queue, in batches, until it is closed; reconnect with
        backoff while it is a live member."""
        backoff = 0.1
        try:
            with peer.cancel:
                while not peer.closed:
                    try:
                        await self._link_once(peer)
                        backoff = 0.1
                    except Exception as e:  # any failure ends this link only: dial again
                        # (the ping task's TooSlowError or ConnectionClosed arrives in a group)
                        log.info("link to %s ended: %r", peer.name, e)
                    finally:
                        peer.up = False
                        self._fail_pending(peer)
                        for waiting in peer.releases:  # unanswered: "no", now
                            waiting.set()
                        peer.releases.clear()
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        except Exception as e:
            # Closed (cancelled) while the link was failing: the group of both leaves the
            # cancel scope as the link's error alone. Not a reason to restart the cluster.
            if not peer.closed:
                raise
            log.info("link to %s closed while failing: %r", peer.name, e)

    async def _link_once(self, peer: Peer) -> None:
        dialing = Dialing(self.secret, self.name, self.incarnation)
        try:
            async with open_websocket_url(
                peer.address,
                max_message_size=64 * 1024 * 1024,
                connect_timeout=5,
                disconnect_timeout=1,
            ) as ws:
                with trio.fail_after(5):
                    await ws.send_message(dialing.hello(await ws.get_message()))
                    dialing.check_answer(await ws.get_message())
                peer.up = True
                log.info("linked to %s at %s", peer.name, peer.address)
                self.presence_link.link_up(peer)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._ping_link, ws)
                    await self._write_link(peer, ws, dialing)
        finally:
            peer.up = False

    @staticmethod
    async def _ping_link(ws: Any) -> None:
        """A link whose peer stops answering pings (a cut that drops packets rather than
        closing the connection) raises here, which ends the link: its mail is relayed."""
        while True:
            await trio.sleep(KEEPALIVE)
            with trio.fail_after(LINK_IDLE):
                await ws.ping()

    async def _write_link(self, peer: Peer, ws: Any, dialing: Dialing) -> None:
        sealer = dialing.sealer()
        receive = peer.receive_channel
        stall = self.node.settings.send_stall_timeout
        # The peer's gateway takes messages up to 2 x max_frame_bytes (_node.py), and one
        # item is at most about max_frame_bytes (a client frame): so a frame is filled up to
        # max_frame_bytes, and the item that would pass it opens the next frame.
        budget = self.node.settings.max_frame_bytes
        carry: Any = None

        def more() -> Any:
            try:
                return receive.receive_nowait()
            except trio.WouldBlock:
                return None

        while True:
            first, carry = carry, None
            if first is None:
                with trio.move_on_after(KEEPALIVE):
                    first = await receive.receive()
            mail: list[MailItem] = []
            notes: list[NoteItem] = []
            refused: list[Refusal] = []
            control: list[Control] = []
            presence: list[PresenceItem] = []
            batch, carry = fill_frame(first, more, budget, FRAME_ITEMS)
            for item in batch:
                kind = type(item)
                if kind is MailItem:
                    mail.append(item)
                elif kind is NoteItem:
                    notes.append(item)
                elif kind is Refusal:
                    refused.append(item)
                elif kind is PresenceItem:
                    presence.append(item)
                else:
                    control.append(item)
            frame = Frame(mail, coalesce_notes(notes), refused, control, presence)
            with trio.fail_after(stall):
                await ws.send_message(sealer.seal(frame))
            peer.frames += 1
            peer.items += len(batch)

    # -- membership ----------------------------------------------------------------------------
    def apply_view(self, rows: list[tuple[Any, ...]], now: float) -> None:
        assert self.actor is not None
        self.member_rows = rows
        seen = view(rows, now, self.secret, self.name)
        self.untrusted = seen.untrusted
        self.members = {name: m.incarnation for name, m in seen.live.items()}
        for name in seen.down:
            self.down_since.setdefault(name, time.time())
        for name in self.members:
            self.down_since.pop(name, None)
        for name, member in seen.live.items():
            peer = self.peers.get(name)
            if peer is not None and peer.incarnation != member.incarnation:
                self._close_peer(peer)
                peer = None
            if peer is None:
                peer = self.peers[name] = Peer(name, member.incarnation, member.address)
                self.actor.start_task(self.run_peer, peer)
        for name, peer in list(self.peers.items()):
            if name not in self.members:
                self._close_peer(peer)
                self.actor.start_task(self.presence_link.gone_after_grace, name)

    def _close_peer(self, peer: Peer) -> None:
        peer.closed = True
        peer.cancel.cancel()
        self._fail_pending(peer)
        if self.peers.get(peer.name) is peer:
            del self.peers[peer.name]
        self.owners = {u: n for u, n in self.owners.items() if n != peer.name}

    async def fence(self, why: str) -> None:
        """Stop acting for the cluster: our lease may have lapsed, so another node may own
        our users now. Close every connection (clients reconnect, anywhere), stop every
        mailbox WITHOUT writing mail (``node.fenced`` refuses it: a late write could sit
        below the new owner's keys), forget ownership; then join again as a new incarnation.
        Mail that was stored or acknowledged is safe; the rest was never accepted."""
        node = self.node
        log.warning("%s: fencing this node (%s); it rejoins as a new incarnation", self.name, why)
        node.metrics["cluster_fenced"] += 1
        self.fenced = True
        node.fenced = True
        self.joined = trio.Event()
        self.owned.clear()
        self.owners.clear()
        self.relay.reset()
        groups = getattr(node, "groups", None)
        for ref in list(groups.actors.values()) if groups is not None else []:
            ref.stop()  # another node may host these groups now: one sequencer each
        for peer in list(self.peers.values()):
            self._close_peer(peer)
        for conn in list(node.registry.connections.values()):
            try:
                conn.send_nowait(Kick(4004, "node lost its cluster lease; reconnect"))
            except (sv.ActorDeadError, sv.MailboxFull):
                conn.kill()
        refs = list(node.registry.mailboxes.items())
        for _user, ref in refs:
            ref.stop()
        with trio.move_on_after(node.settings.ack_timeout + 1):
            for user, ref in refs:
                await ref.wait()
                node.registry.mailbox_gone(user, ref)
        self.incarnation = new_incarnation()
        self.fenced = False
        node.fenced = False

    async def heartbeat(self) -> None:
        node = self.node
        await node.listening.wait()
        settings = node.settings
        self.address = settings.cluster_address or (
            f"ws://{settings.host}:{node.port}{LINK_PATH}"
        )
        while True:
            await self._join()
            while True:
                sent = trio.current_time()
                ok, now, rows = None, 0.0, []
                # A renewal that has not come back by the deadline must not let this node go
                # on acting: past it, another node may see the lease lapse and claim our users.
                # So the wait itself is bounded by the deadline (a late commit of this renewal
                # only delays the others' claims: safe). Guarded by
                # test_cluster_e2e.py::test_a_renewal_that_hangs_fences_the_node_at_its_deadline.
                with trio.move_on_at(self.valid_until):
                    try:
                        ok, now, rows = await node.store.read(
                            "cluster_renew", self.name, self.incarnation, self.lease,
                            len(node.registry.connections),
                        )
                    except StoreUnavailable as e:
                        log.warning("lease renewal failed: %s", e)
                if ok:
                    self.valid_until = valid_until(sent, self.lease)
                    self.apply_view(rows, now)
                elif ok is False:
                    await self.fence("the lease lapsed before it was renewed")
                    break
                if trio.current_time() >= self.valid_until:
                    await self.fence("the lease could not be renewed in time")
                    break
                await trio.sleep(renew_every(self.lease))

    async def _join(self) -> None:
        node = self.node
        while True:
            sent = trio.current_time()
            proof = member_proof(self.secret, self.name, self.incarnation, self.address)
            try:
                wait = await node.store.read(
                    "cluster_join", self.name, self.incarnation, self.address, proof, self.lease
                )
            except StoreUnavailable as e:
                log.warning("cannot join the cluster yet: %s", e)
                await trio.sleep(1.0)
                continue
            if wait is None:
                break
            log.warning(
                "another %s holds the lease for %.1f s more: waiting (a restart after a kill, "
                "or two nodes with one name)", self.name, wait,
            )
            await trio.sleep(min(wait + 0.05, self.lease))
        self.valid_until = valid_until(sent, self.lease)
        log.info("%s joined the cluster as incarnation %d (%s)", self.name, self.incarnation,
                 self.address)
        self.joined.set()

    async def leave(self) -> None:
        for peer in list(self.peers.values()):
            self._close_peer(peer)
        if self.joined.is_set():
            try:
                await self.node.store.read("cluster_leave", self.name, self.incarnation)
            except StoreUnavailable:
                pass


class ClusterActor(sv.Actor):
    """Runs the heartbeat and the links of ``node.cluster``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        assert node.cluster is not None
        self.cluster: Cluster = node.cluster

    async def on_start(self) -> None:
        cluster = self.cluster
        for peer in list(cluster.peers.values()):  # a restart: the old link tasks are gone
            cluster._close_peer(peer)
        cluster.actor = self
        cluster.presence_link.attach()
        self.start_task(self.cluster.heartbeat)
        self.start_task(self.cluster.relay.run)

    async def on_stop(self, reason: sv.ExitReason) -> None:
        with trio.move_on_after(5):
            await self.cluster.leave()

