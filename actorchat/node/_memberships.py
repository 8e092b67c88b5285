"""Each user's groups in node memory, so that a welcome costs no store read (issue 5).

Every welcome sends one ``group`` frame per membership. Reading them from the store cost a
thread hop and a query or three per login (most of a login storm's CPU, even for a user in no
group). On a single node every membership change is committed by this node (``_create``,
``GroupActor._change``), so the node keeps the memberships current itself: a user's groups are
read once (its first welcome) and then updated by each commit. Pure (no I/O, no clock):
``_groups.py`` performs the reads and reports the commits; tests/actorchat/node/
test_memberships.py checks it without sockets.

A read races commits: the store may answer before a change commits while the change is applied
here before the answer arrives (the user was not cached yet, so the change updated nothing).
``version`` counts commits; an answer is cached only if none happened while it was in flight.
A commit whose outcome is unknown (the store did not answer) clears everything.

In a cluster another node may host a group and change it there: the node does not use this
and reads the store on every welcome, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._group_state import GroupInfo

_NONE: frozenset[str] = frozenset()  # shared by every user in no group (most of them)


class Memberships:
    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit  # users cached; beyond it everything is dropped and read again
        self.version = 0
        self._of: dict[str, frozenset[str]] = {}  # user -> its groups' ids
        self._groups: dict[str, GroupInfo] = {}  # every group of a cached user

    def groups_of(self, user: str) -> list[GroupInfo] | None:
        """The user's groups by id, or None when it must be read (``loaded``)."""
        ids = self._of.get(user)
        if ids is None:
            return None
        return [self._groups[g] for g in sorted(ids)]

    def loaded(
        self, user: str, rows: Iterable[tuple[str, str, str, Sequence[str]]], version: int
    ) -> None:
        """``Store.groups_of(user)`` answered ``rows`` to a read begun at ``version``."""
        if version != self.version:
            return  # a commit happened meanwhile: the answer may predate it
        if user not in self._of and len(self._of) >= self.limit:
            self.clear()
        ids = []
        for group, name, owner, members in rows:
            self._groups[group] = GroupInfo(group, name, owner, list(members))
            ids.append(group)
        self._of[user] = frozenset(ids) or _NONE

    def changed(
        self,
        group: str,
        name: str,
        owner: str,
        members: Sequence[str],
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
    ) -> None:
        """``group`` was created or changed (committed): now ``members`` (none: deleted)."""
        self.version += 1
        of = self._of
        one = frozenset((group,))
        for user in added:
            ids = of.get(user)
            if ids is not None:
                of[user] = ids | one
        for user in removed:
            ids = of.get(user)
            if ids is not None:
                of[user] = (ids - one) or _NONE
        if any(m in of for m in members):
            self._groups[group] = GroupInfo(group, name, owner, list(members))
        else:
            self._groups.pop(group, None)

    def clear(self) -> None:
        self.version += 1
        self._of.clear()
        self._groups.clear()

    def __len__(self) -> int:
        return len(self._of)
