"""Serve the Channels peer with uvicorn (one process, its default loop and WebSocket stack).

    python benchmarks/peers/channels_app/serve.py --port 0

prints ``channels node peer2 listening on ws://HOST:PORT/``; SIGTERM or SIGINT stops it. Needs
the Redis at 127.0.0.1:6379 (``BENCH_REDIS_URL`` to change it); keys are prefixed per process.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "channels_app.settings")
os.environ.setdefault("BENCH_CHANNELS_PREFIX", f"asgi-bench-{os.getpid()}")

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description="Django Channels chat peer (peer 2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    from channels_app.asgi import application

    config = uvicorn.Config(application, log_level="warning", lifespan="off", backlog=4096)
    server = uvicorn.Server(config)
    port = sock.getsockname()[1]
    print(f"channels node peer2 listening on ws://{args.host}:{port}/", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
