"""One node's supervision tree, and running it.

::

    node            rest_for_one: a later child depends on the earlier ones
    ├── store       StoreActor (thread, asyncio loop, SQLAlchemy async engine)
    ├── storefront  StoreFront (group commit in front of the thread)
    ├── leasestore  StoreActor, a cluster node on PostgreSQL: the lease's own thread/connection
    ├── cluster     ClusterActor, a cluster node: heartbeat, links, relay (actorchat/cluster)
    ├── users       simple_one_for_one: UserActor per user with mail or a connection
    ├── groups      simple_one_for_one: GroupActor per group in use (_groups.py)
    ├── connections simple_one_for_one (temporary): ConnectionActor per WebSocket
    └── gateway     GatewayActor: the listening socket

Stopping runs the tree in reverse: the gateway stops accepting, connections close (each
detaches from its mailbox), every mailbox stores what it holds unstored (so it is accepted and
survives), then the store front commits and the store closes.
"""

from __future__ import annotations

import collections
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import WebSocketRequest

import supervisors as sv
from actorchat.auth import TokenSigner
from actorchat.config import Settings
from actorchat.store import StoreUnavailable

from ._admin import admin_children
from ._connection import ConnectionActor, tell
from ._groups import groups_spec, install_groups
from ._http import HttpHandler, HttpRequest, HttpResponse, HttpServer, text
from ._janitor import Janitor
from ._media import install_media
from ._messages import OutAccepted, OutFrame
from ._ops import install_operations, readiness
from ._presence_node import PresenceActor, install_presence
from ._registry import Registry
from ._storage import StoreActor, StoreClient, StoreFront, check_database, lease_store_spec
from ._user import UserActor
from ._web import install_web
from ._wsout import eager_receive

log = logging.getLogger("actorchat.node")


