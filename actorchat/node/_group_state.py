"""The pure decisions of a group: membership rules, owner rights, limits, and the bookkeeping
of its messages' fan-out (which member's copy is still unsafe). No I/O, no clock: the group
actor (``_groups.py``) carries out what these return, and ``tests/actorchat/node/
test_group_state.py`` checks every rule without sockets (with Hypothesis for the fan-out).

Membership rules (docs/protocol.md, Groups):

* the creator is the owner and a member; the member list keeps joining order, no repeats;
* only the owner adds or removes (``not_allowed`` for other members, ``not_member`` for
  non-members); the owner cannot remove itself (it leaves instead);
* a group holds at most ``MAX_MEMBERS`` (1,024) members (``not_allowed`` beyond);
* any member may leave; when the owner leaves, the longest-standing remaining member becomes
  the owner; a group left empty is deleted.

Fan-out (docs/guarantees.md, Groups): every message gets the group's next sequence number and
the member list of that moment (minus the sender); it is *accepted* once every one of those
copies is safe (acknowledged by the member or stored). A retried (sender, id) is never given
a second sequence number while the first is pending or remembered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from actorchat import protocol as p

MAX_MEMBERS = p.MAX_USERS_PER_FRAME  # 1,024


class GroupRefused(Exception):
    """A group operation the rules refuse; ``code`` is the protocol's error code."""

    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class GroupInfo:
    group: str
    name: str
    owner: str
    members: list[str]

    def frame(self) -> p.Group:
        return p.Group(group=self.group, name=self.name, owner=self.owner,
                       members=list(self.members))


def _unique(users: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(users))


def _refuse(code: p.ErrorCode, message: str) -> GroupRefused:
    return GroupRefused(code, message)


def plan_create(creator: str, members: Iterable[str]) -> list[str]:
    """The members of a new group: the creator first, then ``members`` without repeats."""
    everyone = _unique([creator, *members])
    if len(everyone) > MAX_MEMBERS:
        raise _refuse(p.ErrorCode.NOT_ALLOWED, f"a group holds at most {MAX_MEMBERS} members")
    return everyone


def check_member(info: GroupInfo, user: str) -> None:
    if user not in info.members:
        raise _refuse(p.ErrorCode.NOT_MEMBER, f"{user} is not a member of {info.group}")


def _check_owner(info: GroupInfo, user: str) -> None:
    check_member(info, user)
    if user != info.owner:
        raise _refuse(p.ErrorCode.NOT_ALLOWED, f"only the owner of {info.group} may do that")


def plan_add(info: GroupInfo, actor: str, users: Iterable[str]) -> list[str]:
    """The users ``actor`` adds (members already are skipped); refused unless the owner."""
    _check_owner(info, actor)
    current = set(info.members)
    new = [u for u in _unique(users) if u not in current]
    if len(info.members) + len(new) > MAX_MEMBERS:
        raise _refuse(p.ErrorCode.NOT_ALLOWED, f"a group holds at most {MAX_MEMBERS} members")
    return new


def plan_remove(info: GroupInfo, actor: str, users: Iterable[str]) -> list[str]:
    """The members ``actor`` removes (non-members are skipped); refused unless the owner,
    and the owner cannot remove itself (``group_leave`` does that)."""
    _check_owner(info, actor)
    gone = _unique(users)
    if actor in gone:
        raise _refuse(p.ErrorCode.NOT_ALLOWED, "the owner leaves with group_leave")
    current = set(info.members)
    return [u for u in gone if u in current]


def plan_leave(info: GroupInfo, actor: str) -> str | None:
    """The owner after ``actor`` leaves: unchanged, the longest-standing remaining member if
    the owner left, or None when nobody is left (the group is deleted)."""
    check_member(info, actor)
    rest = [m for m in info.members if m != actor]
    if not rest:
        return None
    return info.owner if info.owner != actor else rest[0]


def apply_change(info: GroupInfo, add: list[str], remove: list[str], owner: str) -> None:
    gone = set(remove)
    info.members = [m for m in info.members if m not in gone] + [
        u for u in add if u not in info.members
    ]
    info.owner = owner


