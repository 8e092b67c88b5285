"""The database becomes unreachable while traffic flows, then comes back (DESIGN.md, the
delivery contract, line 1: "through any ... database outage").

An in-process node talks to PostgreSQL through ``PgProxy``, a TCP proxy in the test's trio
loop: ``cut()`` closes every proxied connection and refuses new ones (the listening socket is
closed: connection refused), ``restore()`` listens on the same port again. Each test gets its
own schema (``<pg_url.schema>_<random>``), dropped at the end. Real WebSocket clients
(trio-websocket, ``tests/actorchat/node/client.py``) check, from outside:

- online delivery goes on during the outage (sender and recipient both connected: the message
  is delivered and ``accepted`` after the recipient's ack);
- a message to an OFFLINE recipient is never ``accepted`` while the store is down: the sender
  gets ``{"type":"error","code":"unavailable","ref":id}`` within ``UNAVAILABLE_BOUND``, or
  ``accepted`` only after the database is back;
- the node does not die (``node.sup.is_alive()``);
- after recovery, every message the sender saw ``accepted`` for reaches its recipient, nothing
  twice once deduplicated by ``mid`` (also when a commit succeeded but its answer was lost with
  the connection: ``PgProxy.lose_commit_of``).

And a node started while its database is down says so in one line and exits with status 1.
Waits are bounded (``trio.fail_after``); the only timed windows are the outage itself.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent / "node"))
from client import Client, new_id, register_users

from actorchat.config import Settings
from actorchat.node import Node

ROOT = Path(__file__).resolve().parents[2]

# Seconds from a send to its ``unavailable`` error while the database is down: the store
# client gives up after 10 s (StoreClient.timeout), plus scheduling slack.
UNAVAILABLE_BOUND = 15.0
# Seconds after the database is back by which held messages are accepted and retries succeed
# (the store front and the mailboxes back off at most 5 s between attempts).
RECOVERY_BOUND = 30.0
# Seconds from a send to ``accepted`` for an online delivery (both ends connected), outage
# or not: nothing on that path waits for the database.
ONLINE_BOUND = 5.0
# The shortest outage: long enough for every retry loop to fail and back off a few times.
OUTAGE_SECONDS = 3.0

FAST: dict[str, Any] = {
    "port": 0,
    "secret": b"s" * 32,
    "node_name": "outage",
    "messages_per_second": 1_000_000.0,
    "message_burst": 1_000_000,
    "ack_timeout": 1.0,
    "send_stall_timeout": 5.0,
    "idle_timeout": 300.0,
    "log_level": "WARNING",
    "db_statement_timeout": 1.0,
    "db_wait": 10.0,
}


# -- the proxy ---------------------------------------------------------------------------------
class PgProxy:
    """node <-> this proxy <-> PostgreSQL, with a switch."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0  # connections proxied so far
        self.up = False
        self._nursery: trio.Nursery | None = None
        self._listener_scope: trio.CancelScope | None = None
        self._listener_closed = trio.Event()
        self._pairs: dict[trio.CancelScope, trio.Event] = {}
        self._lose_commit: bytes | None = None
        self.commit_lost = trio.Event()

    def lose_commit_of(self, marker: bytes) -> None:
        """Forward the COMMIT of the next transaction that sends ``marker`` (e.g. a message
        body) to the server, drop the server's answer, and cut: a transaction that committed
        while its client saw the connection die."""
        self._lose_commit = marker
        self.commit_lost = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._listen()
            task_status.started(self)
            await trio.sleep_forever()

    async def _listen(self) -> None:
        assert self._nursery is not None
        listeners: list[trio.SocketListener] = []
        with trio.fail_after(10):
            while not listeners:
                try:  # SO_REUSEADDR is set: the port's TIME_WAIT connections do not matter
                    listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
                except OSError:
                    if not self.port:
                        raise
                    await trio.sleep(0.05)  # the same port, briefly busy
        listener = listeners[0]
        self.port = listener.socket.getsockname()[1]
        self._listener_scope = trio.CancelScope()
        self._listener_closed = trio.Event()
        self.up = True
        self._nursery.start_soon(self._accept, listener, self._listener_scope,
                                 self._listener_closed)

    async def _accept(
        self, listener: trio.SocketListener, scope: trio.CancelScope, closed: trio.Event
    ) -> None:
        assert self._nursery is not None
        try:
            with scope:
                while True:
                    stream = await listener.accept()
                    self.accepted += 1
                    self._nursery.start_soon(self._pipe, stream)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            closed.set()

    async def _pipe(self, client: trio.SocketStream) -> None:
        scope, done = trio.CancelScope(), trio.Event()
        self._pairs[scope] = done
        try:
            with scope:
                upstream = await trio.open_tcp_stream(*self.upstream)
                try:
                    async with trio.open_nursery() as nursery:
                        state = {"marked": False, "commit_sent": False}
                        for source, sink, to_server in ((client, upstream, True),
                                                        (upstream, client, False)):
                            nursery.start_soon(self._forward, source, sink, to_server, state,
                                               nursery.cancel_scope)
                finally:
                    await trio.aclose_forcefully(upstream)
        finally:
            await trio.aclose_forcefully(client)
            del self._pairs[scope]
            done.set()

    async def _forward(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        to_server: bool,
        state: dict[str, bool],
        both: trio.CancelScope,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                marker = self._lose_commit
                if to_server and marker is not None:
                    # Parameters travel as raw UTF-8; COMMIT as a simple query of its own.
                    state["marked"] = state["marked"] or marker in data
                    if b"COMMIT" in data or b"ROLLBACK" in data:
                        if state["marked"] and b"COMMIT" in data:
                            self._lose_commit = None
                            state["commit_sent"] = True
                        state["marked"] = False
                elif not to_server and state["commit_sent"]:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._cut_after_lost_commit)
                    return  # the answer to COMMIT (CommandComplete) never arrives
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            both.cancel()  # one side gone: close the pair

    async def _cut_after_lost_commit(self) -> None:
        if self.up:
            await self.cut()
        self.commit_lost.set()

    async def cut(self) -> None:
        """Refuse new connections, close every proxied one; returns once nothing flows."""
        assert self._listener_scope is not None
        self.up = False
        self._listener_scope.cancel()
        await self._listener_closed.wait()
        pairs = list(self._pairs.items())
        for scope, _ in pairs:
            scope.cancel()
        for _, done in pairs:
            await done.wait()

    async def restore(self) -> None:
        """Listen on the same port again."""
        await self._listen()


