"""The connection actor: one per WebSocket, bridging the socket and the node's actors.

Its mailbox loop is the socket's *writer*: everything to send (welcome, deliveries, accepted,
receipts, errors) arrives as a message, so frames go out in one order. While more messages are
queued it only accumulates, and when the mailbox is empty it writes: under load many
``deliver``/``accepted``/``receipt`` items share one frame (the transport's cost is per frame).
The *reader* feeds each frame to the sans-I/O ``ServerSession`` and acts on what comes out: a
side task of the actor run in the gateway's handler task for the socket (``sv.run_beside``, in
``GatewayActor._handler``), which would otherwise only wait, so an idle connection costs the
node one task of its own fewer (and none while its mailbox loop hibernates). A connection
silent for ``idle_timeout`` is closed by the janitor's sweep (``close_idle``), not by a timer
per connection: a cancel scope per idle socket (and one entered per frame) is what it saves.
A socket that cannot take a frame within ``send_stall_timeout`` is closed, and so is one whose
mailbox overflows: a stalled client never makes the node buffer without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from logging import DEBUG
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

import supervisors as sv
from actorchat import protocol as p
from actorchat.auth import BadToken, hash_password, verify_password
from actorchat.logs import MESSAGES, trace
from actorchat.store import StoreUnavailable

from ._media import share_media
from ._messages import (
    AckMail,
    Attach,
    Detach,
    Incoming,
    Kick,
    OutAccepted,
    OutDeliver,
    OutFrame,
    OutReceipt,
    OutReceipts,
    ReadMail,
)
from ._wsout import abort_stream, send_rest, send_texts_now

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actorchat.connection")

E = p.ErrorCode

# The writer writes at once, without waiting for more items, once this many are pending, or
# once it has held back the items of this many messages.
COALESCE_LIMIT = 512
HOLD_LIMIT = 32

HOLD, YIELD, WRITE = "hold", "yield", "write"


def writer_action(depth: int, pending: int, held: int, quiet: int = 0) -> str:
    """What the writer does after taking one message into its pending items, ``depth`` more
    messages queued, ``pending`` items, ``held`` messages handled since its last write,
    ``quiet`` yields still to skip (``after_yield``).

    More queued: HOLD (the next messages share this frame) up to the limits. Nothing queued
    and nothing held yet: YIELD once (the user actors and readers runnable in this scheduler
    pass usually have more items for us; under load that cuts frames several times over,
    when idle it costs one pass), then decide again as if holding one. Nothing queued after
    holding: WRITE. The writer yields at most once per frame and the limits bound holding:
    it once held while anything was queued, and with mail trickling in from many actors (the
    mailbox takes one message per pass) the yield nearly always found a new one: nothing was
    written for a second at half load, then a burst. (A time bound was tried too: under
    overload a pass outlasts it and every message wrote its own frame.)

    A yield that found nothing (a connection getting a message now and then) is a pass of
    the scheduler for nothing: the next QUIET_SKIPS flushes of that connection WRITE at once
    instead (``quiet``), and one that finds messages queued behind its first yields again."""
    if pending >= COALESCE_LIMIT or held >= HOLD_LIMIT:
        return WRITE
    if depth:
        return HOLD
    return YIELD if held == 0 and not quiet else WRITE


# After a yield that found nothing new, this many flushes skip their yield (``writer_action``).
QUIET_SKIPS = 8


def after_yield(depth: int) -> int:
    """How many flushes skip their yield after one that found ``depth`` messages queued."""
    return 0 if depth else QUIET_SKIPS


# A `send` is cast to the recipient's mailbox while it holds fewer messages than this, and
# called (waiting for its turn) beyond: the bound on what one sender can queue there.
CAST_DEPTH = 64
# Frames written with one socket send (``_wsout.send_texts_now``) hold up to about this many
# characters, so the stall timeout still times a bounded amount of data.
WRITE_BYTES = 4 * 1024


def write_chunks(frames: list[str], limit: int) -> list[list[str]]:
    """``frames`` in order, grouped into runs of at most ``limit`` characters (a frame over it
    is a run of its own)."""
    chunks: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for text in frames:
        if chunk and size + len(text) > limit:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(text)
        size += len(text)
    chunks.append(chunk)
    return chunks


# The writer's buffers while empty (``ConnectionActor``): one shared empty tuple, replaced by a
# list or dict of the connection's own on first use.
NOTHING: Any = ()


def tell(conn: sv.ActorRef, message: Any) -> None:
    """Give a connection actor something to write, from another actor: a full mailbox is a
    stalled socket, closed rather than buffered without bound; a dead one is ignored."""
    try:
        conn.send_nowait(message)
    except sv.MailboxFull:
        conn.kill()
    except sv.ActorDeadError:
        pass


def is_idle(heard: float, now: float, idle_timeout: float) -> bool:
    return now - heard >= idle_timeout


def close_idle(node: Node, now: float) -> int:
    """Kick (4002) every connection that sent nothing for ``idle_timeout``, once each, and
    forget the ones gone without an ``on_stop`` (killed); returns how many were kicked.
    Run by the janitor's rounds (``_janitor.py``)."""
    idle = node.settings.idle_timeout
    gone, kicked = [], 0
    for conn in node.connection_actors:
        if not conn.ref.is_alive():
            gone.append(conn)
        elif not conn.idle_kicked and is_idle(conn.heard, now, idle):
            conn.idle_kicked = True
            kicked += 1
            tell(conn.ref, Kick(4002, "idle timeout"))
    node.connection_actors.difference_update(gone)
    return kicked


