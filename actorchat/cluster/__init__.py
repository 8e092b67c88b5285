"""Several nodes serving one chat: membership leases in the shared database, authenticated
WebSocket links between nodes, cross-node delivery and session takeover.

A node joins a cluster when it has a cluster secret (``--cluster-secret`` or
``ACTORCHAT_CLUSTER_SECRET``); ``install(node)`` (called from ``Node.__init__``) wires it in.
Without one, nothing here is imported and a node behaves as before.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from ._cluster import LINK_PATH as LINK_PATH
from ._cluster import Cluster as Cluster
from ._cluster import ClusterActor as ClusterActor
from ._lease import Member as Member
from ._lease import Route as Route
from ._lease import View as View
from ._lease import member_proof as member_proof
from ._lease import route as route
from ._lease import view as view
from ._link import LinkRefused as LinkRefused

if TYPE_CHECKING:
    from actorchat.node import Node
    from actorchat.node._http import HttpRequest, HttpResponse

STATUS_PATH = "/cluster/status"


def install(node: Node) -> Cluster:
    """Make ``node`` a cluster member: its ``cluster`` object, the link endpoint on its port,
    and ``GET /cluster/status`` (JSON: members, links, owned and connected users)."""
    from actorchat.node._http import HttpResponse

    if node.settings.database_url.startswith("sqlite"):
        logging.getLogger("actorchat.cluster").warning(
            "a cluster on SQLite works only on one host, every node on the same database "
            "file; use PostgreSQL for a real cluster"
        )
    cluster = Cluster(node)
    node.cluster = cluster
    node.ws_routes[LINK_PATH] = cluster.accept_link

    async def status(request: HttpRequest) -> HttpResponse:
        body = json.dumps(cluster.status()).encode()
        return HttpResponse(200, body, content_type="application/json")

    node.add_route(STATUS_PATH, status)
    return cluster
