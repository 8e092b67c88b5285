"""Constants shared by the cluster tests and their fixtures."""

CLUSTER_SECRET = "c" * 32
LEASE = 2.0


from typing import Any  # noqa: E402

import trio  # noqa: E402


async def linked(*nodes: Any, timeout: float = 10) -> None:
    """Wait until each of these in-process nodes has a link up to every other one."""
    with trio.fail_after(timeout):
        while not all(
            len(n.cluster.status()["linked"]) == len(nodes) - 1 for n in nodes
        ):
            await trio.sleep(0.02)


class LinkProxy:
    """A TCP proxy in front of a node's link endpoint, with a switch: ``cut()`` stops moving
    bytes both ways (connections stay open but silent, like a partition) and refuses new
    connections; ``restore()`` lets new connections through again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.up = True
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        if not self.up:
            await client.aclose()
            return
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream)
                    nursery.start_soon(self._pump, upstream, client)
            finally:
                self._scopes.discard(scope)
        if not self.up:  # cut: hold both ends open and silent until restored
            while not self.up:
                await trio.sleep(0.05)
        await upstream.aclose()
        await client.aclose()

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def cut(self) -> None:
        self.up = False
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.up = True
