"""The ASGI application: every WebSocket path goes to the chat consumer."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "channels_app.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from channels_app.consumers import ChatConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([re_path(r"^.*$", ChatConsumer.as_asgi())]),
    }
)