# -- clients that note when things arrived ------------------------------------------------------
class TimedClient(Client):
    """``Client`` that records the (trio) time each id was first accepted and each error came."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted_at: dict[str, float] = {}
        self.unavailable_at: dict[str, list[float]] = {}
        self.sent_at: dict[str, list[float]] = {}

    def feed(self, text: str | bytes) -> list[dict[str, Any]]:
        replies = super().feed(text)
        frame, now = self.frames[-1], trio.current_time()
        if frame["type"] == "accepted":
            for id in frame["ids"]:
                self.accepted_at.setdefault(id, now)
        elif frame["type"] == "error" and frame["code"] == "unavailable":
            self.unavailable_at.setdefault(frame["ref"], []).append(now)
        return replies

    async def send_message(self, to: str, body: str, id: str | None = None) -> str:
        id = id or new_id()
        self.sent_at.setdefault(id, []).append(trio.current_time())
        return await super().send_message(to, body, id)

    async def pump(self) -> None:
        """Read frames forever (run as a background task; auto-acks go back from here)."""
        while True:
            await self._read_one()


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` (other tasks read the sockets) until true; fail after ``timeout``."""
    try:
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)
    except trio.TooSlowError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def unique_by_mid(client: Client) -> list[tuple[str, str]]:
    """(from, id) of every delivery once deduplicated by mid, in arrival order."""
    seen: set[str] = set()
    out = []
    for d in client.deliveries:
        if d["mid"] not in seen:
            seen.add(d["mid"])
            out.append((d["from"], d["id"]))
    return out


