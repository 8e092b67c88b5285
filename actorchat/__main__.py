"""``python -m actorchat``: run a node (default), ``migrate``, or ``chat`` (a terminal client)."""

from __future__ import annotations

import logging
import os
import sys

import trio


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "chat":
        from actorchat.client import main as chat_main

        return chat_main(argv[1:])
    if argv and argv[0] == "migrate":
        return _migrate(argv[1:])
    from actorchat.config import parse_settings

    settings = parse_settings(argv, os.environ)  # --help and bad values exit here, cheaply
    from actorchat.node import Node, run_until_signal

    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.ephemeral_secret:
        logging.getLogger("actorchat").warning(
            "no --secret / ACTORCHAT_SECRET: tokens will not survive a restart"
        )
    try:
        trio.run(run_until_signal, Node(settings))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a clear message, not a traceback wall
        from actorchat.store import StoreError

        root = e
        while isinstance(root, BaseExceptionGroup) and len(root.exceptions) == 1:
            root = root.exceptions[0]
        if isinstance(root, StoreError | OSError):
            print(f"actorchat: cannot run the node: {root}", file=sys.stderr)
            return 1
        raise
    return 0


def _migrate(argv: list[str]) -> int:
    from actorchat.config import parse_settings
    from actorchat.store import upgrade

    settings = parse_settings(argv, os.environ)
    import asyncio

    asyncio.run(upgrade(settings.database_url))
    print(f"schema is up to date in {settings.database_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
