"""The persistence actor and its trio-side front.

``StoreActor`` is a ``supervisors.ThreadActor``: it owns an asyncio loop in its own thread and a
``Store`` (SQLAlchemy async engine on asyncpg or aiosqlite) on it, so the database never runs on
the trio loop. A trio -> thread -> trio round trip costs ~300 us here, so nothing talks to it one
request at a time: ``StoreFront`` (a trio actor) takes requests from every mailbox, and while
one batch is in the thread the next requests queue; it then sends them all in one hop and
merges their writes into ONE transaction (group commit). Under load, batches grow by themselves;
when idle, a lone request goes at once (no added latency).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

import supervisors as sv
from actorchat.store import BatchResult, MailRow, Store, StoreBatch, StoreUnavailable

log = logging.getLogger("actorchat.store")


# -- requests -----------------------------------------------------------------------------------
class Write(msgspec.Struct, frozen=True):
    batch: StoreBatch


class Read(msgspec.Struct, frozen=True):
    """Any read: ``method`` of ``Store`` with ``args``."""

    method: str
    args: tuple[Any, ...] = ()


class WriteBehind(msgspec.Struct, frozen=True):
    """A write nobody waits for."""

    batch: StoreBatch


class _Pending(msgspec.Struct):
    request: Write | Read
    reply: sv.Reply | None


class _Hop(msgspec.Struct, frozen=True):
    """What one thread hop carries: the merged write and the reads, in arrival order."""

    write: StoreBatch | None
    reads: tuple[Read, ...] = ()


class StoreActor(sv.ThreadActor):
    """Runs ``Store`` on its own asyncio loop in its own thread."""

    window = 1

    def __init__(
        self,
        url: str,
        schema: str | None = None,
        migrate: bool = True,
        pool_size: int = 5,
        statement_timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.url, self.schema, self.migrate = url, schema, migrate
        self.pool_size, self.statement_timeout = pool_size, statement_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store: Store | None = None

    def on_start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = self.loop.run_until_complete(
            Store.open(
                self.url,
                schema=self.schema,
                migrate=self.migrate,
                pool_size=self.pool_size,
                statement_timeout=self.statement_timeout,
            )
        )

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self.loop is not None:
            if self.store is not None:
                self.loop.run_until_complete(self.store.close())
            self.loop.close()
            self.loop = None

    def on_receive(self, message: Any) -> Any:
        assert self.loop is not None and self.store is not None
        return self.loop.run_until_complete(self._hop(message))

    async def _hop(self, hop: _Hop) -> tuple[Any, list[Any]]:
        """Returns (write result or exception, [read result or exception, ...])."""
        store = self.store
        assert store is not None
        written: Any = None
        if hop.write is not None:
            try:
                written = await store.apply(hop.write)
            except StoreUnavailable as e:
                written = e
        results: list[Any] = [None] * len(hop.reads)
        for call in plan_reads(hop.reads):
            try:
                if call.users is None:
                    answer = [await getattr(store, call.method)(*call.args)]
                else:  # one query set for many users' reads (a burst of first logins)
                    by_user = await getattr(store, call.method)(call.users, *call.args)
                    answer = [by_user[hop.reads[i].args[0]] for i in call.indices]
            except StoreUnavailable as e:
                answer = [e] * len(call.indices)
            for i, result in zip(call.indices, answer, strict=True):
                results[i] = result
        return written, results


# The reads a hop answers for many users at once: a login reads its user's mailbox and groups
# (``Registry.mailbox``, ``_groups._welcome``), and one at a time each cost a connection and
# up to three queries on the store thread, which shares the node's core: most of a burst of
# first logins' CPU. Method -> the ``Store`` method taking a list of users (the reads' first
# argument) and the rest of the reads' arguments, answering a dict by user.
BATCHED_READS = {"load_mailbox": "load_mailboxes", "groups_of": "groups_of_many"}


@dataclass(slots=True)
class ReadCall:
    """One ``Store`` call of a hop: ``method(*args)``, or ``method(users, *args)`` when
    ``users`` is a list; it answers the hop's reads at ``indices``."""

    method: str
    args: tuple[Any, ...]
    indices: list[int]
    users: list[str] | None = None