def check_no_duplicates(recipient: Client, sender: TimedClient, name: str) -> None:
    """Once deduplicated by mid, no (from, id) is delivered twice; the failure names each
    duplicate's mids and what its sender saw (errors, resends, acceptance)."""
    repeated = twice(unique_by_mid(recipient))
    if not repeated:
        return
    details = []
    for sender_name, id in dict.fromkeys(repeated):
        mids = [d["mid"] for d in recipient.unique_deliveries()
                if (d["from"], d["id"]) == (sender_name, id)]
        details.append(
            f"{id}: mids {mids}, sent {len(sender.sent_at.get(id, []))}x, "
            f"unavailable {len(sender.unavailable_at.get(id, []))}x"
        )
    raise AssertionError(f"{name} got {len(details)} message(s) twice: " + "; ".join(details))


def twice(items: list[Any]) -> list[Any]:
    """The items that occur more than once."""
    seen: set[Any] = set()
    repeated = []
    for item in items:
        if item in seen:
            repeated.append(item)
        seen.add(item)
    return repeated


# -- the node behind the proxy ------------------------------------------------------------------
def _pg_admin(dsn: str, sql: str) -> None:
    """Run ``sql`` on the real server (not through the proxy), on asyncio in a thread."""

    async def main() -> None:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(main())


@asynccontextmanager
async def node_behind_proxy(pg_url: Any, **overrides: Any) -> AsyncIterator[tuple[Node, PgProxy]]:
    server = make_url(pg_url.url)
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"{pg_url.schema}_{secrets.token_hex(3)}"
    proxy = PgProxy(server.host or "127.0.0.1", server.port or 5432)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            url = server.set(host="127.0.0.1", port=proxy.port)
            settings = Settings(
                **{**FAST, "database_url": url.render_as_string(hide_password=False),
                   **overrides}
            )
            node = Node(settings, db_schema=schema)
            node.user_linger = 600.0  # offline mailboxes stay up: the test decides which exist
            await nursery.start(node.run)
            try:
                yield node, proxy
            finally:
                with trio.fail_after(60):
                    if not proxy.up:
                        await proxy.restore()
                    assert node.sup is not None
                    if node.sup.is_alive():
                        node.sup.stop()
                        await node.sup.wait()
                nursery.cancel_scope.cancel()
    finally:
        with trio.fail_after(30):
            await trio.to_thread.run_sync(
                _pg_admin, dsn, f"DROP SCHEMA IF EXISTS {schema} CASCADE"
            )


def check_offline_outcomes(
    sender: TimedClient, ids: list[str], cut_done: float, restored: float
) -> tuple[list[str], list[str]]:
    """Each id sent to an offline recipient after the cut and before the restore: never
    accepted before the restore; ``unavailable`` (within the bound) or accepted after.
    Returns (accepted ids, ids that got unavailable and were not accepted)."""
    failed_early = [
        (id, sender.accepted_at[id] - restored)
        for id in ids
        if id in sender.accepted_at and sender.accepted_at[id] < restored
    ]
    assert not failed_early, (
        f"accepted while the database was down (seconds before the restore): {failed_early}"
    )
    late_errors = [
        (id, round(sender.unavailable_at[id][0] - sender.sent_at[id][0], 2))
        for id in ids
        if id in sender.unavailable_at
        and sender.unavailable_at[id][0] - sender.sent_at[id][0] > UNAVAILABLE_BOUND
    ]
    assert not late_errors, f"unavailable later than {UNAVAILABLE_BOUND} s: {late_errors}"
    assert all(t >= cut_done for id in ids for t in sender.sent_at[id])
    accepted = [id for id in ids if id in sender.accepted_at]
    refused = [id for id in ids if id not in sender.accepted_at and id in sender.unavailable_at]
    return accepted, refused


