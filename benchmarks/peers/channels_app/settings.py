"""Django settings of the Channels peer: the minimum Channels needs, and the Redis layer."""

import os

SECRET_KEY = "actorchat-benchmark-peer-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "channels_app.urls"
ASGI_APPLICATION = "channels_app.asgi.application"
USE_TZ = True
DATABASES: dict = {}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    # redis-py's pool stops at 100 connections and then raises
                    # MaxConnectionsError inside group_send (the consumer dies, messages are
                    # lost): a deployment under load raises it.
                    "max_connections": 6000,
                }
            ],
            # A per-process prefix, so runs never see each other's keys in the shared Redis.
            "prefix": os.environ.get("BENCH_CHANNELS_PREFIX", "asgi-bench"),
            # The default (100) drops group messages beyond 100 queued per channel; the load
            # generator's windows stay below this, so nothing is dropped for want of room.
            "capacity": 10_000,
            "expiry": 60,
        },
    }
}
