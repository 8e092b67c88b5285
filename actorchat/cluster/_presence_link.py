"""Presence and typing across the links (docs/guarantees.md, "Across nodes").

The node's ``Presence`` (``actorchat/node/_presence_node.py``) decides; this carries:

* every change of a user of this node (``Presence.announce``) goes to every linked peer as a
  ``PresenceItem``, which the peer hands to ``Presence.remote``: its subscribers see it;
* a link that comes up starts with ``reset``, the users online here (``users_here``), then
  ``synced``: what the peer missed while the link was down is made good (a user it still
  counts online here and that is not in the snapshot goes offline);
* a peer whose lease lapsed (no longer a member) is ``node_gone`` after the presence grace,
  unless it is back by then: its users go offline (unless connected elsewhere meanwhile);
* typing for a user not connected here goes to the peers that report it online, as a
  ``frame`` notice (delivered if it is connected there, dropped otherwise: typing is never
  queued or retried).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._link import NoteItem, PresenceItem

if TYPE_CHECKING:
    from actorchat.node._presence import LocalChange

    from ._cluster import Cluster, Peer


class PresenceLink:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.syncing: dict[str, set[str]] = {}  # origin -> users not (yet) in its snapshot
        self.attached = False

    def attach(self) -> None:
        """Hook into the node's presence (once the node has one)."""
        presence = getattr(self.cluster.node, "presence", None)
        if presence is None or self.attached:
            return
        self.attached = True
        presence.announce.append(self.announce)
        presence.forward_typing = self.forward_typing

    # -- out ------------------------------------------------------------------------------------
    def announce(self, change: LocalChange) -> None:
        item = PresenceItem(change.user, change.status, change.at)
        for peer in self.cluster.peers.values():
            if peer.up:
                peer.put_nowait(item)

    def link_up(self, peer: Peer) -> None:
        presence = getattr(self.cluster.node, "presence", None)
        if presence is None:
            return
        peer.put_nowait(PresenceItem("", "reset"))
        for user, since in presence.users_here():
            peer.put_nowait(PresenceItem(user, "online", since))
        peer.put_nowait(PresenceItem("", "synced"))

    def forward_typing(self, user: str, text: str) -> None:
        presence = self.cluster.node.presence
        for name in presence.book.nodes_of(user):
            peer = self.cluster.peers.get(name)
            if peer is not None and peer.up:
                peer.put_nowait(NoteItem(user, "frame", text=text))

    # -- in -------------------------------------------------------------------------------------
    def take(self, origin: str, item: PresenceItem) -> None:
        presence = self.cluster.node.presence
        if item.status == "reset":
            self.syncing[origin] = set(presence.book.reported_by(origin))
        elif item.status == "synced":
            stale = self.syncing.pop(origin, set())
            now = self.cluster.node.wall()
            for user in sorted(stale):
                presence.remote(origin, user, "offline", now)
        elif item.status in ("online", "offline"):
            stale = self.syncing.get(origin)
            if stale is not None:
                stale.discard(item.user)
            presence.remote(origin, item.user, item.status, item.at)

    async def gone_after_grace(self, name: str) -> None:
        """``name`` is no longer a live member: after the grace, its users go offline here
        (unless it is back by then)."""
        cluster = self.cluster
        presence = getattr(cluster.node, "presence", None)
        if presence is None:
            return
        await trio.sleep(presence.book.grace)
        if name not in cluster.members:
            self.syncing.pop(name, None)
            presence.node_gone(name)

