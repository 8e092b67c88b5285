"""The chat consumer: a per-user group on the channel layer, the Channels tutorial's way.

``login``/``resume`` -> join group ``user.<name>`` and answer ``welcome`` (the token is the user
name: no auth); ``send`` -> ``group_send`` to the recipient's group, and the recipient's
consumer writes a ``deliver`` frame; ``ping`` -> ``pong``. It has no acks and no storage: a
message to a user who is not connected is lost, and ``ack`` is ignored.
"""

from __future__ import annotations

import json
import time

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    user: str | None = None
    mid = 0

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            return
        kind = frame.get("type")
        if kind == "send" and self.user is not None:
            await self.channel_layer.group_send(
                f"user.{frame.get('to')}",
                {
                    "type": "chat.message",
                    "id": frame.get("id"),
                    "from": self.user,
                    "to": frame.get("to"),
                    "body": frame.get("body"),
                    "ts": time.time(),
                },
            )
        elif kind in ("login", "resume"):
            user = frame.get("user") if kind == "login" else frame.get("token")
            if not user:
                return
            if self.user is not None:
                await self.channel_layer.group_discard(f"user.{self.user}", self.channel_name)
            self.user = user
            await self.channel_layer.group_add(f"user.{user}", self.channel_name)
            await self.send(json.dumps({"type": "welcome", "user": user, "token": user}))
        elif kind == "ping":
            await self.send(json.dumps({"type": "pong"}))

    async def chat_message(self, event):
        self.mid += 1
        item = {k: event[k] for k in ("id", "from", "to", "body", "ts")}
        item["mid"] = str(self.mid)
        await self.send(json.dumps({"type": "deliver", "messages": [item]}))

    async def disconnect(self, code):
        if self.user is not None:
            await self.channel_layer.group_discard(f"user.{self.user}", self.channel_name)