async def resend_until_accepted(
    sender: TimedClient, to: dict[str, str], timeout: float = RECOVERY_BOUND
) -> None:
    """What a client does after ``unavailable``: send the same ids again until accepted
    (each again after every further ``unavailable``, at most every 0.5 s)."""
    pending = dict(to)  # id -> recipient

    async def body() -> None:
        answered: dict[str, int] = {}
        last_sent: dict[str, float] = {}
        while pending:
            now = trio.current_time()
            for id, recipient in list(pending.items()):
                if id in sender.accepted_at:
                    del pending[id]
                    continue
                errors = len(sender.unavailable_at.get(id, []))
                if answered.get(id, -1) < errors and now - last_sent.get(id, -1e9) >= 0.5:
                    answered[id], last_sent[id] = errors, now
                    await sender.send_message(recipient, f"retry of {id}", id=id)
            await trio.sleep(0.02)

    try:
        with trio.fail_after(timeout):
            await body()
    except trio.TooSlowError:
        raise AssertionError(
            f"{len(pending)} resent messages not accepted within {timeout} s of the "
            f"database's return: {sorted(pending)[:5]}"
        ) from None


# -- the tests ----------------------------------------------------------------------------------
@pytest.mark.postgres
async def test_outage_online_delivery_goes_on_offline_mail_waits_or_fails(pg_url):
    """The cut while everyone is idle, then three kinds of traffic during the outage:
    alice -> bob (online), alice -> carol (offline, her mailbox is up: it holds the message
    in memory), alice -> dave (offline, no mailbox: loading one needs the store)."""
    async with node_behind_proxy(pg_url) as (node, proxy):
        assert node.sup is not None and node.port
        await register_users(node.port, "alice", "bob", "carol", "dave")
        async with (
            TimedClient.connect(node.port) as alice,
            TimedClient.connect(node.port) as bob,
            trio.open_nursery() as readers,
        ):
            await alice.login("alice")
            await bob.login("bob")
            readers.start_soon(alice.pump)
            readers.start_soon(bob.pump)
            # Before: one message each way works, and carol's mailbox is started.
            warm = [await alice.send_message(u, "before") for u in ("bob", "carol")]
            await wait_for(lambda: all(i in alice.accepted_at for i in warm), 10, "warm-up")

            await proxy.cut()
            cut_done = trio.current_time()
            online = [await alice.send_message("bob", f"online {i}") for i in range(20)]
            await wait_for(
                lambda: all(i in alice.accepted_at for i in online), ONLINE_BOUND,
                "online messages accepted during the outage",
            )
            assert node.sup.is_alive()
            to_carol = [await alice.send_message("carol", f"held {i}") for i in range(10)]
            to_dave = [await alice.send_message("dave", f"refused {i}") for i in range(10)]
            # Online traffic sent behind the offline messages is not held up by them.
            online_after = [await alice.send_message("bob", f"after {i}") for i in range(5)]
            with trio.move_on_after(UNAVAILABLE_BOUND):
                await wait_for(
                    lambda: all(i in alice.unavailable_at for i in to_dave)
                    and all(i in alice.accepted_at for i in online_after),
                    UNAVAILABLE_BOUND + 1, "",
                )
            dave_delays = [
                round(alice.unavailable_at[i][0] - alice.sent_at[i][0], 1)
                if i in alice.unavailable_at else None
                for i in to_dave
            ]
            after_delays = [
                round(alice.accepted_at[i] - alice.sent_at[i][0], 1)
                if i in alice.accepted_at else None
                for i in online_after
            ]
            assert all(d is not None and d <= UNAVAILABLE_BOUND for d in dave_delays), (
                f"messages to dave (no mailbox, store down) must get unavailable within "
                f"{UNAVAILABLE_BOUND} s of their send; seconds each took (None: not yet): "
                f"{dave_delays}; online messages sent right after them were accepted after "
                f"{after_delays}"
            )
            assert all(d is not None and d <= ONLINE_BOUND for d in after_delays), (
                f"online messages sent after the offline ones must be accepted within "
                f"{ONLINE_BOUND} s; seconds each took (None: not yet): {after_delays}"
            )
            await wait_for(lambda: trio.current_time() - cut_done >= OUTAGE_SECONDS,
                           OUTAGE_SECONDS + 1, "the outage's minimum length")
            assert node.sup.is_alive(), "the node died during the outage"
            assert set(bob.delivered_ids("alice")) >= set(online)
            assert not bob.errors

            await proxy.restore()
            restored = trio.current_time()
            offline = to_carol + to_dave
            # Whatever was neither accepted nor refused yet must be accepted after recovery.
            await wait_for(
                lambda: all(i in alice.accepted_at or i in alice.unavailable_at
                            for i in offline),
                RECOVERY_BOUND, "every offline message accepted or refused after recovery",
            )
            _, refused = check_offline_outcomes(alice, offline, cut_done, restored)
            await resend_until_accepted(
                alice, {i: "carol" if i in to_carol else "dave" for i in refused}
            )
            assert node.sup.is_alive()
            readers.cancel_scope.cancel()

        # Every accepted message reaches its recipient, nothing twice after dedupe by mid.
        expected = {
            "bob": warm[:1] + online + online_after,
            "carol": warm[1:] + to_carol,
            "dave": to_dave,
        }
        assert set(expected["bob"]) <= set(alice.accepted_at)
        async with TimedClient.connect(node.port) as carol, TimedClient.connect(node.port) as dave:
            for client, name in ((carol, "carol"), (dave, "dave")):
                await client.login(name)
                await client.until(
                    lambda c=client, n=name: set(expected[n]) <= set(c.delivered_ids("alice")),
                    timeout=RECOVERY_BOUND,
                )
                await client.drain(0.3)
                check_no_duplicates(client, alice, name)
                assert not client.errors
        assert bob.delivered_ids("alice") == expected["bob"]  # order, and nothing more
        check_no_duplicates(bob, alice, "bob")
        assert node.sup.is_alive()


