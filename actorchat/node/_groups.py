"""Groups (issue 7): one actor per active group gives its messages one order and fans them out.

::

    groups          simple_one_for_one (transient): GroupActor per group in use, started on
                    demand (``GroupDirectory.actor``) and stopped when idle

A ``GroupActor`` owns the group's membership (``GroupInfo``, loaded from the store; every change
is committed before it is applied and announced) and its messages' bookkeeping (``FanOut``,
pure, ``_group_state.py``). Both are the child's start args, so a crash of the actor loses
neither: the next incarnation hands out every copy that is not safe yet again.

Fan-out of a batch of messages, in sequence order (docs/guarantees.md, Groups):

* members whose mailbox actor runs on this node get each copy as an ``Incoming`` with the
  group, one message after the other: their mailbox gives it a key (so keys stay unique and in
  order per member), delivers, acknowledges or stores it like any mail, and reports the copy
  safe to this actor (``GroupDirectory.effects``) instead of telling the sender;
* members with no mailbox actor are held off (``Registry.hold_offline``: a mailbox start for
  them waits) while ONE store call writes all their copies of the batch with dedupe rows
  (``Store.put_group_copies``); committed copies are safe at once;
* when every copy of a message is safe, the sender hears ``accepted``.

In a cluster (docs/guarantees.md, "Groups across nodes"), a group's actor runs only on the
node that holds the group's ``group:<id>`` row in ``cluster_owners`` (``Cluster.group_host``);
the other nodes forward their clients' group frames to it over the link. A member whose
mailbox another live node owns is one more destination: ``Cluster.group_copy`` sends the copy
over the link (in its batches) and that node's mailbox reports it safe back over the link
(``group_safe``); a link that is down or breaks first sends it through the relay, whose
commit makes it safe.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import trio

import supervisors as sv
from actorchat import protocol as p
from actorchat.store import MailRow, StoreUnavailable

from ._group_state import (
    FanOut,
    GroupInfo,
    GroupMessage,
    GroupRefused,
    Posted,
    apply_change,
    check_member,
    plan_add,
    plan_create,
    plan_leave,
    plan_remove,
)
from ._media import share_media
from ._memberships import Memberships
from ._messages import Incoming, OutAccepted, OutReceipt, OutReceipts

if TYPE_CHECKING:
    from ._node import Node
    from ._queue import Effects

log = logging.getLogger("actorchat.groups")

E = p.ErrorCode
# Copies per fan-out batch (messages x members): one store call carries at most this many.
BATCH_COPIES = 20_000
BATCH_MESSAGES = 256


# -- messages to a group actor ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Post:
    sender: str
    id: str
    body: str
    media: str | None


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # "add" | "remove" | "leave"
    actor: str
    users: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CopiesSafe:
    member: str
    sender: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Receipts:
    member: str
    status: str
    sender: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


def groups_spec() -> sv.SupervisorSpec:
    """The ``groups`` supervisor of the node's tree."""
    return sv.SupervisorSpec(
        sv.SupervisorFlags(sv.SIMPLE_ONE_FOR_ONE, intensity=100, period=10.0),
        [sv.ChildSpec("group", GroupActor, restart=sv.TRANSIENT, shutdown=5.0)],
    )


