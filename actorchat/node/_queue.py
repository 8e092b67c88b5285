"""One user's delivery queue, as pure data: what to deliver, what to store, whom to tell.

The mailbox actor (``_user.py``) owns a ``DeliveryQueue`` and carries out what its methods
return (an ``Effects``); nothing here does I/O or reads a clock, so every rule of the delivery
contract is tested without sockets or sleeps (``tests/actorchat/node/test_queue.py``).

The rules:

* Every message gets a ``key`` from the recipient's queue: strictly increasing, and above the
  wall clock in microseconds, so keys (and the ``mid`` made from them) stay unique across node
  restarts even for messages that were never stored.
* A message is *accepted* (the sender is told) once the recipient acknowledged it or it is
  durably stored. Recipient offline, queue over its bound, or no ack within ``ack_timeout``:
  it is stored.
* While anything for this user lives only in the store (``spilled``), new messages go to the
  store too and are paged back in key order, so order holds across memory and store.
* A (sender, id) seen before is a retry: never queued twice; accepted again once the first is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from itertools import islice

import msgspec

from actorchat.store import DedupeRow, MailRow, StoreBatch


class Item(msgspec.Struct):
    key: int
    sender: str
    id: str
    body: str
    ts: float
    group: str | None = None
    media: str | None = None  # JSON text
    stored: bool = False
    accepted: bool = False
    sent_at: float | None = None  # delivered on the current connection, not acknowledged yet

    @property
    def mid(self) -> str:
        return str(self.key)

    @property
    def waiting_since(self) -> float:
        """Since when its sender waits for ``accepted`` to be due: its delivery on the current
        connection, else its arrival (``sent_at`` -1 marks a spill-only item whose sender
        was warned)."""
        sent_at = self.sent_at
        return sent_at if sent_at is not None and sent_at >= 0 else self.ts

    def row(self, recipient: str) -> MailRow:
        return MailRow(
            recipient, self.key, self.sender, self.id, self.body, self.ts, self.group, self.media
        )


class Effects(msgspec.Struct):
    """What the actor must do after a queue operation."""

    deliver: list[Item] = msgspec.field(default_factory=list)
    store: list[Item] = msgspec.field(default_factory=list)  # write these, then call stored()
    accepted: dict[str, list[str]] = msgspec.field(default_factory=dict)  # sender -> ids
    # sender -> ids (receipts)
    delivered: dict[str, list[str]] = msgspec.field(default_factory=dict)
    read: dict[str, list[str]] = msgspec.field(default_factory=dict)
    write_behind: StoreBatch | None = None
    page_in: bool = False  # fetch the next page of stored mail, then call paged()
    refused: bool = False  # not taken: the store is behind; tell the sender `unavailable`
    # A group message's copies: (group, sender) -> ids. `accepted` goes to the group actor
    # (the sender hears it once every member's copy is safe); receipts carry the group.
    # None until used, so 1:1 traffic builds no more dicts than before.
    group_accepted: dict[tuple[str, str], list[str]] | None = None
    group_delivered: dict[tuple[str, str], list[str]] | None = None
    group_read: dict[tuple[str, str], list[str]] | None = None

    def accept(self, item: Item) -> None:
        if not item.accepted:
            item.accepted = True
            if item.group is None:
                self.accepted.setdefault(item.sender, []).append(item.id)
            else:
                if self.group_accepted is None:
                    self.group_accepted = {}
                self.group_accepted.setdefault((item.group, item.sender), []).append(item.id)


class _Empty(OrderedDict):
    """The one empty mapping every queue starts with (``EMPTY``), in place of five empty
    OrderedDicts per user (~640 bytes of an idle user's memory): readable like any empty
    one; a write is a bug (the queue makes its own mapping first), so it raises."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("EMPTY is shared: make a mapping of your own before writing")

    __setitem__ = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]


EMPTY: OrderedDict = _Empty()