@pytest.mark.postgres
async def test_outage_mid_stream_loses_nothing_accepted(pg_url):
    """alice streams to bob (online) and to carol (offline) without pause; the database is
    cut mid-stream and restored mid-stream. With a mailbox bound of 20, carol's mail spills
    to the store, so during the outage her new mail cannot even be held in memory."""
    n = 300
    async with node_behind_proxy(pg_url, mailbox_bound=20) as (node, proxy):
        assert node.sup is not None and node.port
        await register_users(node.port, "alice", "bob", "carol")
        async with (
            TimedClient.connect(node.port) as alice,
            TimedClient.connect(node.port) as bob,
            trio.open_nursery() as readers,
        ):
            await alice.login("alice")
            await bob.login("bob")
            readers.start_soon(alice.pump)
            readers.start_soon(bob.pump)
            to_bob: list[str] = []
            to_carol: list[str] = []
            marks: dict[str, float] = {}

            async def stream() -> None:
                # At least n each, and on until 50 more went after the restore.
                i = 0
                while i < n or "restored" not in marks or len(to_carol) < marks["after"]:
                    to_bob.append(await alice.send_message("bob", f"b{i}"))
                    to_carol.append(await alice.send_message("carol", f"c{i}"))
                    await trio.sleep(0.01)
                    i += 1

            async def outage() -> None:
                await wait_for(lambda: len(to_carol) >= n // 3, 30, "a third of the stream")
                await proxy.cut()
                marks["cut_done"] = trio.current_time()
                await wait_for(lambda: trio.current_time() - marks["cut_done"] >= OUTAGE_SECONDS,
                               OUTAGE_SECONDS + 1, "the outage's minimum length")
                assert node.sup.is_alive(), "the node died during the outage"
                marks["sent_before_restore"] = len(to_carol)
                await proxy.restore()
                marks["after"] = len(to_carol) + 50
                marks["restored"] = trio.current_time()

            with trio.fail_after(120):
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(stream)
                    traffic.start_soon(outage)

            # Online delivery went on throughout: everything to bob accepted, no error.
            await wait_for(lambda: all(i in alice.accepted_at for i in to_bob), RECOVERY_BOUND,
                           "every message to bob accepted")
            bob_errors = [i for i in to_bob if i in alice.unavailable_at]
            assert bob_errors == [], f"online messages refused during the outage: {bob_errors}"
            # Carol's, sent wholly inside the outage: never accepted before the restore.
            inside = [
                i for i in to_carol[: marks["sent_before_restore"]]
                if alice.sent_at[i][0] >= marks["cut_done"]
            ]
            assert inside, "no message was sent during the outage"
            await wait_for(
                lambda: all(i in alice.accepted_at or i in alice.unavailable_at
                            for i in to_carol),
                RECOVERY_BOUND, "every message to carol accepted or refused",
            )
            check_offline_outcomes(alice, inside, marks["cut_done"], marks["restored"])
            refused = [i for i in to_carol if i not in alice.accepted_at]
            await resend_until_accepted(alice, dict.fromkeys(refused, "carol"))
            assert node.sup.is_alive()
            readers.cancel_scope.cancel()

        accepted_for_carol = [i for i in to_carol if i in alice.accepted_at]
        assert len(accepted_for_carol) == len(to_carol)
        async with TimedClient.connect(node.port) as carol:
            await carol.login("carol")
            await carol.until(
                lambda: set(accepted_for_carol) <= set(carol.delivered_ids("alice")),
                timeout=RECOVERY_BOUND,
            )
            await carol.drain(0.3)
            check_no_duplicates(carol, alice, "carol")
            # Order holds for what was never refused (a resent message goes at the back).
            never_refused = [i for i in to_carol if i not in alice.unavailable_at]
            got = [i for i in carol.delivered_ids("alice") if i in set(never_refused)]
            assert got == never_refused
        assert bob.delivered_ids("alice") == to_bob
        check_no_duplicates(bob, alice, "bob")
        assert node.sup.is_alive()


@pytest.mark.postgres
async def test_outage_a_commit_whose_answer_is_lost_is_delivered_once(pg_url):
    """The database commits a write, then the connection dies before the node hears so: the
    outcome is unknown to the node (``StoreUnavailable``). Whatever the sender is then told,
    its resend of the same id must not become a second message. Deterministic: the proxy
    forwards the COMMIT, drops the server's answer and cuts. carol is offline with a mailbox
    bound of 1, so her second message is written to the store alone (a spill)."""
    async with node_behind_proxy(pg_url, mailbox_bound=1) as (node, proxy):
        assert node.sup is not None and node.port
        await register_users(node.port, "alice", "carol")
        async with TimedClient.connect(node.port) as alice, trio.open_nursery() as readers:
            await alice.login("alice")
            readers.start_soon(alice.pump)
            first = await alice.send_message("carol", "first")
            await wait_for(lambda: first in alice.accepted_at, 10, "the first message accepted")

            proxy.lose_commit_of(b"second, its commit answer lost")
            second = await alice.send_message("carol", "second, its commit answer lost")
            with trio.fail_after(10):
                await proxy.commit_lost.wait()
            with trio.move_on_after(OUTAGE_SECONDS):
                await wait_for(lambda: second in alice.unavailable_at, OUTAGE_SECONDS + 1, "")
            assert second not in alice.accepted_at, "accepted while the database was down"
            assert node.sup.is_alive()
            await proxy.restore()
            if second not in alice.accepted_at:
                await resend_until_accepted(alice, {second: "carol"})
            readers.cancel_scope.cancel()

        async with TimedClient.connect(node.port) as carol:
            await carol.login("carol")
            await carol.until(lambda: {first, second} <= set(carol.delivered_ids("alice")),
                              timeout=RECOVERY_BOUND)
            await carol.drain(0.5)
            check_no_duplicates(carol, alice, "carol")
            assert carol.delivered_ids("alice") == [first, second]
        assert node.sup.is_alive()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


def test_node_started_while_the_database_is_down_says_so_and_exits(tmp_path: Path) -> None:
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "actorchat",
         "--database-url", f"postgresql://postgres@127.0.0.1:{port}/test",
         "--db-wait", "1s", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    final = [line for line in lines if line.startswith("actorchat: cannot run the node: ")]
    assert len(final) == 1 and lines[-1] == final[0], proc.stderr
    assert str(port) in final[0], f"the message should name what was unreachable: {final[0]}"
    assert "listening" not in proc.stdout, proc.stdout
    assert elapsed < 30, f"took {elapsed:.1f} s to give up with --db-wait 1s"