def plan_reads(reads: Sequence[Read]) -> list[ReadCall]:
    """Pure: the calls that answer a hop's ``reads``. The reads of one ``BATCHED_READS``
    method with the same further arguments become one call over their users (a user read
    twice is answered once by the store), in the place of the first of them; any other read
    is a call of its own, in order."""
    calls: list[ReadCall] = []
    batches: dict[tuple[str, tuple[Any, ...]], ReadCall] = {}
    for i, read in enumerate(reads):
        batched = BATCHED_READS.get(read.method)
        if batched is None or not read.args:
            calls.append(ReadCall(read.method, read.args, [i]))
            continue
        user, rest = read.args[0], read.args[1:]
        try:
            call = batches.get((batched, rest))
        except TypeError:  # arguments that cannot key a batch: a call of its own
            calls.append(ReadCall(read.method, read.args, [i]))
            continue
        if call is None:
            call = batches[(batched, rest)] = ReadCall(batched, rest, [], [])
            calls.append(call)
        call.indices.append(i)
        call.users.append(user)  # type: ignore[union-attr]
    return calls


def check_database(url: str, schema: str | None, migrate: bool) -> None:
    """Open the store once (migrating if asked) and close it; in a worker thread."""

    async def check() -> None:
        store = await Store.open(url, schema=schema, migrate=migrate)
        await store.close()

    asyncio.run(check())


def merge(batches: list[StoreBatch]) -> StoreBatch:
    if len(batches) == 1:
        return batches[0]
    put_mail: list[MailRow] = []
    delete_mail: list[tuple[str, int]] = []
    put_dedupe: list[Any] = []
    last_seen: list[tuple[str, float]] = []
    for b in batches:
        put_mail.extend(b.put_mail)
        delete_mail.extend(b.delete_mail)
        put_dedupe.extend(b.put_dedupe)
        last_seen.extend(b.last_seen)
    return StoreBatch(put_mail, delete_mail, put_dedupe, last_seen)


# Seconds a hop carrying only write-behind batches waits for more to join it. Each ack turn of
# a mailbox queues one (its dedupe rows, deletes of delivered stored mail), and a hop costs
# the same thread hand-offs and commit whether it carries one row or a thousand: at 10 ms, a
# node relaying a few hundred messages a second paid a hop for nearly every message (the store
# thread was a fifth of the node's CPU at 50 msgs/s). Under load hops run back to back and
# this delay does not count. It bounds how long an acknowledged message's dedupe row may be
# missing after a node is killed (docs/guarantees.md, section 2).
WRITE_BEHIND_DELAY = 0.05


# Upper bounds of the group-commit histograms (/metrics: actorchat_store_batch_*).
BATCH_ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
BATCH_SECONDS_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)


@dataclass(slots=True)
class StoreStats:
    batches: int = 0
    rows: int = 0
    last_batch_rows: int = 0
    last_batch_seconds: float = 0.0
    failures: int = 0
    seconds: float = 0.0  # all committed batches' hops, summed
    # Committed batches by size and by hop time: counts per bucket of the bounds above (the
    # last one past every bound), not cumulative. One bisect per batch, not per message.
    rows_buckets: list[int] = field(default_factory=lambda: [0] * (len(BATCH_ROWS_BUCKETS) + 1))
    seconds_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(BATCH_SECONDS_BUCKETS) + 1)
    )

    def record(self, rows: int, seconds: float) -> None:
        """One committed batch."""
        self.batches += 1
        self.rows += rows
        self.seconds += seconds
        self.last_batch_rows = rows
        self.last_batch_seconds = seconds
        self.rows_buckets[bisect.bisect_left(BATCH_ROWS_BUCKETS, rows)] += 1
        self.seconds_buckets[bisect.bisect_left(BATCH_SECONDS_BUCKETS, seconds)] += 1


