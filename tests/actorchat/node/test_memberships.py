"""``Memberships`` (actorchat/node/_memberships.py), pure: each user's groups in node memory,
kept current by the node's commits, and never filled from a read that a commit overtook."""

from __future__ import annotations

from actorchat.node._memberships import Memberships


def frames(m: Memberships, user: str) -> list[tuple[str, str, list[str]]] | None:
    infos = m.groups_of(user)
    return None if infos is None else [(i.group, i.owner, i.members) for i in infos]


def test_unknown_until_loaded_then_from_memory():
    m = Memberships()
    assert m.groups_of("ann") is None
    m.loaded("ann", [("g2", "two", "bob", ["bob", "ann"]), ("g1", "one", "ann", ["ann"])], 0)
    assert frames(m, "ann") == [("g1", "ann", ["ann"]), ("g2", "bob", ["bob", "ann"])]
    m.loaded("cat", [], m.version)
    assert frames(m, "cat") == []


def test_commits_update_cached_users_and_their_groups():
    m = Memberships()
    m.loaded("ann", [("g1", "one", "ann", ["ann", "bob"])], 0)
    m.loaded("bob", [("g1", "one", "ann", ["ann", "bob"])], 0)
    m.loaded("cat", [], 0)
    m.changed("g1", "one", "ann", ["ann", "bob", "cat"], added=["cat"])
    assert frames(m, "cat") == [("g1", "ann", ["ann", "bob", "cat"])]
    assert frames(m, "bob") == [("g1", "ann", ["ann", "bob", "cat"])]
    m.changed("g1", "one", "ann", ["ann", "cat"], removed=["bob"])
    assert frames(m, "bob") == []
    assert frames(m, "ann") == [("g1", "ann", ["ann", "cat"])]
    m.changed("g2", "two", "cat", ["cat", "dan"], added=["cat", "dan"])  # created
    assert [g for g, _, _ in frames(m, "cat") or []] == ["g1", "g2"]
    assert m.groups_of("dan") is None  # not cached: read on its first welcome
    m.changed("g1", "one", "cat", ["cat"], removed=["ann"])  # the owner left
    assert frames(m, "cat") == [("g1", "cat", ["cat"]), ("g2", "cat", ["cat", "dan"])]
    m.changed("g1", "one", "cat", [], removed=["cat"])  # deleted
    assert frames(m, "cat") == [("g2", "cat", ["cat", "dan"])]
    assert frames(m, "ann") == []


def test_a_read_overtaken_by_a_commit_is_not_cached():
    m = Memberships()
    version = m.version  # the read begins, and is answered before the commit
    m.changed("g1", "one", "ann", ["ann", "bob"], added=["ann", "bob"])  # bob not cached
    m.loaded("bob", [], version)  # the stale answer arrives
    assert m.groups_of("bob") is None  # read again next time
    version = m.version
    m.loaded("bob", [("g1", "one", "ann", ["ann", "bob"])], version)
    assert frames(m, "bob") == [("g1", "ann", ["ann", "bob"])]


def test_clear_forgets_everything_and_fences_reads_in_flight():
    m = Memberships()
    m.loaded("ann", [], 0)
    version = m.version
    m.clear()  # a commit whose outcome is unknown
    m.loaded("bob", [], version)
    assert m.groups_of("ann") is None and m.groups_of("bob") is None


def test_bounded():
    m = Memberships(limit=2)
    m.loaded("a", [], 0)
    m.loaded("b", [("g", "g", "b", ["b"])], 0)
    m.loaded("c", [], m.version)  # full: everything goes, then c
    assert len(m) == 1 and m.groups_of("c") == [] and m.groups_of("b") is None