# -- fan-out bookkeeping ---------------------------------------------------------------------
@dataclass(slots=True)
class GroupMessage:
    seq: int
    sender: str
    id: str
    body: str
    ts: float
    media: str | None
    recipients: tuple[str, ...]  # the members when it was sequenced, minus the sender
    unsafe: set[str] = field(default_factory=set)  # copies neither acknowledged nor stored
    handed: bool = False  # every unsafe copy handed out (mailbox or store) this incarnation
    handed_at: float = 0.0


class Posted(Enum):
    NEW = "new"  # sequenced: hand out its copies
    PENDING = "pending"  # a retry of a message still fanning out: accepted with the first
    ACCEPTED = "accepted"  # safe already (a retry, or nobody else in the group): accept now


class FanOut:
    """One group's messages from sequencing to ``accepted``. Kept in the group actor's start
    args, so a crash of the actor loses none of it: the next incarnation hands out every
    unsafe copy again (``restarted``), and the members' mailboxes drop the ones they have."""

    def __init__(self, *, remember: int = 10_000, backlog: int = 10_000) -> None:
        self.seq = 0
        self.remember = remember
        self.backlog = backlog
        self.pending: OrderedDict[int, GroupMessage] = OrderedDict()
        self.ids: dict[tuple[str, str], int] = {}  # (sender, id) -> seq, pending ones
        self.done: OrderedDict[tuple[str, str], int] = OrderedDict()  # accepted, recent

    def full(self) -> bool:
        return len(self.pending) >= self.backlog

    def post(
        self, sender: str, id: str, body: str, ts: float, media: str | None,
        members: Iterable[str],
    ) -> tuple[Posted, GroupMessage | None]:
        key = (sender, id)
        if key in self.done:
            return Posted.ACCEPTED, None
        if key in self.ids:
            return Posted.PENDING, self.pending[self.ids[key]]
        self.seq += 1
        recipients = tuple(m for m in members if m != sender)
        msg = GroupMessage(self.seq, sender, id, body, ts, media, recipients, set(recipients))
        if not recipients:
            self._remember(key, msg.seq)
            return Posted.ACCEPTED, msg
        self.pending[msg.seq] = msg
        self.ids[key] = msg.seq
        return Posted.NEW, msg

    def to_hand(self, limit: int) -> list[GroupMessage]:
        """Messages whose unsafe copies are still to be handed out, in sequence order. The
        group actor hands them strictly in this order, one batch after the other, so every
        member gets the group's messages in one order."""
        out = []
        for msg in self.pending.values():
            if not msg.handed:
                out.append(msg)
                if len(out) >= limit:
                    break
        return out

    def mark_handed(self, msgs: Iterable[GroupMessage], now: float) -> None:
        for msg in msgs:
            msg.handed = True
            msg.handed_at = now

    def safe(self, member: str, sender: str, ids: Iterable[str]) -> list[str]:
        """``member``'s copies of ``sender``'s ``ids`` are safe; returns the ids that are now
        safe for every member (tell the sender ``accepted``)."""
        complete = []
        for id in ids:
            seq = self.ids.get((sender, id))
            if seq is None:
                continue  # accepted before, or not a message of this group
            msg = self.pending[seq]
            msg.unsafe.discard(member)
            if not msg.unsafe:
                del self.pending[seq]
                del self.ids[(sender, id)]
                self._remember((sender, id), seq)
                complete.append(id)
        return complete

    def _remember(self, key: tuple[str, str], seq: int) -> None:
        self.done[key] = seq
        while len(self.done) > self.remember:
            self.done.popitem(last=False)

    def restarted(self) -> None:
        """A new incarnation of the group actor: whatever it was doing is unknown, so every
        unsafe copy is handed out again (idempotent: mailboxes and the store drop retries)."""
        for msg in self.pending.values():
            msg.handed = False

    def rehand(self, now: float, after: float) -> int:
        """Hand out again the unsafe copies of messages handed out ``after`` seconds ago or
        earlier: a mailbox stores what is not acknowledged within its ack timeout, so by then
        a copy still unsafe here means a lost notice (say, sent while this actor restarted);
        the mailbox answers the repeated copy with its `safe` notice again."""
        n = 0
        for msg in self.pending.values():
            if msg.handed and now - msg.handed_at >= after:
                msg.handed = False
                n += 1
        return n

    def idle(self) -> bool:
        return not self.pending