class StoreFront(sv.Actor):
    """Group commit in front of the store thread. ``call(Write(...))`` returns a
    ``BatchResult`` once committed; ``call(Read(...))`` the read's value. Both raise
    ``StoreUnavailable`` when the database cannot be reached."""

    mailbox_size = 100_000

    def __init__(self, store_ref_lookup: Any, hop_timeout: float = 30.0) -> None:
        self._lookup = store_ref_lookup
        self._queue: list[_Pending] = []
        self._wakeup = trio.Event()
        self._urgent = trio.Event()  # set when a caller waits: no write-behind delay
        self.hop_timeout = hop_timeout
        self.stats = StoreStats()
        self.down = False

    async def on_start(self) -> None:
        self.start_task(self._pump)

    async def receive(self, message: Any) -> Any:
        if type(message) is WriteBehind:
            self._queue.append(_Pending(Write(message.batch), None))
        else:
            self._urgent.set()
            reply = self.defer_reply()
            if self.down:
                # Fail fast while the database is known to be down: a waiting caller (a
                # sender, a login) hears `unavailable` now, not after our backoff. The pump's
                # probes find out when it is back. Guarded by test_outage.py.
                reply.fail(StoreUnavailable("the database is unreachable; retrying"))
                return
            self._queue.append(_Pending(message, reply))
        self._wakeup.set()

    async def on_stop(self, reason: sv.ExitReason) -> None:
        if self._queue:
            await self._hop_once()

    async def _pump(self) -> None:
        backoff = 0.05
        while True:
            if not self._queue and not self.down:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
            if not self.down and not self._urgent.is_set():
                # Only write-behind batches (one per ack turn of a mailbox: dedupe rows,
                # deletes) and nobody waits: let more gather for a moment so one thread hop
                # and one transaction carry many (each hop costs ~300 us of thread hand-offs
                # and a commit). A waiting caller's request cuts the wait short.
                with trio.move_on_after(WRITE_BEHIND_DELAY):
                    await self._urgent.wait()
            self._urgent = trio.Event()
            if self.down and not self._queue:
                self._queue.append(_Pending(Read("ping"), None))  # a probe nobody waits for
            if await self._hop_once():
                backoff = 0.05
                self.down = False
            else:
                # The database is down: back off rather than spin. Waiting requests were
                # failed (their actors decide); write-behind batches stay queued.
                self.down = True
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _hop_once(self) -> bool:
        pending, self._queue = self._queue, []
        writes = [p for p in pending if type(p.request) is Write]
        reads = [p for p in pending if type(p.request) is Read]
        batch = merge([p.request.batch for p in writes]) if writes else None  # type: ignore[union-attr]
        hop = _Hop(batch, tuple(p.request for p in reads))  # type: ignore[misc]
        started = time.monotonic()
        try:
            ref = await self._lookup()
            written, results = await ref.call(hop, timeout=self.hop_timeout)
        except (sv.ActorDeadError, sv.CallTimeout) as e:
            error = StoreUnavailable(f"the store is not answering: {e}")
            self.stats.failures += 1
            for p in pending:
                if p.reply is not None:
                    p.reply.fail(error)
                elif type(p.request) is Write:
                    self._queue.append(p)  # write-behind: keep it for the next hop
            return False
        for p in writes:
            if p.reply is None:
                if isinstance(written, Exception):
                    self._queue.append(p)  # write-behind: retried with the next hop
            elif isinstance(written, Exception):
                p.reply.fail(written)
            else:
                p.reply.send(written)
        for p, result in zip(reads, results, strict=True):
            if p.reply is None:  # a probe: its failure counts below
                continue
            if isinstance(result, Exception):
                p.reply.fail(result)
            else:
                p.reply.send(result)
        if batch is not None and isinstance(written, BatchResult):
            rows = len(batch.put_mail) + len(batch.delete_mail) + len(batch.put_dedupe)
            self.stats.record(rows, time.monotonic() - started)
        if isinstance(written, Exception) or any(isinstance(r, Exception) for r in results):
            self.stats.failures += 1
            return False
        return True


