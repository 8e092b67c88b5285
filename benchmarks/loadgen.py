"""The load generator: one process, its own client (`wsclient.py`), one scenario per run.

It speaks the core of the actorchat protocol (resume/login -> welcome, send -> deliver, ack,
accepted, receipt) and measures what the server *delivers*: a message counts when its
``deliver`` item reaches the recipient's socket, and its latency is the receive time minus the
client timestamp that the sender put at the start of the body (``time.monotonic_ns()``, the same
clock in every process of the machine). Every loop is bounded in messages and in seconds.

Scenarios (``python benchmarks/loadgen.py SCENARIO --help``):

- ``relay``: N users log in, user i sends to user i+1 (a ring). Closed loop: each keeps
  ``--window`` messages in flight (sent, not yet delivered); or open loop at ``--rate`` msgs/s.
  Recipients ack every ``deliver`` frame at once (peers ignore acks).
- ``drain``: a user with K stored messages logs in; how fast are they delivered (and how fast
  were they stored: ``accepted`` for a recipient who is offline).
- ``storm``: reconnects with a token (resume -> welcome) per second.
- ``idle``: holds logged-in idle users; grows on command (stdin ``grow N``, ``quit``).

Login: for actorchat the generator makes the session token itself (the HMAC format documented in
actorchat/auth.py, with the node's ``--secret``), as a client holding a token from an earlier
login would; the drain scenario also registers and logs in with a password once. The peers take
the user name as the token.

Output: JSON lines on stdout; ``{"event": "window_start"}`` and ``{"event": "window_end"}`` mark
the measured window (the orchestrator samples the server's CPU there), and the last line is
``{"result": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import math
import os
import resource
import sys
import time
from typing import Any

import msgspec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from wsclient import Corker, WsClient, connect

try:
    import uvloop
except ImportError:  # pragma: no cover - the bench extra installs it
    uvloop = None

now_ns = time.monotonic_ns


class Item(msgspec.Struct, rename={"from_": "from"}):
    mid: Any = None
    id: str = ""
    from_: str = ""
    body: str = ""


class Frame(msgspec.Struct):
    """The server frames, only the fields the generator reads."""

    type: str = ""
    user: str | None = None
    token: str | None = None
    messages: list[Item] | None = None
    ids: list[str] | None = None
    status: str | None = None
    code: str | None = None
    message: str | None = None
    ref: str | None = None


decode_frame = msgspec.json.Decoder(Frame).decode


def mint_token(secret: bytes, user: str, ttl: float = 86400.0) -> str:
    """An actorchat session token: ``b64(payload).b64(hmac)``, payload ``v1:<expiry>:<user>``."""
    key = hmac.new(secret, b"actorchat session token", hashlib.sha256).digest()
    payload = f"v1:{math.ceil(time.time() + ttl)}:{user}".encode("ascii")
    mac = hmac.new(key, payload, hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    return f"{b64(payload)}.{b64(mac)}"


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentiles(samples_ns: list[int]) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max in ms and a compact CDF (quantile -> ms) for plotting."""
    if not samples_ns:
        return {"count": 0}
    s = sorted(samples_ns)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, int(p * n))] / 1e6

    qs = [i / 100 for i in range(100)] + [0.991, 0.993, 0.995, 0.997, 0.999, 0.9995, 0.9999]
    return {
        "count": n,
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": s[-1] / 1e6,
        "mean_ms": sum(s) / n / 1e6,
        "cdf": [[p, q(p)] for p in qs] + [[1.0, s[-1] / 1e6]],
    }