class Node:
    """What every actor of the node shares: settings, registry, store client, token signer."""

    def __init__(self, settings: Settings, *, db_schema: str | None = None) -> None:
        self.settings = settings
        # Frozen: one for every session of the node, not one per connection.
        self.session_limits = settings.session_limits()
        self.db_schema = db_schema
        self.signer = TokenSigner(settings.secret, settings.token_ttl)
        self.registry = Registry(self)
        # Live connection actors, for the janitor's idle sweep (``_connection.close_idle``).
        self.connection_actors: set[ConnectionActor] = set()
        self.store = StoreClient(self)
        self.sup: sv.SupervisorRef | None = None
        self.port: int | None = None
        self.delivery_window = 256
        self.user_linger = 5.0
        self.metrics: collections.Counter[str] = collections.Counter()
        self.listening = trio.Event()
        # Set on SIGTERM/SIGINT before the tree stops: readers take no more frames, so the node
        # accepts nothing new while its first children stop (``ConnectionActor.reader``).
        self.draining = False
        self.tree_ready = trio.Event()
        self.front: StoreFront | None = None
        # Features plug in here, each from its own module, rather than editing the connection
        # actor: handlers for their client frame types (called with the connection actor and
        # the frame, after welcome), the handler of `send` frames with a `group`, and hooks
        # run after a welcome (async) and when a connection leaves its user (sync).
        self.frame_handlers: dict[type, Callable[[Any, Any], Awaitable[None]]] = {}
        self.group_send: Callable[[Any, Any], Awaitable[None]] | None = None
        self.on_welcome: list[Callable[[Any, str], Awaitable[None]]] = []
        self.on_leave: list[Callable[[Any, str], None]] = []
        # Plain HTTP beside the WebSocket: path prefix -> handler, longest prefix wins.
        # Features register here (health below; media, metrics, the chat page elsewhere).
        self.http_routes: dict[str, HttpHandler] = {}
        self.add_route("/healthz", self._healthz)
        self.add_route("/readyz", self._readyz)
        install_operations(self)  # /metrics, TLS context, readiness probe (_ops.py)
        # WebSocket upgrades by exact path, beside the client endpoint (the cluster's links).
        self.ws_routes: dict[str, Callable[[WebSocketRequest], Awaitable[None]]] = {}
        # The cluster (issue 6): only with a cluster secret; None costs nothing per message.
        self.cluster: Any = None
        self.fenced = False  # the cluster lease may have lapsed: write no mail (see cluster)
        if settings.cluster_secret is not None:
            from actorchat.cluster import install

            install(self)
        install_groups(self)  # groups: node.groups, their frames, group sends (issue 7)
        self.media = install_media(self)  # POST /media, GET /media/M; its blob store
        self.presence = install_presence(self)  # subscribe, presence, last seen, typing
        install_web(self)  # the chat page at / (and its files under /app/)

    def add_route(self, prefix: str, handler: HttpHandler) -> None:
        """Serve plain HTTP requests whose path is ``prefix`` or starts with ``prefix + "/"``
        (``"/"`` alone matches only the root). The handler answers with an ``HttpResponse``."""
        self.http_routes[prefix] = handler

    def route(self, path: str) -> HttpHandler | None:
        """Pure: the handler for a path (the longest matching prefix), or None."""
        matching = [
            prefix
            for prefix in self.http_routes
            if path == prefix or (prefix != "/" and path.startswith(prefix.rstrip("/") + "/"))
        ]
        return self.http_routes[max(matching, key=len)] if matching else None

    async def _healthz(self, request: HttpRequest) -> HttpResponse:
        return text(200, "ok\n")

    async def _readyz(self, request: HttpRequest) -> HttpResponse:
        ready, why = await readiness(self)  # store reachable, cluster joined (_ops.py)
        return text(200 if ready else 503, why + "\n")

    @staticmethod
    def wall() -> float:
        return time.time()

    # -- the tree -------------------------------------------------------------------------------
    def spec(self) -> sv.SupervisorSpec:
        settings = self.settings

        def users_spec() -> sv.SupervisorSpec:
            return sv.SupervisorSpec(
                sv.SupervisorFlags(sv.SIMPLE_ONE_FOR_ONE, intensity=100, period=10.0),
                [
                    sv.ChildSpec(
                        "user", UserActor, restart=sv.TRANSIENT, shutdown=settings.ack_timeout + 5
                    )
                ],
            )

        def connections_spec() -> sv.SupervisorSpec:
            return sv.SupervisorSpec(
                sv.SupervisorFlags(sv.SIMPLE_ONE_FOR_ONE, intensity=1000, period=1.0),
                [sv.ChildSpec("connection", ConnectionActor, restart=sv.TEMPORARY, shutdown=2.0)],
            )

        return sv.SupervisorSpec(
            sv.SupervisorFlags(sv.REST_FOR_ONE, intensity=5, period=30.0),
            [
                sv.ChildSpec(
                    "store",
                    StoreActor,
                    (
                        settings.database_url,
                        self.db_schema,
                        False,  # prepare_database migrated already
                        settings.db_pool_size,
                        settings.db_statement_timeout,
                    ),
                    shutdown=30.0,
                ),
                sv.ChildSpec("storefront", self._make_front, shutdown=30.0),
                *self._cluster_spec(),
                sv.ChildSpec("users", users_spec, kind=sv.SUPERVISOR),
                sv.ChildSpec("groups", groups_spec, kind=sv.SUPERVISOR),
                sv.ChildSpec("connections", connections_spec, kind=sv.SUPERVISOR),
                sv.ChildSpec("gateway", GatewayActor, (self,), shutdown=5.0),
                # Last, so that under rest_for_one its restart touches nothing else.
                sv.ChildSpec("janitor", Janitor, (self,), shutdown=1.0),
                # Presence: grace timer and connection monitors (its state is on the node).
                sv.ChildSpec("presence", PresenceActor, (self.presence,), shutdown=10.0),
                *admin_children(self),  # the admin listener, with --admin-port (_admin.py)
            ],
        )

    def _cluster_spec(self) -> list[sv.ChildSpec]:
        # Before the users: on a stop every mailbox stores what it holds while the links are
        # still up, and only then does the cluster end its lease.
        if self.cluster is None:
            return []
        from actorchat.cluster import ClusterActor

        settings = self.settings  # the lease's own store first (PostgreSQL): _storage.py
        return [
            *lease_store_spec(settings.database_url, self.db_schema, settings.db_statement_timeout),
            sv.ChildSpec("cluster", ClusterActor, (self,), shutdown=10.0),
        ]

    def _make_front(self) -> StoreFront:
        self.front = StoreFront(self._store_ref)
        return self.front

    def store_down(self) -> bool:
        """The store front's last hop to the database failed (readiness)."""
        return self.front is None or self.front.down

    async def _tree(self) -> sv.SupervisorRef:
        # Children start before open_supervisor hands us the root's ref: wait for it.
        await self.tree_ready.wait()
        assert self.sup is not None
        return self.sup

    async def _store_ref(self) -> sv.ActorRef:
        ref = (await self._tree()).whereis("store")
        if ref is None:
            raise sv.ActorDeadError("the store is not running")
        return ref

    async def users(self) -> sv.SupervisorRef:
        ref = (await self._tree()).child_supervisor("users")
        if ref is None:
            raise sv.ActorDeadError("the users supervisor is not running")
        return ref

    async def connections(self) -> sv.SupervisorRef:
        ref = (await self._tree()).child_supervisor("connections")
        if ref is None:
            raise sv.ActorDeadError("the connections supervisor is not running")
        return ref

    # -- notifications to users on this node ---------------------------------------------------
    def notify(self, user: str, message: Any) -> None:
        """Tell a user's current connection something (accepted, receipts); dropped when the
        user is not connected: the sender's client retries unaccepted ids on reconnect."""
        conn = self.registry.connections.get(user)
        if conn is None:
            if self.cluster is not None:  # connected to another node, perhaps
                self.cluster.notify_remote(user, message)
                if type(message) is OutAccepted and message.receipt is not None:
                    self.cluster.notify_remote(user, message.receipt)  # a link carries it apart
            return
        tell(conn, message)

    def notify_now(self, user: str, text: str) -> None:
        self.notify(user, OutFrame(text))

    def unavailable(self, sender: str, client_id: str) -> None:
        from actorchat import protocol as p

        self.notify_now(
            sender,
            p.encode(
                p.ErrorFrame(
                    code=p.ErrorCode.UNAVAILABLE.value,
                    message="storage is unavailable; the message was not accepted, send it again",
                    ref=client_id,
                )
            ),
        )

    # -- running --------------------------------------------------------------------------------
    async def prepare_database(self) -> None:
        """Migrate (or check) the schema before the tree starts. An unreachable database is
        retried with backoff for ``--db-wait`` seconds, saying so; then ``StoreUnavailable``.
        A schema newer than the code raises ``SchemaTooNew`` at once (and nothing is written)."""
        settings = self.settings
        deadline = trio.current_time() + settings.db_wait
        delay = 0.5
        while True:
            try:
                await trio.to_thread.run_sync(
                    check_database, settings.database_url, self.db_schema, settings.migrate
                )
                return
            except StoreUnavailable as e:
                if trio.current_time() + delay > deadline:
                    raise
                log.warning("database unreachable (%s); retrying in %.1f s", e, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or until the tree exits by itself."""
        await self.prepare_database()
        async with sv.open_supervisor(self.spec(), name=self.settings.node_name) as sup:
            self.sup = sup
            self.tree_ready.set()
            await self.listening.wait()
            task_status.started(self)
            await sup.wait()

    async def started(self) -> None:
        await self.listening.wait()


class _Status:
    """A ``task_status`` for a server run as a side task."""

    def __init__(self, on_started: Any) -> None:
        self.on_started = on_started

    def started(self, value: Any = None) -> None:
        self.on_started(value)


class GatewayActor(sv.Actor):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.server: Any = None
        self._up = trio.Event()

    async def on_start(self) -> None:
        self.start_task(self._serve)
        await self._up.wait()

    def _started(self, server: Any) -> None:
        self.server = server
        self.node.port = server.port
        self._up.set()
        self.node.listening.set()

    async def _serve(self) -> None:
        settings = self.node.settings
        server = HttpServer(
            self._handler,
            self._http,
            max_message_size=settings.max_frame_bytes * 2 + 1024,
            ssl_context=self.node.ssl_context,  # --tls-cert/--tls-key (_ops.py)
        )
        await server.serve(settings.host, settings.port, task_status=_Status(self._started))

    async def _http(self, request: HttpRequest) -> HttpResponse:
        """Plain HTTP beside the WebSocket, routed by path (``Node.add_route``)."""
        handler = self.node.route(request.path)
        if handler is None:
            return text(404, "not found\n")
        return await handler(request)

    async def _handler(self, request: WebSocketRequest, scope: trio.CancelScope) -> None:
        route = self.node.ws_routes.get(request.path)
        if route is not None:
            await route(request)
            return
        ws = await request.accept()
        eager_receive(ws)
        try:
            ref = await (await self.node.connections()).start_child((ws, self.node))
        except (sv.SupervisorError, sv.ActorDeadError):
            await ws.aclose(1013, "node is shutting down")
            return
        try:
            # This task reads the socket for the connection actor (``_connection.py``): it
            # returns once the client closed the socket, or after the reader asked the actor
            # to close it, and is cancelled through the connection's nursery (``scope``, no
            # cancel scope of its own: memory per idle user) once the actor exited, which then
            # closes the socket.
            closed = await sv.run_beside(ref, ConnectionActor.reader, scope=scope)
        except sv.ActorDeadError:
            return  # gone already (its on_stop closed the socket)
        except trio.Cancelled:
            # The actor exited, or the gateway stops: the socket goes with this task, so the
            # actor goes too (a no-op if it is gone: connection actors are never restarted).
            ref.stop(sv.NORMAL)
            raise
        if closed:
            # The client closed it (most logouts): the actor stops, with nothing to close and
            # no side task of its to cancel; this task ends on its own.
            ref.stop(sv.NORMAL)
            return
        await ref.wait()


# The cyclic GC of a node process (``tune_gc``). Every message allocates a few dozen
# short-lived tracked objects (frames, queue items, trio's wake-up records), and with CPython's
# default gen0 threshold (700) collections took ~8% of the node's CPU under relay load.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Once the node is up: freeze what is loaded (modules, SQLAlchemy's metadata, the tree:
    ~100,000 objects that live as long as the process) out of the collector, so a full
    collection no longer walks them (they made each one pause the node 150-400 ms, the p99 of
    a latency run), and collect the young generation less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_until_signal(node: Node) -> None:
    """Run the node; SIGINT or SIGTERM stops it cleanly (the tree in reverse order)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            tune_gc()
            store = _safe_url(node.settings.database_url)
            print(
                f"actorchat node {node.settings.node_name} listening on "
                f"{'wss' if node.ssl_context else 'ws'}://{node.settings.host}:{node.port}/ "
                f"(store: {store})",
                flush=True,
            )
            if node.admin_port is not None:
                host = node.settings.admin_host
                print(f"admin endpoint on http://{host}:{node.admin_port}/admin/tree", flush=True)
            async for signum in signals:
                log.info("received %s: stopping", signal.Signals(signum).name)
                print(f"stopping on {signal.Signals(signum).name}...", flush=True)
                assert node.sup is not None
                node.draining = True
                node.sup.stop()
                await node.sup.wait()
                nursery.cancel_scope.cancel()
                break


def _safe_url(url: str) -> str:
    """The database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
