"""Membership and ownership as pure decisions: who is alive, whom to trust, where a user's
mail goes, and how long this node may still act on its own lease.

Nothing here reads a clock or does I/O (``tests/actorchat/cluster/test_lease.py``).

The rules (docs/guarantees.md, "Cluster"):

* A member is alive while its ``lease_expires`` is after the database's ``now``. Members are
  judged only by the database's clock, never by a node's own.
* A member is trusted only if its row carries a valid proof (an HMAC of its identity under
  the cluster secret): a node without the secret is never linked to nor routed to.
* A node acts on its own lease only until ``renewal sent + lease x SAFETY`` by its own
  monotonic clock. The database dates the renewal no earlier than it was sent, so the node
  stops acting (fences itself) before any other node can see its lease lapse and claim its
  users: two nodes never own one mailbox at the same time.
* A user's mailbox is owned by the node in its ownership row if that (node, incarnation) is
  a live member; otherwise it is free, and a claim takes it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SAFETY = 0.75
"""The share of the lease a node acts on after its last successful renewal."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    incarnation: int
    address: str
    proof: str
    started_at: float
    lease_expires: float
    users: int

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Member:
        name, inc, address, proof, started, expires, users = row
        return cls(str(name), int(inc), str(address), str(proof), float(started),
                   float(expires), int(users))

    def alive(self, now: float) -> bool:
        return self.lease_expires > now


def member_proof(secret: bytes, name: str, incarnation: int, address: str) -> str:
    """What a member writes in its row to show it holds the cluster secret."""
    message = f"member\0{name}\0{incarnation}\0{address}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def trusted(member: Member, secret: bytes) -> bool:
    expected = member_proof(secret, member.name, member.incarnation, member.address)
    return hmac.compare_digest(expected, member.proof)


@dataclass(frozen=True, slots=True)
class View:
    """The membership as one node sees it after a renewal."""

    live: dict[str, Member]  # trusted, alive, not us: the peers to link to
    down: frozenset[str]  # trusted members whose lease lapsed
    untrusted: frozenset[str]  # rows without a valid proof: never linked, never routed to


def view(rows: Iterable[tuple[Any, ...]], now: float, secret: bytes, me: str) -> View:
    live: dict[str, Member] = {}
    down: set[str] = set()
    untrusted: set[str] = set()
    for row in rows:
        member = Member.from_row(row)
        if member.name == me:
            continue
        if not trusted(member, secret):
            untrusted.add(member.name)
        elif member.alive(now):
            live[member.name] = member
        else:
            down.add(member.name)
    return View(live, frozenset(down), frozenset(untrusted))


def valid_until(renewal_sent: float, lease: float) -> float:
    """Until when (own monotonic clock) a node may act on the lease it renewed."""
    return renewal_sent + lease * SAFETY


def renew_every(lease: float) -> float:
    return lease / 4


class Route(enum.Enum):
    LOCAL = "local"  # this node owns it, or may claim it (no live owner)
    REMOTE = "remote"  # a live peer owns it and the link is up: the mail crosses
    UNREACHABLE = "unreachable"  # a live peer owns it but no link: not accepted, retry


def route(
    owner: tuple[str, int] | None,
    me: tuple[str, int],
    live: dict[str, int],
    linked: Iterable[str],
) -> tuple[Route, str | None]:
    """Where mail for a user goes, given its ownership row (node, incarnation), this node,
    the live members (name -> incarnation) and the peers with a link up."""
    if owner is None:
        return Route.LOCAL, None
    node, inc = owner
    if node == me[0]:
        # Ours, or a former incarnation of ours (dead, since we are its successor).
        return Route.LOCAL, None
    if live.get(node) != inc:
        return Route.LOCAL, None  # the owner is down: free to claim
    if node in set(linked):
        return Route.REMOTE, node
    return Route.UNREACHABLE, node