class Session:
    """One logged-in user: a client socket and the handlers the scenario sets."""

    __slots__ = ("client", "gen", "index", "name", "waiter")

    def __init__(self, gen: Generator, index: int, name: str) -> None:
        self.gen = gen
        self.index = index
        self.name = name
        self.client: WsClient | None = None
        self.waiter: asyncio.Future[Frame] | None = None

    def on_message(self, payload: bytes) -> None:
        gen = self.gen
        try:
            frame = decode_frame(payload)
        except msgspec.DecodeError:
            gen.counts["undecodable"] += 1
            return
        kind = frame.type
        if kind == "deliver":
            gen.on_deliver(self, frame.messages or ())
        elif kind == "accepted":
            gen.on_accepted(self, frame.ids or ())
        elif kind == "receipt":
            gen.counts["receipt_" + (frame.status or "?")] += len(frame.ids or ())
        elif kind == "error":
            gen.counts["error_" + (frame.code or "?")] += 1
            if gen.first_error is None:
                gen.first_error = f"{frame.code}: {frame.message}"
            gen.on_error(self, frame)
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(frame)
        else:
            gen.counts[kind] += 1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(frame)

    async def request(self, text: str, timeout: float) -> Frame:
        """Send one frame and wait for the next non-delivery answer (welcome, registered...)."""
        assert self.client is not None
        self.waiter = self.gen.loop.create_future()
        self.client.send_text(text)
        try:
            async with asyncio.timeout(timeout):
                return await self.waiter
        finally:
            self.waiter = None


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.corker = Corker(self.loop)
        self.host = args.host
        self.port = args.port
        # Several nodes of a cluster (--ports): session i uses port (i // 2) mod len, so in the
        # relay ring (i sends to i+1) every other message crosses nodes.
        self.ports = [int(p) for p in args.ports.split(",")] if args.ports else [args.port]
        self.sources = args.sources.split(",") if args.sources else [None]
        self.next_source = 0
        self.secret = args.secret.encode() if args.secret else None
        self.counts: collections.Counter[str] = collections.Counter()
        self.first_error: str | None = None
        self.sessions: list[Session] = []
        self.by_name: dict[str, int] = {}
        self.broken: set[Session] = set()
        self.server = None
        if getattr(args, "server_pid", None):
            try:
                import psutil

                self.server = psutil.Process(args.server_pid)
            except Exception:  # psutil missing or the process gone: no settling then
                self.server = None

    async def settle(self, max_wait: float = 30.0) -> float:
        """Wait until the server's CPU use is low (under 10% of a core) or stops falling (two
        0.5 s windows within 3% of a core), at most `max_wait` s: what a burst of logins left
        behind should not count against what follows."""
        start = time.monotonic()
        if self.server is None:
            await asyncio.sleep(0.2)
            return 0.2

        def cpu() -> float:
            t = self.server.cpu_times()  # type: ignore[union-attr]
            return t.user + t.system

        last = None
        while time.monotonic() - start < max_wait:
            c0, w0 = cpu(), time.monotonic()
            await asyncio.sleep(0.5)
            use = (cpu() - c0) / (time.monotonic() - w0)
            if use < 0.1 or (last is not None and abs(use - last) < 0.03):
                break
            last = use
        return time.monotonic() - start

    async def heal(self, concurrency: int) -> int:
        """Log in again the sessions the server told `unavailable` (with no ref) after their
        welcome: their session has no mailbox behind it. Returns how many were redone."""
        redone = 0
        for _ in range(3):
            await self.settle()
            broken, self.broken = list(self.broken), set()
            if not broken:
                break
            for s in broken:
                if s.client is not None:
                    s.client.close()
            redone += len(broken)
            await self.resume_all(broken, concurrency)
        return redone

    def token(self, name: str) -> str:
        if self.args.system == "actorchat":
            assert self.secret is not None, "--secret is needed to make actorchat tokens"
            return mint_token(self.secret, name)
        return name

    def port_of(self, index: int) -> int:
        return self.ports[(index // 2) % len(self.ports)]

    def source(self) -> str | None:
        src = self.sources[self.next_source % len(self.sources)]
        self.next_source += 1
        return src

    async def open(self, session: Session, timeout: float = 15.0) -> None:
        session.client = await connect(
            self.corker,
            self.host,
            self.port_of(session.index),
            source=self.source(),
            timeout=timeout,
            on_message=session.on_message,
        )

    async def resume(self, session: Session, timeout: float = 15.0) -> None:
        await self.open(session, timeout)
        token = json.dumps(self.token(session.name))
        answer = await session.request(f'{{"type":"resume","token":{token}}}', timeout)
        if answer.type != "welcome":
            raise RuntimeError(f"resume of {session.name}: {answer.type} {answer.code}")

    async def resume_all(
        self, sessions: list[Session], concurrency: int, deadline: float | None = None
    ) -> int:
        """Log every session in (bounded concurrency); returns how many failed. Past
        `deadline` (time.monotonic()) the sessions not begun are left out, not failed."""
        sem = asyncio.Semaphore(concurrency)
        failed = 0

        async def one(s: Session) -> None:
            nonlocal failed
            async with sem:
                if deadline is not None and time.monotonic() > deadline:
                    return
                for attempt in range(2):  # one retry: a login may time out on a busy server
                    try:
                        await self.resume(s)
                        return
                    except Exception as exc:  # counted, reported
                        if s.client is not None:
                            s.client.abort()
                        self.counts["login_retried" if attempt == 0 else "login_failed"] += 1
                        if self.first_error is None:
                            self.first_error = f"login: {exc!r}"
                failed += 1

        await asyncio.gather(*(one(s) for s in sessions))
        return failed

    def make_sessions(self, prefix: str, count: int) -> list[Session]:
        sessions = [Session(self, i, f"{prefix}{i}") for i in range(count)]
        self.sessions = sessions
        self.by_name = {s.name: s.index for s in sessions}
        return sessions

    def close_all(self) -> None:
        for s in self.sessions:
            if s.client is not None:
                s.client.close()

    # scenario hooks
    def on_deliver(self, session: Session, items: Any) -> None:
        self.counts["delivered"] += len(items)

    def on_accepted(self, session: Session, ids: Any) -> None:
        self.counts["accepted"] += len(ids)

    def on_error(self, session: Session, frame: Frame) -> None:
        if frame.code == "unavailable" and frame.ref is None:
            self.counts["unavailable_after_welcome"] += 1
            self.broken.add(session)


# -- relay ---------------------------------------------------------------------------------------


class Relay(Generator):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        n = args.users
        self.n = n
        self.window = args.window
        self.inflight = [0] * n
        self.seq = [0] * n
        self.last_seen = [0] * n
        self.sent = 0
        self.delivered = 0
        self.delivered_in_window = 0
        self.accepted = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.latencies: list[int] = []
        self.cross_latencies: list[int] = []  # sender and recipient on different nodes
        self.sending = False
        self.closed_loop = args.rate is None
        self.t0 = self.t1 = 0
        self.pad = "x" * max(0, args.body_bytes - 21)
        self.max_messages = args.max_messages
        self.skipped = 0
        self.rejected = 0
        self.start_ns = 0
        self.timeline: list[int] = []  # deliveries per 0.25 s since sending began
        # By id (the client id "i.seq" is unique per sender): what was accepted, delivered,
        # rejected, so that the end can tell an accepted message never delivered (a loss)
        # from one the server never accepted.
        self.accepted_ids: set[str] = set()
        self.delivered_ids: set[str] = set()
        self.rejected_ids: set[str] = set()
        self.accepted_twice = 0
        self.accepted_after_delivery = 0

    def send_from(self, i: int) -> None:
        s = self.sessions[i]
        self.seq[i] += 1
        to = self.sessions[(i + 1) % self.n].name
        # body: 20-digit monotonic ns, '|', padding; the id carries the sender's sequence.
        s.client.send_text(  # type: ignore[union-attr]
            f'{{"type":"send","id":"{i}.{self.seq[i]}","to":"{to}",'
            f'"body":"{now_ns():020d}|{self.pad}"}}'
        )
        self.inflight[i] += 1
        self.sent += 1

    def pump(self, i: int) -> None:
        window = self.window
        inflight = self.inflight
        while self.sending and inflight[i] < window and self.sent < self.max_messages:
            self.send_from(i)

    def on_deliver(self, session: Session, items: Any) -> None:
        now = now_ns()
        in_window = self.t0 <= now <= self.t1
        t0, t1 = self.t0, self.t1
        mids = []
        touched = []
        bucket = (now - self.start_ns) // 250_000_000
        timeline = self.timeline
        if bucket < 2000:
            while len(timeline) <= bucket:
                timeline.append(0)
            timeline[bucket] += len(items)
        for it in items:
            mids.append(it.mid)
            sender_text, _, seq_text = it.id.partition(".")
            sender = int(sender_text)
            seq = int(seq_text)
            if it.id in self.delivered_ids or self.sessions[sender].name != it.from_:
                self.duplicates += 1
                continue
            self.delivered_ids.add(it.id)
            last = self.last_seen[sender]
            if seq != last + 1:
                self.out_of_order += 1
            if seq > last:
                self.last_seen[sender] = seq
            self.inflight[sender] -= 1
            self.delivered += 1
            if in_window:
                self.delivered_in_window += 1
            ts = int(it.body[:20])
            if t0 <= ts <= t1:
                self.latencies.append(now - ts)
                if len(self.ports) > 1 and self.port_of(sender) != self.port_of(session.index):
                    self.cross_latencies.append(now - ts)
            touched.append(sender)
        session.client.send_text(  # type: ignore[union-attr]
            '{"type":"ack","mids":' + json.dumps(mids) + "}"
        )
        if self.closed_loop and self.sending:
            for sender in touched:
                self.pump(sender)

    def on_accepted(self, session: Session, ids: Any) -> None:
        self.accepted += len(ids)
        for mid in ids:
            if mid in self.accepted_ids:
                self.accepted_twice += 1
            else:
                self.accepted_ids.add(mid)
                if mid in self.delivered_ids:
                    self.accepted_after_delivery += 1

    def on_error(self, session: Session, frame: Frame) -> None:
        super().on_error(session, frame)
        # A refused send (no_such_user, rate_limited, unavailable...) is no longer in flight.
        sender_text, dot, _ = (frame.ref or "").partition(".")
        if dot and sender_text.isdigit():
            sender = int(sender_text)
            self.rejected_ids.add(frame.ref or "")
            self.inflight[sender] -= 1
            self.rejected += 1
            if self.closed_loop and self.sending:
                self.pump(sender)

    async def ticker(self, rate: float) -> None:
        """Open loop: `rate` msgs/s in total, round robin over the senders, 1 ms ticks."""
        start = time.monotonic()
        scheduled = 0
        rr = 0
        n = self.n
        cap = self.window
        while self.sending:
            await asyncio.sleep(0.001)
            due = int(rate * (time.monotonic() - start)) - scheduled
            for _ in range(due):
                if self.sent >= self.max_messages:
                    break
                if self.inflight[rr] < cap:
                    self.send_from(rr)
                else:
                    self.skipped += 1
                rr = rr + 1 if rr + 1 < n else 0
            scheduled += due

    async def run(self) -> dict[str, Any]:
        a = self.args
        sessions = self.make_sessions(a.prefix, a.users)
        t = time.monotonic()
        failed = 0
        wave = a.login_wave or a.users
        relogins = 0
        for first in range(0, a.users, wave):
            failed += await self.resume_all(sessions[first : first + wave], a.concurrency)
            # A welcome may go out before the server has set the user up: wait until it is
            # quiet, and log in again whoever was told `unavailable` after the welcome.
            relogins += await self.heal(a.concurrency)
        login_s = time.monotonic() - t
        if failed:
            return {"error": f"{failed} of {a.users} logins failed: {self.first_error}"}
        start = now_ns()
        self.start_ns = start
        self.t0 = self.t1 = 1 << 62  # no window until deliveries flow
        self.sending = True
        ticker = None
        if self.closed_loop:
            for i in range(self.n):
                self.pump(i)
        else:
            ticker = asyncio.ensure_future(self.ticker(a.rate))
        # The window opens --warmup seconds after the first delivery (some servers take
        # seconds to deliver the first message of a burst: that is reported, not measured).
        while self.delivered == 0 and (now_ns() - start) < a.first_delivery_timeout * 1e9:
            await asyncio.sleep(0.005)
        first_delivery_s = (now_ns() - start) / 1e9 if self.delivered else None
        await asyncio.sleep(a.warmup)
        self.t0 = now_ns()
        self.t1 = self.t0 + int(a.duration * 1e9)
        emit({"event": "window_start"})
        cpu0, wall0, sent0 = cpu_seconds(), time.monotonic(), self.sent
        await asyncio.sleep(max(0.0, (self.t1 - now_ns()) / 1e9))
        cpu1, wall1, sent1 = cpu_seconds(), time.monotonic(), self.sent
        emit({"event": "window_end"})
        self.sending = False
        if ticker is not None:
            await ticker
        # Let what is in flight arrive, and for actorchat the `accepted` frames: as long as
        # something arrives every few seconds, and in any case (up to --drain-timeout) until
        # every accepted message is delivered: an accepted message must never be lost.
        deadline = time.monotonic() + a.drain_timeout
        progress, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.delivered + self.rejected >= self.sent and (
                a.system != "actorchat" or self.accepted + self.rejected >= self.sent
            ):
                break
            if self.delivered + self.accepted != progress:
                progress, last_change = self.delivered + self.accepted, time.monotonic()
            elif time.monotonic() - last_change >= 3.0 and self.accepted_ids <= self.delivered_ids:
                break
            await asyncio.sleep(0.01)
        drain_s = time.monotonic() - wall1
        closed_by_server = collections.Counter(
            str(s.client.close_code) for s in self.sessions if s.client is not None
            and s.client.closed
        )
        self.close_all()
        undelivered = [
            f"{i}.{q}" for i in range(self.n) for q in range(1, self.seq[i] + 1)
            if f"{i}.{q}" not in self.delivered_ids and f"{i}.{q}" not in self.rejected_ids
        ]
        accepted_not_delivered = [m for m in undelivered if m in self.accepted_ids]
        unaccepted = [m for m in undelivered if m not in self.accepted_ids]
        window = (self.t1 - self.t0) / 1e9
        lat = percentiles(self.latencies)
        return {
            "scenario": "relay",
            "users": a.users,
            "window": a.window,
            "rate": a.rate,
            "login_seconds": login_s,
            "first_delivery_seconds": first_delivery_s,
            "relogins_after_unavailable": relogins,
            "measure_seconds": window,
            "drain_seconds": drain_s,
            "timeline_per_s": [4 * c for c in self.timeline],
            "delivered_per_s": self.delivered_in_window / window,
            "sent_per_s": (sent1 - sent0) / max(1e-9, wall1 - wall0),
            "sent": self.sent,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "lost": self.sent - self.delivered - self.rejected,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "skipped_open_loop": self.skipped,
            "loadgen_cpu": (cpu1 - cpu0) / max(1e-9, wall1 - wall0),
            "latency": lat,
            "cross_node_latency": percentiles(self.cross_latencies),
            "counts": dict(self.counts),
            "first_error": self.first_error,
            # By id: of the `lost` (neither delivered nor rejected by the end of the drain),
            # how many the sender had seen `accepted` for (must be 0) and how many not.
            "accepted_not_delivered": len(accepted_not_delivered),
            "unaccepted": len(unaccepted),
            "accepted_not_delivered_ids": accepted_not_delivered[:20],
            "unaccepted_ids": unaccepted[:20],
            "delivered_not_accepted": len(self.delivered_ids - self.accepted_ids),
            "accepted_twice": self.accepted_twice,
            "accepted_after_delivery": self.accepted_after_delivery,
            "closed_by_server": dict(closed_by_server),
        }


# -- drain ---------------------------------------------------------------------------------------


class Drain(Generator):
    """K messages to an offline user, then that user logs in and receives them all."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.k = args.count
        self.accepted = 0
        self.delivered = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.last_seq = 0
        self.last_ns = 0
        self.sent = 0
        self.sender: Session | None = None
        self.recipient: Session | None = None
        self.all_accepted = asyncio.Event()
        self.all_delivered = asyncio.Event()

    def pump(self) -> None:
        s = self.sender
        assert s is not None and s.client is not None and self.recipient is not None
        to = self.recipient.name
        while self.sent - self.accepted < self.args.window and self.sent < self.k:
            self.sent += 1
            s.client.send_text(
                f'{{"type":"send","id":"{self.sent}","to":"{to}",'
                f'"body":"{now_ns():020d}|drain message {self.sent}"}}'
            )

    def on_accepted(self, session: Session, ids: Any) -> None:
        if session is self.sender:
            self.accepted += len(ids)
            if self.accepted >= self.k:
                self.all_accepted.set()
            else:
                self.pump()

    def on_deliver(self, session: Session, items: Any) -> None:
        mids = []
        for it in items:
            mids.append(it.mid)
            seq = int(it.id)
            if seq <= self.last_seq:
                self.duplicates += 1
                continue
            if seq != self.last_seq + 1:
                self.out_of_order += 1
            self.last_seq = seq
            self.delivered += 1
        self.last_ns = now_ns()
        session.client.send_text(  # type: ignore[union-attr]
            '{"type":"ack","mids":' + json.dumps(mids) + "}"
        )
        if self.delivered >= self.k:
            self.all_delivered.set()

    async def run(self) -> dict[str, Any]:
        a = self.args
        result: dict[str, Any] = {"scenario": "drain", "count": self.k}
        recipient = self.recipient = Session(self, 0, a.prefix + "r")
        sender = self.sender = Session(self, 1, a.prefix + "s")
        self.sessions = [recipient, sender]
        password = json.dumps("bench-password-1")
        # The recipient exists for real: register, then a password login (timed, once).
        await self.open(recipient)
        answer = await recipient.request(
            f'{{"type":"register","user":"{recipient.name}","password":{password}}}', 30
        )
        if answer.type not in ("registered", "error"):
            return {**result, "error": f"register: {answer.type}"}
        t = time.monotonic()
        answer = await recipient.request(
            f'{{"type":"login","user":"{recipient.name}","password":{password}}}', 30
        )
        result["password_login_ms"] = (time.monotonic() - t) * 1e3
        if answer.type != "welcome":
            return {**result, "error": f"login: {answer.type} {answer.code} {self.first_error}"}
        recipient.client.close()  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        # Store K messages for the offline recipient.
        await self.resume(sender)
        t = time.monotonic()
        cpu0 = cpu_seconds()
        self.pump()
        try:
            async with asyncio.timeout(a.max_wait):
                await self.all_accepted.wait()
        except TimeoutError:
            return {**result, "error": f"only {self.accepted} of {self.k} accepted in time"}
        store_s = time.monotonic() - t
        result["stored_per_s"] = self.k / store_s
        result["store_loadgen_cpu"] = (cpu_seconds() - cpu0) / store_s
        sender.client.close()  # type: ignore[union-attr]
        # Wait until the recipient's mailbox has let go of the mail (the node keeps an idle
        # mailbox for a few seconds), so that the drain reads the store.
        await asyncio.sleep(a.offline_wait)
        emit({"event": "window_start"})
        t_ns = now_ns()
        cpu0 = cpu_seconds()
        await self.resume(recipient)
        try:
            async with asyncio.timeout(a.max_wait):
                await self.all_delivered.wait()
        except TimeoutError:
            result["error"] = f"only {self.delivered} of {self.k} delivered in time"
        emit({"event": "window_end"})
        drain_s = (self.last_ns - t_ns) / 1e9 if self.last_ns else float("nan")
        recipient.client.close()  # type: ignore[union-attr]
        return {
            **result,
            "delivered": self.delivered,
            "drain_seconds": drain_s,
            "drained_per_s": self.delivered / drain_s if drain_s > 0 else 0.0,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "loadgen_cpu": (cpu_seconds() - cpu0) / drain_s if drain_s > 0 else None,
            "counts": dict(self.counts),
            "first_error": self.first_error,
        }


# -- storm ---------------------------------------------------------------------------------------


class Storm(Generator):
    """Reconnect with a token as fast as the server lets: connect, resume, welcome, close."""

    async def run(self) -> dict[str, Any]:
        a = self.args
        sessions = self.make_sessions(a.prefix, a.users)
        failed = await self.resume_all(sessions, a.concurrency)  # first logins, not measured
        if failed:
            return {"error": f"{failed} first logins failed: {self.first_error}"}
        self.close_all()
        await asyncio.sleep(0.3)
        free = collections.deque(sessions)
        start = time.monotonic()
        t0 = start + a.warmup
        t1 = t0 + a.duration
        done_in_window = 0
        cycles = 0
        errors = 0
        latencies: list[int] = []

        async def worker() -> None:
            nonlocal done_in_window, cycles, errors
            while time.monotonic() < t1 and cycles < a.max_cycles and free:
                s = free.popleft()
                cycles += 1
                began = now_ns()
                try:
                    await self.resume(s, timeout=10.0)
                except Exception as exc:
                    errors += 1
                    if self.first_error is None:
                        self.first_error = f"reconnect: {exc!r}"
                    if s.client is not None:
                        s.client.abort()
                    free.append(s)
                    continue
                ended = now_ns()
                s.client.close()  # type: ignore[union-attr]
                free.append(s)
                if t0 <= ended / 1e9 <= t1:
                    done_in_window += 1
                    latencies.append(ended - began)

        window = [0.0, 0.0]  # its start and end (monotonic)

        async def marks() -> None:
            await asyncio.sleep(a.warmup)
            emit({"event": "window_start"})
            nonlocal cpu0
            cpu0 = cpu_seconds()
            window[0] = time.monotonic()
            await asyncio.sleep(a.duration)
            end_window()

        def end_window() -> None:
            nonlocal cpu1
            emit({"event": "window_end"})
            cpu1 = cpu_seconds()
            window[1] = time.monotonic()

        cpu0 = cpu1 = 0.0
        marker = asyncio.ensure_future(marks())
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        if not marker.done():  # --max-cycles ran out first: the window ends with the last one
            marker.cancel()
            if window[0]:
                end_window()
        measured = window[1] - window[0] if window[0] else a.duration
        lat = percentiles(latencies)
        lat.pop("cdf", None)
        return {
            "scenario": "storm",
            "users": a.users,
            "concurrency": a.concurrency,
            "logins_per_s": done_in_window / max(measured, 1e-9),
            "cycles": cycles,
            "errors": errors,
            "loadgen_cpu": (cpu1 - cpu0) / max(measured, 1e-9),
            "latency": lat,
            "counts": dict(self.counts),
            "first_error": self.first_error,
        }


# -- idle ----------------------------------------------------------------------------------------


class Idle(Generator):
    """Logged-in users that do nothing; stdin: ``grow N`` (total), ``quit``."""

    async def run(self) -> dict[str, Any]:
        a = self.args
        sessions: list[Session] = []
        self.sessions = sessions
        reader = asyncio.StreamReader()
        await self.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        deadline = time.monotonic() + a.max_seconds
        emit({"event": "ready"})
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    line = (await reader.readline()).decode().split()
            except TimeoutError:
                break
            if not line or line[0] == "quit":
                break
            if line[0] == "grow":
                target = int(line[1])
                budget = float(line[2]) if len(line) > 2 else 3600.0
                new = [Session(self, i, f"{a.prefix}{i}") for i in range(len(sessions), target)]
                t = time.monotonic()
                cpu0 = cpu_seconds()
                failed = relogins = 0
                self.sessions = sessions + new
                wave = a.login_wave or len(new) or 1
                stop = t + budget
                for first in range(0, len(new), wave):
                    if time.monotonic() > stop:
                        break
                    failed += await self.resume_all(new[first : first + wave], a.concurrency, stop)
                    if first + wave < len(new):
                        relogins += await self.heal(a.concurrency)
                elapsed = time.monotonic() - t
                relogins += await self.heal(a.concurrency)
                sessions.extend(s for s in new if s.client is not None and not s.client.closed)
                alive = sum(1 for s in sessions if not s.client.closed)  # type: ignore[union-attr]
                emit(
                    {
                        "event": "grown",
                        "connected": alive,
                        "failed": failed,
                        "seconds": elapsed,
                        "logins_per_s": len(new) / elapsed if elapsed else None,
                        "loadgen_cpu": (cpu_seconds() - cpu0) / elapsed if elapsed else None,
                        "first_error": self.first_error,
                        "counts": dict(self.counts),
                        "relogins_after_unavailable": relogins,
                    }
                )
        alive = sum(1 for s in sessions if s.client is not None and not s.client.closed)
        self.close_all()
        await asyncio.sleep(0.2)
        return {"scenario": "idle", "connected_at_end": alive, "counts": dict(self.counts)}


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--ports", default="", help="cluster nodes: session i on (i // 2) mod n")
        p.add_argument("--system", default="actorchat", help="actorchat or a peer's name")
        p.add_argument("--secret", default="", help="the node's --secret (actorchat tokens)")
        p.add_argument("--sources", default="", help="loopback source addresses, comma separated")
        p.add_argument("--prefix", default="u", help="user name prefix")
        p.add_argument("--concurrency", type=int, default=100, help="logins in flight")
        p.add_argument("--server-pid", type=int, default=0, help="to wait until it is quiet")

    p = sub.add_parser("relay")
    common(p)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--window", type=int, default=16, help="messages in flight per sender")
    p.add_argument("--rate", type=float, default=None, help="open loop: msgs/s in total")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--max-messages", type=int, default=5_000_000)
    p.add_argument("--body-bytes", type=int, default=64)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--first-delivery-timeout", type=float, default=15.0)
    p.add_argument("--login-wave", type=int, default=0, help="log in so many, then settle")

    p = sub.add_parser("drain")
    common(p)
    p.add_argument("--count", type=int, default=2000, help="stored messages")
    p.add_argument("--window", type=int, default=500, help="unaccepted sends in flight")
    p.add_argument("--offline-wait", type=float, default=7.0)
    p.add_argument("--max-wait", type=float, default=60.0, help="seconds for each step")

    p = sub.add_parser("storm")
    common(p)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--max-cycles", type=int, default=200_000)

    p = sub.add_parser("idle")
    common(p)
    p.add_argument("--login-wave", type=int, default=0, help="log in so many, then settle")
    p.add_argument("--max-seconds", type=float, default=900.0, help="exit by itself after this")

    args = parser.parse_args(argv)
    if args.scenario == "relay" and args.users < 2:
        parser.error("relay needs at least 2 users")
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    kind = {"relay": Relay, "drain": Drain, "storm": Storm, "idle": Idle}[args.scenario]
    return await kind(args).run()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    result = (uvloop.run if uvloop is not None else asyncio.run)(amain(args))
    result["system"] = args.system
    emit({"result": result})


if __name__ == "__main__":
    main()
