"""Chat users for the cluster's process tests: one thread each, driving the ``websockets``
sync client of ``tests/actorchat/node/client.py`` against node processes.

An ``Agent`` logs in to a node, sends its plan (``(to, id)`` pairs, in order) in chunks and,
as a real client must, sends again every id refused with ``unavailable`` or left without an
answer; when its connection breaks (its node was killed, or the session was taken over) it
logs in again on the next node of its list. Everything it receives accumulates across
connections, so the contract is checked over the whole run.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import defaultdict
from typing import Any

from client import ConnectionLost, SyncClient
from websockets.exceptions import ConnectionClosed, InvalidHandshake

CHUNK = 25


class Agent(threading.Thread):
    def __init__(self, user: str, ports: list[int], plan: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True, name=f"agent-{user}")
        self.user = user
        self.ports = list(ports)
        self.plan = plan
        self.deliveries: list[dict[str, Any]] = []
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.receipts: dict[str, list[tuple[str, str]]] = {"delivered": [], "read": []}
        self.resent: set[str] = set()
        self.logins: list[int] = []  # ports logged in to, in order
        self.closes: list[Any] = []
        self.stop = threading.Event()
        self.sent_all = threading.Event()
        self.dead_ports: set[int] = set()
        self.lock = threading.Lock()

    def accepted_set(self) -> set[str]:
        with self.lock:
            return set(self.accepted)

    def run(self) -> None:
        deadline = time.monotonic() + 150
        turn = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            live = [p for p in self.ports if p not in self.dead_ports] or self.ports
            port = live[turn % len(live)]
            try:
                self._session(port)
            except (ConnectionLost, ConnectionClosed, OSError, TimeoutError, InvalidHandshake,
                    AssertionError) as e:
                self.closes.append(repr(e)[:200])
                turn += 1
                time.sleep(0.2)

    def _session(self, port: int) -> None:
        with SyncClient.connect(port) as c:
            # One record across connections: the client appends to these lists.
            c.deliveries, c.accepted, c.refused, c.errors, c.receipts = (
                self.deliveries, self.accepted, self.refused, self.errors, self.receipts)
            c.login(self.user)
            self.logins.append(port)
            while not self.stop.is_set():
                accepted = self.accepted_set()
                todo = [(to, id) for to, id in self.plan if id not in accepted]
                if not todo:
                    self.sent_all.set()
                    c.drain(0.1)
                    continue
                chunk = todo[:CHUNK]
                answered_from = len(self.refused)
                for to, id in chunk:
                    if id in self.sent_ids:
                        self.resent.add(id)
                    self.sent_ids.add(id)
                    c.send_message(to, f"{self.user}>{to}:{id}", id=id)
                want = {id for _, id in chunk}

                def answered(want: set[str] = want, start: int = answered_from) -> bool:
                    return want <= set(self.accepted) | set(self.refused[start:])

                try:
                    c.until(answered, timeout=5.0)
                except TimeoutError:
                    pass  # no answer: sent again next round (a retry, deduplicated)
                if want - set(self.accepted):
                    c.drain(0.05)  # refused: the owner is moving or down; not too fast

    sent_ids: set[str]

    def start(self) -> None:
        self.sent_ids = set()
        super().start()

    # -- views ------------------------------------------------------------------------------
    def delivered(self) -> dict[str, list[str]]:
        """Per sender, the client ids delivered (first delivery of each), in arrival order."""
        seen: set[tuple[str, str]] = set()
        out: dict[str, list[str]] = defaultdict(list)
        for item in list(self.deliveries):
            key = (item["from"], item["id"])
            if key not in seen:
                seen.add(key)
                out[item["from"]].append(item["id"])
        return out

    def mids(self) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = defaultdict(set)
        for item in list(self.deliveries):
            out[(item["from"], item["id"])].add(item["mid"])
        return out


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/cluster/status", timeout=5) as r:
        return json.loads(r.read())


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def check_contract(agents: list[Agent], accepted_before: dict[str, set[str]] | None = None) -> None:
    """Every planned message was accepted and delivered exactly once after dedupe by
    (from, id); each pair's messages that were never sent twice arrived in plan order; a
    message accepted before ``accepted_before`` was taken has one mid only; no error but
    ``unavailable``."""
    by_user = {a.user: a for a in agents}
    for agent in agents:
        assert set(agent.accepted) >= {id for _, id in agent.plan}, agent.user
        assert {e["code"] for e in agent.errors} <= {"unavailable"}, agent.errors[:3]
    for recipient in agents:
        delivered = recipient.delivered()
        mids = recipient.mids()
        for sender in agents:
            planned = [id for to, id in sender.plan if to == recipient.user]
            got = delivered.get(sender.user, [])
            assert sorted(got) == sorted(planned), (sender.user, recipient.user)
            once = [id for id in got if id not in by_user[sender.user].resent]
            assert once == [id for id in planned if id in set(once)], (
                f"order {sender.user}->{recipient.user}")
            before = (accepted_before or {}).get(sender.user, set())
            for id in planned:
                if id in before:
                    assert len(mids[(sender.user, id)]) == 1, (sender.user, id)