def error_text(code: p.ErrorCode, message: str, ref: str | None = None) -> str:
    return p.encode(p.ErrorFrame(code=code.value, message=message, ref=ref))


class ConnectionActor(sv.Actor):
    # Items to write (deliveries, accepted ids, receipts, answers), coalesced into frames by
    # the writer. Other actors treat a full mailbox as a stalled socket and close it, so the
    # bound is generous for bursts: a reading client never fills it.
    mailbox_size = 10_000
    # No task until there is something to write for another actor: the reader writes the
    # connection's own answers (welcome, pong, errors) itself while the writer sleeps
    # (``out``), so a login that only gets its welcome costs this actor no task at all.
    start_asleep = True
    # Messages handled since the last write (``writer_action``); set in ``__init__`` too.
    _held = 0
    # Yields the writer still skips (``writer_action``, ``after_yield``); set in ``__init__``.
    _quiet = 0

    def __init__(self, ws: WebSocketConnection, node: Node) -> None:
        self.ws = ws
        self.node = node
        self.user: str | None = None
        self.mailbox_ref: sv.ActorRef | None = None
        self.session = p.ServerSession(node.session_limits)
        # The writer's buffers start as the shared empty NOTHING and are made on first use
        # (``_list``): an idle connection holds none (~230 bytes per idle user).
        self._deliver: list[p.Delivery] = NOTHING
        self._accepted: list[str] = NOTHING
        self._receipts: dict[tuple[str, str, str | None], list[str]] = NOTHING
        self._frames: list[str] = NOTHING
        self.closing = False
        # Here, not in an on_start: an actor without one starts at once in the gateway's task
        # (no start handshake with the supervisor) and waits for mail without a cancel scope.
        node.metrics["connections"] += 1
        self.heard = trio.current_time()  # the last frame from the client (``close_idle``)
        self.idle_kicked = False
        # The writer's counters, here although their class defaults would do: attributes
        # first set later, in whichever order the writer happens to set them, turn this
        # instance's key-sharing __dict__ into a dict of its own: ~830 bytes per connection
        # instead of 16 (1,000 idle users, benchmarks/run.py's idle phase).
        self._held = 0
        self._quiet = 0
        node.connection_actors.add(self)

    # -- lifecycle ------------------------------------------------------------------------------
    def on_stop(self, reason: sv.ExitReason) -> Awaitable[None] | None:
        # A plain function: a connection whose client closed it (most ends) has nothing to
        # await, and one asleep since its login then ends without a task (``supervisors``:
        # on_stop is called in place). Only a socket still open is closed, awaited.
        # The reader takes no more frames (``reader``): a node stopping on SIGTERM stops
        # accepting at once, not after the close handshakes (up to 1 s each).
        self.closing = True
        self.node.metrics["connections"] -= 1
        self.node.connection_actors.discard(self)
        self._leave()
        if self.ws.closed is None:  # not closed by the client already
            return self._close_socket()
        return None

    async def _close_socket(self) -> None:
        with trio.move_on_after(1.0):
            await self.ws.aclose()

    def _leave(self) -> None:
        if self.user is not None:
            self.node.registry.connection_gone(self.user, self.ref)
            for hook in self.node.on_leave:  # features: presence (synchronous, no await)
                hook(self, self.user)
            if self.mailbox_ref is not None:
                try:
                    self.mailbox_ref.send_nowait(Detach(self.ref))
                except (sv.ActorDeadError, sv.MailboxFull):
                    pass  # the mailbox actor also monitors us
            self.user = None

    # -- the writer -----------------------------------------------------------------------------
    async def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is OutDeliver:
            deliver = self._deliver
            if deliver is NOTHING:
                deliver = self._deliver = []
            for item in message.items:
                media = msgspec.json.decode(item.media, type=p.Media) if item.media else None
                deliver.append(
                    p.Delivery(
                        mid=item.mid,
                        id=item.id,
                        from_=item.sender,
                        to=message.to,
                        body=item.body,
                        ts=item.ts,
                        group=item.group,
                        media=media,
                    )
                )
        elif kind is OutAccepted:
            if self._accepted is NOTHING:
                self._accepted = []
            self._accepted.extend(message.ids)
            receipt = message.receipt
            if receipt is not None:
                self._receipt_ids(receipt.status, receipt.by, receipt.group).extend(receipt.ids)
        elif kind is OutReceipt:
            self._receipt_ids(message.status, message.by, message.group).extend(message.ids)
        elif kind is OutReceipts:  # a group's receipts, gathered by its actor (_groups.py)
            for status, by, group, ids in message.items:
                self._receipt_ids(status, by, group).extend(ids)
        elif kind is OutFrame:
            self._flush_batched()
            self._frame(message.text)
        elif kind is Kick:
            await self._write_pending()
            await self._close(message.code, message.reason)
            return None
        pending = len(self._deliver) + len(self._accepted)
        depth = self.ref.mailbox_depth()
        action = writer_action(depth, pending, self._held, self._quiet)
        if action is YIELD:
            await trio.lowlevel.cancel_shielded_checkpoint()
            depth = self.ref.mailbox_depth()
            self._quiet = after_yield(depth)
            action = writer_action(depth, pending, 1)
        elif self._quiet:
            # Skipping yields: messages queued behind us mean load again (yield next time).
            self._quiet = 0 if depth else self._quiet - 1
        if action is HOLD:
            self._held += 1
            return None
        await self._write_pending()
        return None

    def _receipt_ids(self, status: str, by: str, group: str | None) -> list[str]:
        receipts = self._receipts
        if receipts is NOTHING:
            receipts = self._receipts = {}
        ids = receipts.get((status, by, group))
        if ids is None:
            ids = receipts[(status, by, group)] = []
        return ids

    def _frame(self, text: str) -> None:
        if self._frames is NOTHING:
            self._frames = []
        self._frames.append(text)

    def _flush_batched(self) -> None:
        """Turn accumulated items into frames, keeping their order against other frames."""
        if self._deliver:
            self._frame(p.encode(p.Deliver(messages=self._deliver)))
            self._deliver = NOTHING
        if self._accepted:
            self._frame(p.encode(p.Accepted(ids=self._accepted)))
            self._accepted = NOTHING
        if self._receipts:
            for (status, by, group), ids in self._receipts.items():
                receipt = p.Receipt(status=status, by=by, ids=ids, group=group)  # type: ignore[arg-type]
                self._frame(p.encode(receipt))
            self._receipts = NOTHING

    async def _write_pending(self) -> None:
        self._held = 0
        self._flush_batched()
        frames, self._frames = self._frames, NOTHING
        if frames:
            await self._write(frames)

    async def _write(self, frames: list[str]) -> None:
        """Write ``frames`` in order; a closed or stalled socket stops the actor."""
        stall = self.node.settings.send_stall_timeout
        for chunk in write_chunks(frames, WRITE_BYTES):
            try:
                # What the socket takes at once goes without a cancel scope (entering one
                # with a deadline per flush showed in the profile) and without a checkpoint.
                rest = send_texts_now(self.ws, chunk)
                if rest is None:
                    continue
                # The rest waits for room, up to `stall` seconds (each chunk its own).
                with trio.move_on_after(stall) as scope:
                    await send_rest(self.ws, rest)
            except ConnectionClosed:
                self.stop()
                return
            if scope.cancelled_caught:
                log.info("closing a stalled connection of %s", self.user)
                self.node.metrics["stalled_closed"] += 1
                self.closing = True
                # The cancelled write may have left half a frame in the socket: a close
                # frame after it would read as the rest of that frame (the client saw 1007,
                # or worse). So the TCP stream is closed without one: the client sees the
                # connection drop (1006) after its last whole frame, and resends what was
                # not accepted.
                await abort_stream(self.ws)
                self.stop()
                return

    async def _close(self, code: int, reason: str) -> None:
        self.closing = True
        with trio.move_on_after(1.0):
            await self.ws.aclose(code, reason)
        self.stop()

    async def out(self, text: str) -> None:
        """Send a frame of our own (an answer to the client), from the reader. While the
        writer sleeps it has written everything it was given (it hibernates only on an empty
        mailbox, after its write), so the reader writes the frame itself, in order, without
        waking it: no task start for a welcome or a pong. Otherwise the frame is queued behind
        what the writer has: if it is behind, the reader waits, so this client's own traffic
        slows down instead of being cut off. Only frames from other actors
        (``Node.notify``) treat a full mailbox as a stalled socket."""
        if self.ref.is_hibernating() and not self.closing:
            # A rest the socket does not take at once holds the socket's write lock until it
            # is written: a writer woken meanwhile queues its frames behind it.
            await self._write([text])
            return
        await self.ref.send(OutFrame(text))

    # -- the reader -----------------------------------------------------------------------------
    async def reader(self) -> bool:
        """Run by the gateway's handler task beside the actor (``sv.run_beside``). True
        when the client closed the socket: the gateway then stops the actor once this side
        task is over (stopped from here, its end would cancel this very task's scope, and
        with it the handler: a cascade of cancellations per logout). False after a ``Kick``
        of its own, which the writer carries out."""
        ws = self.ws
        # Messages the library's reader task has queued are taken without a checkpoint
        # (``get_message`` is one per message, and the reader task then runs again for each:
        # two passes of the scheduler per frame under load). At most the queue's bound
        # (``_http.MESSAGE_QUEUE``) is taken before the reader task must run again.
        queued = getattr(ws, "_recv_channel", None)
        while True:
            data = None
            if queued is not None:
                try:
                    data = queued.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    pass
            if data is None:
                # Not inside the ``except`` above: an idle reader waiting there kept the
                # exception, its traceback and a frame alive (~400 bytes per idle user).
                try:
                    # What ``get_message`` does, one coroutine frame less per idle user.
                    data = await (ws.get_message() if queued is None else queued.receive())
                except (ConnectionClosed, trio.EndOfChannel, trio.ClosedResourceError):
                    return True
            if self.closing or self.node.draining:
                continue  # stopping: nothing more is taken (unaccepted: the client resends)
            now = self.heard = trio.current_time()
            event = self.session.receive(data, now)
            if isinstance(event, p.ErrorEvent):
                self.node.metrics["errors"] += 1
                await self.out(p.encode(event.to_frame()))
                if event.close:
                    self.ref.send_nowait(Kick(4003, event.message[:120]))
                    return False
                continue
            try:
                await self._handle(event)
            except StoreUnavailable:
                await self.out(
                    error_text(
                        E.UNAVAILABLE,
                        "storage is unavailable; try again",
                        getattr(event, "id", None),
                    )
                )

    async def _handle(self, frame: p.ClientFrame) -> None:
        kind = type(frame)
        node = self.node
        if kind is p.Send:
            await self._send(frame)  # type: ignore[arg-type]
        elif kind is p.Ack:
            if self.mailbox_ref is not None:
                await self._to_mailbox(AckMail(tuple(frame.mids)))  # type: ignore[union-attr]
        elif kind is p.Read:
            if self.mailbox_ref is not None:
                await self._to_mailbox(ReadMail(tuple(frame.mids)))  # type: ignore[union-attr]
        elif kind is p.Ping:
            await self.out(p.encode(p.Pong()))
        elif kind is p.Register:
            await self._register(frame)  # type: ignore[arg-type]
        elif kind is p.Login:
            user = frame.user  # type: ignore[union-attr]
            stored = await node.store.read("get_password_hash", user)
            ok = await trio.to_thread.run_sync(verify_password, frame.password, stored)  # type: ignore[union-attr]
            if not ok:
                await self.out(error_text(E.BAD_CREDENTIALS, "wrong user or password", frame.id))
                return
            await self._welcome(user)
        elif kind is p.Resume:
            try:
                user = node.signer.verify(frame.token, node.wall())  # type: ignore[union-attr]
            except BadToken as e:
                await self.out(error_text(E.BAD_CREDENTIALS, f"bad token: {e}", frame.id))
                return
            await self._welcome(user)
        elif kind in node.frame_handlers:
            # A feature's frames (groups, presence, typing): handled in the feature's module.
            await node.frame_handlers[kind](self, frame)
        elif kind is p.Typing:
            to = frame.to  # type: ignore[union-attr]
            if to is not None:
                node.notify_now(to, p.encode(p.TypingNotice(from_=self.user, state=frame.state)))  # type: ignore[union-attr,arg-type]
        else:
            what = getattr(frame, "type", kind.__name__)
            await self.out(
                error_text(
                    E.NOT_ALLOWED,
                    f"{what} is not available on this node yet",
                    getattr(frame, "id", None),
                )
            )

    async def _to_mailbox(self, message: Any) -> None:
        assert self.mailbox_ref is not None
        try:
            try:
                # No checkpoint when there is room (an ack per `deliver` frame is on the hot
                # path): the reader's next wait for a frame is one.
                self.mailbox_ref.send_nowait(message)
            except sv.MailboxFull:
                await self.mailbox_ref.send(message)
        except sv.ActorDeadError:
            self.mailbox_ref = await self.node.registry.mailbox(self.user)  # type: ignore[arg-type]
            await self.mailbox_ref.send(message)

    async def _register(self, frame: p.Register) -> None:
        hashed = await trio.to_thread.run_sync(hash_password, frame.password)
        created = await self.node.store.read("create_user", frame.user, hashed, self.node.wall())
        if not created:
            await self.out(error_text(E.USER_EXISTS, f"user {frame.user} exists", frame.id))
            return
        self.node.registry.known_users.add(frame.user)
        await self.out(p.encode(p.Registered(user=frame.user)))

    async def _welcome(self, user: str) -> None:
        node = self.node
        # The mailbox first: loading it may need the store, and if the store is down the login
        # fails (`unavailable`) before any session opens, rather than after a welcome (a
        # session that would never deliver anything). Guarded by
        # test_e2e_delivery.py::test_login_while_the_store_is_down_opens_no_session.
        # In a cluster a login takes the mailbox over from the node that holds it.
        takeover = node.cluster is not None
        mailbox = await node.registry.mailbox(user, takeover=takeover)
        if self.user is not None and self.user != user:
            self._leave()
        token = node.signer.issue(user, node.wall())
        self.session.authenticated(user)
        self.user = user
        # welcome is queued before the mailbox can queue any delivery: it goes out first.
        await self.out(p.encode(p.Welcome(user=user, token=token)))
        while node.registry.mailboxes.get(user) is not mailbox:
            # It stopped meanwhile (its linger ran out while the welcome was written): an
            # Attach queued to it would be dropped with it, and this session would get
            # nothing. The next one is attached instead. A mailbox unregisters itself in the
            # step that decides to stop (``UserActor._tick``) and only with nothing queued, so
            # one still registered when the Attach is queued takes it. Guarded by
            # test_e2e_delivery.py::test_login_whose_mailbox_stops_before_its_attach_...
            mailbox = await node.registry.mailbox(user, takeover=takeover)
        node.registry.connection_arrived(user, self.ref)
        self.mailbox_ref = mailbox
        await self._to_mailbox(Attach(self.ref))
        for hook in node.on_welcome:  # features: group memberships, presence
            await hook(self, user)
        # Most users idle after logging in: the writer sleeps (no task) once it has written
        # what the login queued, rather than keep a parked task until the janitor's next round
        # (in a burst of logins those piled up, and the memory they freed stayed in the RSS).
        self.hibernate()

    async def _send(self, frame: p.Send) -> None:
        node = self.node
        user = self.user  # the sender: the frame was read while it was logged in
        if user is None:
            return  # the connection stopped (``on_stop`` ran ``_leave``) after reading it
        if frame.group is not None:
            if node.group_send is None:
                await self.out(
                    error_text(
                        E.NO_SUCH_GROUP, "groups are not available on this node yet", frame.id
                    )
                )
                return
            await node.group_send(self, frame)
            return
        to = frame.to
        assert to is not None
        if not await node.registry.user_exists(to):
            await self.out(error_text(E.NO_SUCH_USER, f"no user {to}", frame.id))
            return
        media = None
        if frame.media is not None:
            # Only someone who may fetch the media may refer to it, and the recipient's grant
            # is committed before the message can reach a mailbox, so whoever is delivered it
            # can fetch it (_media.py; test_e2e_media.py). Sends without media skip this.
            shared = await share_media(node, user, frame.media, (to,))
            if shared is None:
                await self.out(
                    error_text(
                        E.NOT_ALLOWED, f"no media {frame.media.id} you may share", frame.id
                    )
                )
                return
            media = msgspec.json.encode(shared).decode()
        if MESSAGES.isEnabledFor(DEBUG):  # the first line of a message's life (logs.py)
            trace("received", node.settings.node_name, user, frame.id, to)
        # The message as a call carries it (no `reply`), made only where it is needed: the
        # fast path below casts one of its own.
        message = None
        if node.cluster is not None:
            message = Incoming(user, frame.id, frame.body, None, media)
            if await node.cluster.route_send(self, to, message, frame.id):
                return  # owned by another node: it crossed the link (or was refused)
        for _attempt in range(3):
            ref = await node.registry.mailbox(to)
            queue = node.registry.queues.get(to)
            if (
                ref.mailbox_depth() < CAST_DEPTH
                and self.ref.mailbox_depth() < CAST_DEPTH
                and queue is not None
                and not queue.spilling
            ):
                # A cast: this reader goes on to the next frame at once instead of parking
                # until the mailbox has answered (a task switch and a wake-up per message).
                # Order holds (one FIFO mailbox); a refusal would come back to us as an
                # `unavailable` frame (``UserActor._refuse``). Only on the fast path: with
                # mail waiting for the store (``spilling``, where refusals come from) we call,
                # and the round trip paces a sender whose messages are refused; with casts
                # such a sender, writing without reading, got its refusals faster than it
                # read them and was cut off as stalled. Guarded by test_e2e_delivery.py::
                # test_slow_store_sheds_new_mail_not_memory. In a cluster a handover stops
                # the mailbox in order (``Release``), so what was cast before it is stored.
                cast = Incoming(user, frame.id, frame.body, None, media, self.ref)
                try:
                    ref.send_nowait(cast)
                except sv.ActorDeadError:
                    continue  # gone: the registry starts or finds the next one
                return
            if message is None:
                message = Incoming(user, frame.id, frame.body, None, media)
            try:
                # A long mailbox: wait for our turn (back-pressure on this client, so one
                # sender adds at most CAST_DEPTH casts to it). No timeout: the mailbox answers
                # Incoming synchronously (no await in its handler), and the call still
                # resolves with ActorDeadError if it stops or crashes. A timeout would cost a
                # cancel scope per `send` frame.
                taken = await ref.call(message, timeout=None)
            except sv.ActorDeadError:
                continue  # it stopped or crashed: the registry starts or finds the next one
            if taken is False:  # the mailbox sheds load: its store is behind
                await self.out(
                    error_text(
                        E.UNAVAILABLE,
                        f"{to} has too much mail waiting for storage; send it again later",
                        frame.id,
                    )
                )
                return
            node.metrics["received"] += 1
            return
        await self.out(
            error_text(E.UNAVAILABLE, "the recipient's mailbox is not answering", frame.id)
        )