# The reads that keep a cluster node's lease. On PostgreSQL they go to the ``leasestore``
# child (its own thread and database connection, ``lease_store_spec``), never into the
# store front's queue behind the group commits of mail: a renewal that waits there for seconds
# under load fences the node (and, since the heartbeat checks its deadline only once the
# renewal is back, lets it act after its lease lapsed in the database).
LEASE_READS = frozenset({"cluster_join", "cluster_renew"})
LEASE_STORE = "leasestore"


def lease_store_spec(
    url: str, schema: str | None, statement_timeout: float
) -> list[sv.ChildSpec]:
    """The lease's own store (one connection), for a cluster node on PostgreSQL. SQLite
    (one host, one file) keeps the shared path: a second writer would only wait on its lock."""
    if not url.startswith(("postgresql", "postgres")):
        return []
    return [sv.ChildSpec(LEASE_STORE, StoreActor, (url, schema, False, 1, statement_timeout),
                         shutdown=10.0)]


class StoreClient:
    """What the node's actors use: typed helpers over ``StoreFront``."""

    def __init__(self, node: Any, timeout: float = 10.0) -> None:
        self.node = node
        self.timeout = timeout

    @property
    def front(self) -> sv.ActorRef:
        sup = self.node.sup
        ref = sup.whereis("storefront") if sup is not None else None
        if ref is None:
            raise sv.ActorDeadError("the store front is not running")
        return ref

    async def _call(self, request: Write | Read, timeout: float | None = None) -> Any:
        await self.node.tree_ready.wait()
        try:
            return await self.front.call(request, timeout=timeout or self.timeout)
        except (sv.ActorDeadError, sv.CallTimeout) as e:
            raise StoreUnavailable(f"the store did not answer: {e}") from e

    async def write(self, batch: StoreBatch, timeout: float | None = None) -> BatchResult:
        node = self.node
        cluster = getattr(node, "cluster", None)
        if getattr(node, "fenced", False) or (cluster is not None and cluster.lapsed()):
            # A fenced cluster node may no longer own these mailboxes: its mail rows could
            # land below the new owner's keys. Not written, so not accepted (see cluster).
            # Past its lease deadline a node is as good as fenced, though a starved
            # heartbeat may not have run the fence yet.
            raise StoreUnavailable("this node lost its cluster lease")
        return await self._call(Write(batch), timeout)

    async def read(self, method: str, *args: Any) -> Any:
        if method in LEASE_READS:
            sup = self.node.sup
            ref = sup.whereis(LEASE_STORE) if sup is not None else None
            if ref is not None:
                return await self._lease_read(ref, Read(method, args))
        return await self._call(Read(method, args))

    async def _lease_read(self, ref: sv.ActorRef, read: Read) -> Any:
        """One lease read on the lease's own store thread (see LEASE_READS)."""
        try:
            _written, (result,) = await ref.call(_Hop(None, (read,)), timeout=self.timeout)
        except (sv.ActorDeadError, sv.CallTimeout) as e:
            raise StoreUnavailable(f"the lease store did not answer: {e}") from e
        if isinstance(result, Exception):
            raise result
        return result

    def write_behind(self, batch: StoreBatch) -> None:
        """Queue a write nobody waits for (deletes of delivered mail, dedupe rows)."""
        if not batch:
            return
        try:
            self.front.send_nowait(WriteBehind(batch))
        except (sv.MailboxFull, sv.ActorDeadError):
            log.warning(
                "store front busy: a write-behind batch was dropped (%d rows)",
                len(batch.put_dedupe) + len(batch.delete_mail),
            )
