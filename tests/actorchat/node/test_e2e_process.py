"""The node as a process (``python -m actorchat --port 0``), driven by the ``websockets`` sync
client from plain threads: stopped with SIGTERM or SIGKILL while traffic flows, and fed a
recipient that never reads its socket (memory must stay bounded; the overflow is stored).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from client import ConnectionLost, StalledClient, SyncClient, new_id
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


class Reader(threading.Thread):
    """Reads one client's frames (acking deliveries if it auto-acks) until the node is gone."""

    def __init__(self, client: SyncClient, until: Callable[[], bool] = lambda: False) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.done = until

    def run(self) -> None:
        try:
            self.client.until(self.done, timeout=120)
        except (ConnectionLost, TimeoutError, ConnectionClosed, OSError):
            pass


class Sender(threading.Thread):
    """Sends ``ids`` in order (another thread reads the answers). With ``retry``, it then
    sends again, as a client must, every id the node refused (``unavailable``) until all are
    accepted or ``timeout`` runs out. With ``window``, at most that many sent ids wait for
    their answer (``accepted`` or ``unavailable``) at a time, as a client with a send window."""

    def __init__(
        self,
        client: SyncClient,
        to: str,
        ids: list[str],
        body: str = "m",
        *,
        retry: bool = False,
        window: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.client, self.to, self.ids, self.body, self.retry = client, to, ids, body, retry
        self.window = window
        self.resent: set[str] = set()

    def _answered(self) -> int:
        return len(self.client.accepted) + len(self.client.refused)

    def _wait_for_room(self, sent: int) -> None:
        client, window = self.client, self.window
        while window is not None and sent - self._answered() >= window:
            if client.closed is not None:
                raise ConnectionClosed(None, None)
            time.sleep(0.001)

    def run(self) -> None:
        index = {id: i for i, id in enumerate(self.ids)}
        pending = self.ids
        deadline = time.monotonic() + 120
        try:
            while pending and time.monotonic() < deadline:
                refused_before = len(self.client.refused)
                before = self._answered()
                for sent, id in enumerate(pending):
                    self._wait_for_room(before + sent)
                    self.client.send_message(self.to, f"{self.body}{index[id]}", id=id)
                if not self.retry:
                    return
                expected = set(pending)
                wait_for(
                    lambda expected=expected, start=refused_before: expected
                    <= set(self.client.accepted) | set(self.client.refused[start:]),
                    max(1.0, deadline - time.monotonic()),
                    "answers",
                )
                accepted = set(self.client.accepted)
                pending = [id for id in pending if id not in accepted]
                self.resent.update(pending)
        except (ConnectionClosed, OSError):
            pass


def register(port: int, *users: str) -> None:
    with SyncClient.connect(port) as c:
        for user in users:
            c.register(user)


@pytest.mark.parametrize(
    ("how", "bob_online"),
    [("SIGTERM", True), ("SIGKILL", True), ("SIGKILL", False)],
    ids=["sigterm", "sigkill", "sigkill-offline-recipient"],
)
def test_node_stopped_while_traffic_flows_keeps_every_accepted_message(
    node_process, how, bob_online
):
    n = 4000
    ids = [new_id() for _ in range(n)]
    node = node_process(ack_timeout=0.5)
    register(node.port, "alice", "bob")
    with SyncClient.connect(node.port) as alice, SyncClient.connect(node.port) as bob:
        alice.login("alice")
        if bob_online:
            bob.login("bob")
        # A window (a client's), so the sender cannot race ahead of what the node has taken.
        # This test once saw all 4,000 accepted: the node kept reading frames for ~0.7 s after
        # SIGTERM while its first children stopped; now it drains (``Node.draining``).
        threads = [Reader(alice), Reader(bob), Sender(alice, "bob", ids, window=200)]
        for t in threads:
            t.start()
        wait_for(lambda: len(alice.accepted) >= 800, 30, "800 messages accepted")
        if how == "SIGTERM":
            started = time.monotonic()
            assert node.terminate(timeout=60) == 0
            stop_seconds = time.monotonic() - started
            assert "stopping on SIGTERM" in node.output
            print(f"SIGTERM with traffic: clean exit in {stop_seconds:.2f} s")
        else:
            node.proc.kill()
            node.proc.wait(10)
        for t in threads:
            t.join(30)
            assert not t.is_alive()
    accepted = set(alice.accepted)
    first_run = list(bob.deliveries)
    assert 800 <= len(accepted) < n, "the stop must land while traffic flows"

    node = node_process(ack_timeout=0.5)
    with SyncClient.connect(node.port) as alice, SyncClient.connect(node.port) as bob:
        bob.login("bob")
        alice.login("alice")
        # Like a real client, alice sends again every id she has no "accepted" for.
        # A message refused with `unavailable` (the mailbox sheds load while the burst waits
        # for storage) was not accepted: she sends it again, as a real client does.
        index = {id: i for i, id in enumerate(ids)}
        pending = retry = [id for id in ids if id not in accepted]
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            refused_before = len(alice.refused)
            for id in pending:
                alice.send_message("bob", f"m{index[id]}", id=id)
            expected = set(pending)
            alice.until(
                lambda expected=expected, start=refused_before: expected
                <= set(alice.accepted) | set(alice.refused[start:]),
                timeout=max(1.0, deadline - time.monotonic()),
            )
            bob.drain(0.05)  # bob reads (and acks) as a live client does
            pending = [id for id in pending if id not in set(alice.accepted)]
        assert not pending, f"{len(pending)} messages never accepted"
        alice.errors = [e for e in alice.errors if e["code"] != "unavailable"]
        bob.deliveries[:0] = first_run
        bob.until(lambda: len(bob.delivered_ids()) >= n, timeout=60)
        bob.drain(0.3)
        alice.drain(0.1)  # read what is in flight, so the close handshake is prompt
    assert not alice.errors
    delivered = bob.delivered_ids()
    assert sorted(delivered) == sorted(ids)  # nothing lost, each once after dedupe by (from, id)
    # What was accepted before the stop was delivered exactly once: a redelivery has the same
    # mid, and its order is the order it was sent in.
    mids: dict[str, set[str]] = defaultdict(set)
    for item in bob.deliveries:
        mids[item["id"]].add(item["mid"])
    assert all(len(mids[id]) == 1 for id in accepted)
    position = {id: i for i, id in enumerate(ids)}
    order = [position[id] for id in delivered if id in accepted]
    assert order == sorted(order)
    print(f"{how}: {len(accepted)} accepted before the stop, {len(retry)} retried after it")


@pytest.mark.parametrize("mode", ["never-reads", "never-acks"])
def test_slow_recipient_keeps_memory_bounded_and_overflow_goes_to_the_store(
    node_process, tmp_path: Path, mode
):
    """alice sends bob 170 MiB. ``never-reads``: bob logs in and never reads his socket again
    (the node closes the stalled socket); ``never-acks``: he reads but never acknowledges.
    Either way the overflow is stored (everything is accepted) and the node's RSS stays flat."""
    m, body = 12_000, "x" * 15_000
    node = node_process(ack_timeout=0.5, send_stall_timeout=1.0)
    register(node.port, "alice", "bob")
    process = psutil.Process(node.pid)
    ids = [new_id() for _ in range(m)]
    samples: list[int] = []
    with contextlib.ExitStack() as stack:
        if mode == "never-reads":
            stalled = StalledClient(node.port, "bob")
            stack.callback(stalled.close)
        else:
            bob = stack.enter_context(SyncClient.connect(node.port, auto_ack=False))
            bob.login("bob")
            Reader(bob).start()
        alice = stack.enter_context(SyncClient.connect(node.port))
        alice.login("alice")
        baseline = process.memory_info().rss
        reader = Reader(alice, until=lambda: len(set(alice.accepted)) >= m)
        sender = Sender(alice, "bob", ids, body=body, retry=True)
        reader.start()
        sender.start()
        deadline = time.monotonic() + 120
        while reader.is_alive() and time.monotonic() < deadline:
            samples.append(process.memory_info().rss)
            time.sleep(0.05)
        reader.join(1)
        sender.join(1)
        assert set(alice.accepted) >= set(ids), f"{len(alice.accepted)} of {m} accepted"
        assert set(alice.error_codes()) <= {"unavailable"}  # refused: store backlog
        alice.drain(0.1)
        if mode == "never-reads":
            # the node gave up on the stalled socket: bob's end reads to EOF
            stalled.sock.settimeout(10)
            while stalled.sock.recv(1 << 20):
                pass
        else:
            assert bob.closed is None  # a reader that does not ack is not cut off
            assert [d["id"] for d in bob.deliveries] == ids[:256]  # one delivery window
    peak = max(samples)
    growth = peak - baseline
    third = len(samples) // 3
    late_growth = max(samples[2 * third :]) - max(samples[:third])
    payload = m * len(body)
    print(
        f"slow recipient ({mode}): {payload / 2**20:.0f} MiB sent in {len(samples) * 0.05:.1f} s,"
        f" node RSS baseline {baseline / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB "
        f"(+{growth / 2**20:.1f} MiB; +{late_growth / 2**20:.1f} MiB from the first third "
        "to the last)"
    )
    # Bounded by the configuration, not by the payload: at most mailbox_bound (1,000) bodies
    # in memory plus the store backlog (2,000 bodies waiting for their write, beyond which new
    # mail is refused), 45 MiB of 15 kB bodies, plus the interpreter's and the store's own
    # overhead; the stream is 172 MiB, so memory that grew with it would fail this.
    assert growth < 80 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
    # The overflow is in the store, and comes back in order once bob reads and acks.
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db:
        (stored,) = db.execute("SELECT count(*) FROM mail WHERE recipient = 'bob'").fetchone()
    assert stored == m
    with SyncClient.connect(node.port) as bob:
        bob.login("bob")
        bob.until(lambda: len(bob.delivered_ids()) >= m, timeout=60)
        bob.drain(0.2)
    assert len(bob.deliveries) == m and sorted(bob.delivered_ids()) == sorted(ids)
    in_order = [id for id in ids if id not in sender.resent]  # the retried ones come later
    assert [id for id in bob.delivered_ids() if id not in sender.resent] == in_order
    print(f"slow recipient ({mode}): {len(sender.resent)} refused and sent again")
    assert node.terminate(timeout=60) == 0