# -- the group actor -------------------------------------------------------------------------
class GroupActor(sv.Actor):
    mailbox_size = 10_000

    def __init__(self, info: GroupInfo, fanout: FanOut, node: Node) -> None:
        self.info = info
        self.fanout = fanout
        self.node = node
        self.work = trio.Event()
        self.idle_since: float | None = None
        # Receipts gathered per sender until the mailbox is empty: one message to each
        # sender's connection however many members acknowledged meanwhile.
        self.receipts: dict[str, dict[tuple[str, str], list[str]]] = {}

    async def on_stop(self, reason: sv.ExitReason) -> None:
        self._flush_receipts()

    async def on_start(self) -> None:
        self.fanout.restarted()  # a crash mid fan-out: hand out every unsafe copy again
        if not self.fanout.idle():
            self.work.set()
        self.start_task(self._fanout_loop)
        self.start_task(self._ticker)

    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Receipts:
            by_sender = self.receipts.setdefault(message.sender, {})
            by_sender.setdefault((message.status, message.member), []).extend(message.ids)
            if not self.ref.mailbox_depth():
                self._flush_receipts()
            return None
        if self.receipts:
            self._flush_receipts()
        if kind is Post:
            return self._post(message)
        if kind is CopiesSafe:
            self._safe(message.member, message.sender, message.ids)
        elif kind is Change:
            return await self._change(message)
        elif kind is _Tick:
            self._tick()
        return None

    # -- messages -------------------------------------------------------------------------
    def _gone(self) -> GroupRefused | None:
        if self.info.members:
            return None
        return GroupRefused(E.NO_SUCH_GROUP, f"no group {self.info.group}")

    def _post(self, post: Post) -> GroupRefused | None:
        if gone := self._gone():
            return gone
        try:
            check_member(self.info, post.sender)
        except GroupRefused as refused:
            return refused
        fanout = self.fanout
        if fanout.full():
            return GroupRefused(E.UNAVAILABLE, "the group has too many messages in flight")
        outcome, _ = fanout.post(
            post.sender, post.id, post.body, self.node.wall(), post.media, self.info.members
        )
        if outcome is Posted.ACCEPTED:
            self.node.notify(post.sender, OutAccepted((post.id,)))
        elif outcome is Posted.NEW:
            self.node.metrics["group_messages"] += 1
            self.work.set()
        return None

    def _flush_receipts(self) -> None:
        group = self.info.group
        node = self.node
        for sender, gathered in self.receipts.items():
            items = tuple((status, by, group, tuple(ids)) for (status, by), ids in gathered.items())
            if sender in node.registry.connections:
                node.notify(sender, OutReceipts(items))
            else:  # connected elsewhere perhaps: the cluster carries single receipts
                for status, by, _, ids in items:
                    node.notify(sender, OutReceipt(status, by, ids, group))
        self.receipts = {}

    def _safe(self, member: str, sender: str, ids: Iterable[str]) -> None:
        done = self.fanout.safe(member, sender, ids)
        if done:
            self.node.notify(sender, OutAccepted(tuple(done)))

    async def _fanout_loop(self) -> None:
        while True:
            await self.work.wait()
            self.work = trio.Event()
            while True:
                width = max((len(m.unsafe) for m in self.fanout.pending.values()), default=1)
                limit = max(1, min(BATCH_MESSAGES, BATCH_COPIES // max(width, 1)))
                batch = self.fanout.to_hand(limit)
                if not batch:
                    break
                await self._hand(batch)
                self.fanout.mark_handed(batch, trio.current_time())

    async def _hand(self, batch: list[GroupMessage]) -> None:
        """Hand out every unsafe copy of ``batch``: to running mailboxes one by one, and to
        the store in one call for the members that have none. Returns when all are handed."""
        node = self.node
        registry = node.registry
        todo: dict[str, list[GroupMessage]] = {}
        for msg in batch:
            for member in msg.recipients:
                if member in msg.unsafe:
                    todo.setdefault(member, []).append(msg)
        backoff = 0.05
        while todo:
            if node.cluster is None:
                held, done = registry.hold_offline(list(todo))
            else:
                # In a cluster another node may own a member's mailbox (and choose its keys):
                # no direct writes; every copy goes through a mailbox this node owns, or over
                # the link (or the relay) to the node that owns it (``_give``).
                held, done = [], trio.Event()
            failed = False
            try:
                heldset = set(held)
                live = [m for m in todo if m not in heldset]
                if len(live) == 1:
                    await self._give_all(live[0], todo[live[0]])
                elif live:
                    # One task per member: each member's copies go one after the other (its
                    # order), while the members proceed side by side, so a batch costs about
                    # one scheduler round per message rather than one per copy.
                    async with trio.open_nursery() as nursery:
                        for member in live:
                            nursery.start_soon(self._give_all, member, todo[member])
                for member in live:
                    del todo[member]
                if held:
                    group = self.info.group
                    rows = [
                        MailRow(m, 0, msg.sender, msg.id, msg.body, msg.ts, group, msg.media)
                        for m in held
                        for msg in todo[m]
                    ]
                    try:
                        await node.store.read(
                            "put_group_copies", rows, int(node.wall() * 1_000_000)
                        )
                    except StoreUnavailable as e:
                        log.warning("group %s: store unavailable (%s); retrying", group, e)
                        failed = True
                    else:
                        node.metrics["group_copies_stored"] += len(rows)
                        for member in held:
                            for msg in todo.pop(member):
                                self._safe(member, msg.sender, (msg.id,))
            finally:
                registry.release(held, done)
            if failed:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _give_all(self, member: str, msgs: list[GroupMessage]) -> None:
        for msg in msgs:
            await self._give(member, msg)

    async def _give(self, member: str, msg: GroupMessage) -> None:
        """One copy to ``member``'s mailbox actor (starting it if it stopped meanwhile);
        retried until taken, so a member's copies keep the group's order."""
        node = self.node
        registry = node.registry
        incoming = Incoming(msg.sender, msg.id, msg.body, self.info.group, msg.media)
        cluster = node.cluster
        backoff = 0.05
        while True:
            if cluster is not None:
                from actorchat.cluster._link import MailItem

                item = MailItem(msg.sender, msg.id, member, msg.body, self.info.group, msg.media)
                try:
                    where = await cluster.group_copy(member, item)
                except StoreUnavailable:
                    where = "retry"
                if where == "sent":
                    node.metrics["group_copies_handed"] += 1
                    return
                if where == "retry":
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            ref = registry.mailboxes.get(member)
            try:
                if ref is None or not ref.is_alive():
                    ref = await registry.mailbox(member)
                taken = await ref.call(incoming, timeout=None)
            except (sv.ActorDeadError, sv.SupervisorError, StoreUnavailable):
                taken = False
            if taken is not False:
                node.metrics["group_copies_handed"] += 1
                return
            await trio.sleep(backoff)  # its store is behind (or it is restarting): wait
            backoff = min(backoff * 2, 5.0)

    # -- membership -----------------------------------------------------------------------
    async def _change(self, change: Change) -> GroupRefused | None:
        node = self.node
        info = self.info
        if gone := self._gone():
            return gone
        try:
            if change.kind == "add":
                add, remove, owner = plan_add(info, change.actor, change.users), [], info.owner
                missing = set(add) - await node.store.read("users_exist", add) if add else set()
                if missing:
                    return GroupRefused(E.NO_SUCH_USER, f"no user {sorted(missing)[0]}")
            elif change.kind == "remove":
                add, remove = [], plan_remove(info, change.actor, change.users)
                owner = info.owner
            else:
                add, remove = [], [change.actor]
                owner = plan_leave(info, change.actor) or change.actor
        except GroupRefused as refused:
            return refused
        except StoreUnavailable as e:
            return GroupRefused(E.UNAVAILABLE, f"storage is unavailable ({e}); try again")
        memberships = node.groups.memberships
        try:
            await node.store.read("change_group", info.group, add, remove, owner, node.wall())
        except StoreUnavailable as e:
            memberships.clear()  # it may have committed: what the node knows is unsure now
            return GroupRefused(E.UNAVAILABLE, f"storage is unavailable ({e}); try again")
        apply_change(info, add, remove, owner)
        memberships.changed(info.group, info.name, info.owner, info.members, add, remove)
        announce(node, info)
        removed = p.encode(p.GroupRemoved(group=info.group))
        for user in remove:
            node.notify_now(user, removed)
        # Deleted (nobody left): it refuses everything from now on, and stops when idle, once
        # the copies of messages sent before are all safe.
        return None

    # -- idling ---------------------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            await trio.sleep(1.0)
            try:
                self.ref.send_nowait(_Tick())
            except sv.MailboxFull:
                pass

    def _tick(self) -> None:
        now = trio.current_time()
        node = self.node
        if self.fanout.rehand(now, 2 * node.settings.ack_timeout + 1.0):
            self.work.set()
        if self.fanout.idle() and not self.ref.mailbox_depth():
            if self.idle_since is None:
                self.idle_since = now
            elif now - self.idle_since >= node.group_linger:
                node.groups.gone(self.info.group, self.ref)  # nobody finds this ref now
                self.stop()
        else:
            self.idle_since = None


def announce(node: Node, info: GroupInfo) -> None:
    """The current membership to every member connected to this node."""
    text = p.encode(info.frame())
    for member in info.members:
        node.notify_now(member, text)


# -- the directory of group actors -----------------------------------------------------------
class GroupDirectory:
    """Which group actors run on this node (``node.groups``); starts them on demand."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.actors: dict[str, sv.ActorRef] = {}
        self.infos: dict[str, GroupInfo] = {}  # the running actors' (live) membership
        self.fanouts: dict[str, FanOut] = {}  # and their messages (for tests and metrics)
        self._starting: dict[str, trio.Event] = {}
        # Each welcomed user's groups, kept current by the commits here (single node only).
        self.memberships = Memberships()

    async def actor(self, group: str) -> sv.ActorRef | None:
        """The group's actor, started (its membership loaded) if need be; None if the group
        does not exist. Raises ``StoreUnavailable`` when it must be loaded and cannot be."""
        while True:
            ref = self.actors.get(group)
            if ref is not None and ref.is_alive():
                return ref
            pending = self._starting.get(group)
            if pending is None:
                break
            await pending.wait()
        done = self._starting[group] = trio.Event()
        try:
            node = self.node
            if node.cluster is not None:
                host = await node.cluster.group_host(group)
                if host is not None:  # one sequencer per group cluster-wide
                    raise StoreUnavailable(f"group {group} is hosted by node {host}; try again")
            found = await node.store.read("load_group", group)
            if found is None:
                return None
            name, owner, members = found
            await node.tree_ready.wait()
            assert node.sup is not None
            sup = node.sup.child_supervisor("groups")
            if sup is None:
                raise StoreUnavailable("the groups supervisor is not running")
            info, fanout = GroupInfo(group, name, owner, members), FanOut()
            ref = await sup.start_child((info, fanout, node))
            self.actors[group] = ref
            self.infos[group] = info
            self.fanouts[group] = fanout
            return ref
        finally:
            del self._starting[group]
            done.set()

    def gone(self, group: str, ref: sv.ActorRef) -> None:
        if self.actors.get(group) is ref:
            del self.actors[group]
            self.infos.pop(group, None)
            self.fanouts.pop(group, None)

    def info(self, group: str) -> GroupInfo | None:
        """The live membership of a group whose actor runs here (no store access)."""
        ref = self.actors.get(group)
        if ref is None or not ref.is_alive():
            return None
        return self.infos.get(group)

    def effects(self, member: str, fx: Effects) -> None:
        """A member's mailbox made copies safe or got receipts for group messages."""
        node = self.node
        for (group, sender), ids in (fx.group_accepted or {}).items():
            ref = self.actors.get(group)
            if ref is None:
                if node.cluster is not None:  # its actor runs on another node, perhaps
                    node.cluster.group_effect("group_safe", group, member, sender, ids)
                continue  # no actor: nothing waits on this copy (or a rehand asks again)
            try:
                ref.send_nowait(CopiesSafe(member, sender, tuple(ids)))
            except (sv.MailboxFull, sv.ActorDeadError):
                pass  # the group hands the copy out again later; its answer comes again
        for status, receipts in (("delivered", fx.group_delivered), ("read", fx.group_read)):
            for (group, sender), ids in (receipts or {}).items():
                ref = self.actors.get(group)
                if ref is None and node.cluster is not None and node.cluster.group_effect(
                    "group_receipt", group, member, sender, ids, status
                ):
                    continue
                try:
                    if ref is None:
                        raise sv.ActorDeadError(group)
                    ref.send_nowait(Receipts(member, status, sender, tuple(ids)))
                except (sv.MailboxFull, sv.ActorDeadError):
                    node.notify(sender, OutReceipt(status, member, tuple(ids), group))

    async def members(self, group: str) -> list[str] | None:
        """The members of ``group`` (None if there is no such group): for typing."""
        info = self.info(group)
        if info is not None:
            return list(info.members)
        found = await self.node.store.read("load_group", group)
        return None if found is None else list(found[2])


# -- client frames ---------------------------------------------------------------------------
def _error(code: p.ErrorCode, message: str, ref: str | None) -> str:
    return p.encode(p.ErrorFrame(code=code.value, message=message, ref=ref))


async def _create(conn: Any, frame: p.GroupCreate) -> None:
    node = conn.node
    try:
        members = plan_create(conn.user, frame.members)
    except GroupRefused as refused:
        await conn.out(_error(refused.code, refused.message, frame.id))
        return
    others = members[1:]
    found = await node.store.read("users_exist", others) if others else set()
    missing = [u for u in others if u not in found]
    if missing:
        await conn.out(_error(E.NO_SUCH_USER, f"no user {missing[0]}", frame.id))
        return
    group = "g" + secrets.token_hex(10)
    try:
        await node.store.read("create_group", group, frame.name, conn.user, members, node.wall())
    except StoreUnavailable:
        node.groups.memberships.clear()  # it may have committed
        raise
    node.groups.memberships.changed(group, frame.name, conn.user, members, members)
    node.metrics["groups_created"] += 1
    announce(node, GroupInfo(group, frame.name, conn.user, members))


async def _change(conn: Any, frame: Any, change: Change) -> None:
    node = conn.node
    for _attempt in range(3):
        ref = await node.groups.actor(frame.group)
        if ref is None:
            await conn.out(_error(E.NO_SUCH_GROUP, f"no group {frame.group}", frame.id))
            return
        try:
            refused = await ref.call(change, timeout=None)
        except sv.ActorDeadError:
            continue  # stopped (idle, or deleted) meanwhile: look it up again
        if refused is not None:
            await conn.out(_error(refused.code, refused.message, frame.id))
        return
    await conn.out(_error(E.UNAVAILABLE, "the group is not answering; try again", frame.id))


async def _add(conn: Any, frame: p.GroupAdd) -> None:
    await _change(conn, frame, Change("add", conn.user, tuple(frame.users)))


async def _remove(conn: Any, frame: p.GroupRemove) -> None:
    await _change(conn, frame, Change("remove", conn.user, tuple(frame.users)))


async def _leave(conn: Any, frame: p.GroupLeave) -> None:
    await _change(conn, frame, Change("leave", conn.user))


async def _send(conn: Any, frame: p.Send) -> None:
    """A ``send`` with ``group``: sequenced by the group's actor; ``accepted`` comes from it."""
    node = conn.node
    assert frame.group is not None
    for _attempt in range(3):
        ref = await node.groups.actor(frame.group)
        if ref is None:
            await conn.out(_error(E.NO_SUCH_GROUP, f"no group {frame.group}", frame.id))
            return
        media = None
        if frame.media is not None:
            # The members may fetch the media before any copy can reach them (_media.py).
            info = node.groups.info(frame.group)
            members = [m for m in info.members if m != conn.user] if info is not None else []
            shared = await share_media(node, conn.user, frame.media, members)
            if shared is None:
                await conn.out(_error(
                    E.NOT_ALLOWED, f"no media {frame.media.id} you may share", frame.id
                ))
                return
            media = msgspec.json.encode(shared).decode()
        post = Post(conn.user, frame.id, frame.body, media)
        try:
            refused = await ref.call(post, timeout=None)
        except sv.ActorDeadError:
            continue
        if refused is not None:
            await conn.out(_error(refused.code, refused.message, frame.id))
        else:
            node.metrics["received"] += 1
        return
    await conn.out(_error(E.UNAVAILABLE, "the group is not answering; try again", frame.id))


async def _welcome(conn: Any, user: str) -> None:
    """One ``group`` frame per membership, after every welcome. A group whose actor runs here
    is described from memory (it applies changes after committing them, and announces each
    to connected members, so this connection ends with the current membership either way).
    On a single node the memberships come from ``Memberships`` (a store read only on a user's
    first welcome); in a cluster a group may change on another node, so from the store."""
    node = conn.node
    directory = node.groups
    if node.cluster is not None:
        infos = [GroupInfo(*row) for row in await node.store.read("groups_of", user)]
    else:
        memberships = directory.memberships
        known = memberships.groups_of(user)
        if known is None:
            version = memberships.version
            rows = await node.store.read("groups_of", user)
            memberships.loaded(user, rows, version)
            known = [GroupInfo(*row) for row in rows]
        infos = known
    for stored in infos:
        info = directory.info(stored.group) or stored
        if user in info.members:
            await conn.out(p.encode(info.frame()))


class _RemoteConn:
    """A client on another node whose group frame was forwarded here (the group's host):
    what the handlers use of a connection. Answers travel back as notices."""

    def __init__(self, node: Node, user: str) -> None:
        self.node, self.user = node, user

    async def out(self, text: str) -> None:
        self.node.notify_now(self.user, text)


_HANDLERS: dict[type, Any] = {
    p.Send: _send, p.GroupAdd: _add, p.GroupRemove: _remove, p.GroupLeave: _leave,
}


async def take_remote_frame(node: Node, user: str, frame: Any) -> None:
    """A group frame forwarded by another node: handled here as if from a local client."""
    handler = _HANDLERS.get(type(frame))
    if handler is not None and getattr(frame, "group", None) is not None:
        await handler(_RemoteConn(node, user), frame)


def _routed(handler: Any) -> Any:
    """In a cluster: the frame goes to the node hosting the group, unless that is us."""

    async def routed(conn: Any, frame: Any) -> None:
        cluster = conn.node.cluster
        if cluster is not None:
            try:
                host = await cluster.group_host(frame.group)
            except StoreUnavailable as e:
                await conn.out(_error(E.UNAVAILABLE, f"{e}", frame.id))
                return
            if host is not None:
                await cluster.forward_group_frame(host, conn.user, frame)
                return
        await handler(conn, frame)

    return routed


def install_groups(node: Node) -> None:
    """Plug groups into a node: its directory, frame handlers and welcome hook."""
    node.groups = GroupDirectory(node)
    node.group_linger = 30.0
    node.frame_handlers[p.GroupCreate] = _create
    node.frame_handlers[p.GroupAdd] = _routed(_add)
    node.frame_handlers[p.GroupRemove] = _routed(_remove)
    node.frame_handlers[p.GroupLeave] = _routed(_leave)
    node.group_send = _routed(_send)
    node.on_welcome.append(_welcome)

    async def group_members(*args: Any) -> list[str] | None:
        # Called as node.group_members(group) (also tolerates (node, group)).
        return await node.groups.members(args[-1])

    node.group_members = group_members