class DeliveryQueue:
    """The delivery state of one user. Survives restarts of its actor (it is in the child's
    start args), so a crash of the mailbox actor loses nothing it held."""

    # One per user, idle or not: no instance dict.
    __slots__ = (
        "attached",
        "backlog",
        "bound",
        "conn",
        "floor",
        "high_key",
        "in_flight",
        "items",
        "loaded",
        "paging",
        "recent",
        "seen",
        "seen_limit",
        "spilled",
        "spilling",
        "to_store",
        "user",
        "window",
    )

    def __init__(
        self,
        user: str,
        *,
        bound: int = 1000,
        window: int = 256,
        seen_limit: int = 10_000,
        backlog: int = 10_000,
    ) -> None:
        self.user = user
        self.bound = bound
        self.backlog = backlog  # spill-only items waiting for the store before we refuse
        self.window = window
        self.seen_limit = seen_limit
        # The mappings below start as the shared ``EMPTY``: each is made on its first write.
        self.items: OrderedDict[int, Item] = EMPTY  # in memory, by key
        self.spilled = False  # some mail lives only in the store, after every key in memory
        # Spill-only items not committed yet. They keep their key until the store takes them
        # (a write whose answer was lost is simply written again: puts are idempotent).
        self.spilling: OrderedDict[int, Item] = EMPTY
        self.paging = False
        self.high_key = 0  # the last key handed out or loaded
        self.floor = 0  # the highest key acknowledged: stored rows at or below it are done
        self.seen: OrderedDict[tuple[str, str], int] = EMPTY
        self.recent: OrderedDict[int, tuple[str, str, str | None]] = EMPTY  # acked
        self.attached = False
        self.loaded = False
        self.in_flight = 0  # delivered on the current connection, not acknowledged yet
        self.conn: object | None = None  # the attached connection's ref (kept across restarts)
        self.to_store: OrderedDict[int, Item] = EMPTY  # owed to the store, by key (``owe``)

    # -- keys and dedupe ------------------------------------------------------------------
    def next_key(self, now: float) -> int:
        self.high_key = max(self.high_key + 1, int(now * 1_000_000))
        return self.high_key

    def remember(self, sender: str, client_id: str, key: int) -> None:
        if self.seen is EMPTY:
            self.seen = OrderedDict()
        self.seen[(sender, client_id)] = key
        self.seen.move_to_end((sender, client_id))
        while len(self.seen) > self.seen_limit:
            self.seen.popitem(last=False)

    def load(
        self, max_key: int | None, dedupe: Iterable[DedupeRow], page: list[MailRow], page_size: int
    ) -> Effects:
        """First start: continue keys above the store, remember recent ids, take a page."""
        self.high_key = max(self.high_key, max_key or 0)
        for row in reversed(list(dedupe)):
            self.remember(row.sender, row.client_id, row.key)
        self.loaded = True
        return self.paged(page, page_size)

    # -- incoming -------------------------------------------------------------------------
    def incoming(
        self,
        sender: str,
        client_id: str,
        body: str,
        now: float,
        *,
        group: str | None = None,
        media: str | None = None,
    ) -> Effects:
        fx = Effects()
        key = self.seen.get((sender, client_id))
        if key is not None:
            item = self.items.get(key) or self.spilling.get(key)
            if item is None or item.accepted:
                # delivered, stored or acknowledged before: accepted again, never queued twice
                if group is None:
                    fx.accepted.setdefault(sender, []).append(client_id)
                else:
                    fx.group_accepted = {(group, sender): [client_id]}
            return fx
        spill = self.spilled or self.paging or len(self.items) >= self.bound
        if spill and len(self.spilling) >= self.backlog:
            # The store is not keeping up (or is down): refuse rather than grow without bound.
            fx.refused = True
            return fx
        item = Item(self.next_key(now), sender, client_id, body, now, group, media)
        self.remember(sender, client_id, item.key)
        if spill:
            # Spill: store only, dropped from memory once written; paged back in order.
            self.spilled = True
            if self.spilling is EMPTY:
                self.spilling = OrderedDict()
            self.spilling[item.key] = item
            fx.store.append(item)
            return fx
        if self.items is EMPTY:
            self.items = OrderedDict()
        self.items[item.key] = item
        if not self.attached:
            fx.store.append(item)
        self._fill(fx, now)
        return fx

    # -- the connection -------------------------------------------------------------------
    def attach(self, now: float) -> Effects:
        """A connection took this user: everything unacknowledged is delivered again."""
        self.attached = True
        for item in self.items.values():
            item.sent_at = None
        self.in_flight = 0
        fx = Effects()
        self._fill(fx, now)
        return fx

    def detach(self) -> Effects:
        """The connection is gone: store what is not stored yet (then it is accepted)."""
        self.attached = False
        fx = Effects()
        for item in self.items.values():
            item.sent_at = None
            if not item.stored:
                fx.store.append(item)
        self.in_flight = 0
        return fx

    def _fill(self, fx: Effects, now: float) -> None:
        # Items go out in key order, so the ones in flight are always the first
        # ``in_flight`` items and the unsent ones the last ``len(items) - in_flight``: start
        # from the nearer end, in C (islice, reversed), instead of scanning in Python on every
        # message and ack (the benchmark's profile found that scan). Under relay load most
        # items are in flight and few unsent: skipping a window of in-flight items from the
        # front on every message was then the node's top line of own time (6%).
        room = self.window - self.in_flight
        unsent = len(self.items) - self.in_flight
        if not self.attached or room <= 0 or unsent <= 0:
            return
        if unsent < self.in_flight:
            items: Iterable[Item] = reversed(list(islice(reversed(self.items.values()), unsent)))
        else:
            items = islice(self.items.values(), self.in_flight, None)
        for item in items:
            if room <= 0:
                break
            if item.sent_at is None:
                item.sent_at = now
                fx.deliver.append(item)
                self.in_flight += 1
                room -= 1

    # -- acknowledgements -----------------------------------------------------------------
    def ack(self, mids: Iterable[str], now: float) -> Effects:
        fx = Effects()
        deletes: list[tuple[str, int]] = []
        dedupe: list[DedupeRow] = []
        for mid in mids:
            try:
                key = int(mid)
            except ValueError:
                continue
            item = self.items.pop(key, None)
            if item is None:
                continue  # acknowledged before, or not this user's: nothing to do
            if item.sent_at is not None:
                self.in_flight -= 1
            fx.accept(item)
            if item.group is None:
                fx.delivered.setdefault(item.sender, []).append(item.id)
            else:
                if fx.group_delivered is None:
                    fx.group_delivered = {}
                fx.group_delivered.setdefault((item.group, item.sender), []).append(item.id)
            self.floor = max(self.floor, key)
            if self.recent is EMPTY:
                self.recent = OrderedDict()
            self.recent[key] = (item.sender, item.id, item.group)
            if item.stored:
                deletes.append((self.user, key))
            else:
                dedupe.append(DedupeRow(item.sender, item.id, self.user, key, now))
        while len(self.recent) > self.seen_limit:
            self.recent.popitem(last=False)
        if deletes or dedupe:
            fx.write_behind = StoreBatch(delete_mail=deletes, put_dedupe=dedupe)
        self._fill(fx, now)
        self._maybe_page(fx)
        return fx

    def read(self, mids: Iterable[str]) -> Effects:
        fx = Effects()
        for mid in mids:
            try:
                key = int(mid)
            except ValueError:
                continue
            item = self.items.get(key)
            who = (item.sender, item.id, item.group) if item is not None else self.recent.get(key)
            if who is None:
                continue
            if who[2] is None:
                fx.read.setdefault(who[0], []).append(who[1])
            else:
                if fx.group_read is None:
                    fx.group_read = {}
                fx.group_read.setdefault((who[2], who[0]), []).append(who[1])
        return fx

    def overdue(self, now: float, ack_timeout: float) -> Effects:
        """Stored so no sender waits longer than ``ack_timeout`` for ``accepted``: mail
        delivered but not acknowledged in time, and mail still waiting behind a full delivery
        window (a recipient that reads but never acks) since it arrived."""
        fx = Effects()
        for item in self.items.values():
            if not item.stored and now - item.waiting_since >= ack_timeout:
                fx.store.append(item)
        return fx

    def next_due(self, ack_timeout: float) -> float | None:
        """When ``overdue`` will next find something (wall time), or None if nothing here can
        become overdue (every item stored). Acknowledgements only move it later."""
        earliest = min(
            (item.waiting_since for item in self.items.values() if not item.stored), default=None
        )
        return None if earliest is None else earliest + ack_timeout

    # -- the store's answers --------------------------------------------------------------
    def stored(self, items: list[Item], now: float) -> Effects:
        """These items are committed: accept them; spill-only ones leave memory."""
        fx = Effects()
        for item in items:
            item.stored = True
            fx.accept(item)
            self.spilling.pop(item.key, None)
        self._maybe_page(fx)
        return fx

    def store_failed(self, items: list[Item]) -> list[Item]:
        """The store could not take ``items`` (or its answer was lost): nothing is accepted and
        everything stays owed, under the same keys, to be written again. Returns the spill-only
        items whose senders should now hear ``unavailable`` (once each): their messages wait for
        the store; a retry of the same id is dropped as a duplicate and accepted with the first."""
        warn = []
        for item in items:
            if item.key in self.spilling and item.sent_at is None and not item.accepted:
                item.sent_at = -1.0  # marks "sender warned" for a spill-only item
                warn.append(item)
        return warn

    def paged(self, rows: list[MailRow], page_size: int, now: float = 0.0) -> Effects:
        self.paging = False
        fx = Effects()
        last = self.page_after()
        for row in rows:
            if row.key in self.items or row.key <= last:
                continue
            if self.items is EMPTY:
                self.items = OrderedDict()
            self.items[row.key] = Item(
                row.key,
                row.sender,
                row.client_id,
                row.body,
                row.ts,
                row.grp,
                row.media,
                stored=True,
                accepted=True,
            )
            self.high_key = max(self.high_key, row.key)
        if len(rows) < page_size and not self.spilling:
            self.spilled = False
        elif rows:
            self.spilled = True
        self._fill(fx, now)
        return fx

    def page_after(self) -> int:
        """The key after which the next page of stored mail starts."""
        if self.items:
            return max(self.floor, next(reversed(self.items)))
        return self.floor

    def _maybe_page(self, fx: Effects) -> None:
        if self.spilled and not self.paging and len(self.items) <= self.bound // 2:
            self.paging = True
            fx.page_in = True

    # -- life -----------------------------------------------------------------------------
    def idle(self) -> bool:
        """Nothing here needs the actor: all in memory is stored, nobody attached."""
        return (
            not self.attached
            and not self.spilling
            and all(item.stored for item in self.items.values())
        )

    def owe(self, item: Item) -> None:
        """Owed to the store (once per key): ``to_store`` keeps it until it is written."""
        if self.to_store is EMPTY:
            self.to_store = OrderedDict()
        self.to_store.setdefault(item.key, item)

    def unstored(self) -> list[Item]:
        return [item for item in self.items.values() if not item.stored]
