"""``python -m actorchat``: run a node (default), ``migrate``, ``chat`` (a terminal client), or
``tree`` (a running node's supervision tree, from its admin endpoint), or ``cluster`` (the
members of a cluster, from its database)."""

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
    if argv and argv[0] == "cluster":
        from actorchat.cluster._cli import main as cluster_main

        return cluster_main(argv[1:])
    if argv and argv[0] == "tree":
        from actorchat.tree import main as tree_main

        return tree_main(argv[1:])
    from actorchat.config import parse_settings

    settings = parse_settings(argv, os.environ)  # --help and bad values exit here, cheaply
    from actorchat.logs import configure_logging
    from actorchat.node import Node, run_until_signal

    configure_logging(settings.log_level, settings.log_format, settings.node_name)
    if settings.ephemeral_secret:
        logging.getLogger("actorchat").warning(
            "no --secret / ACTORCHAT_SECRET: tokens will not survive a restart"
        )
    try:
        trio.run(run_until_signal, Node(settings))
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a clear message, not a traceback wall
        cause = _user_facing(e)
        if cause is None:
            raise
        print(f"actorchat: cannot run the node: {cause}", file=sys.stderr)
        return 1
    return 0


def _user_facing(exc: BaseException) -> BaseException | None:
    """The database or network error behind a failed start, if that is what it was."""
    from actorchat.store import StoreError

    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, StoreError | OSError):
            return e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        reason = getattr(e, "reason", None)
        for value in (getattr(reason, "exception", None), getattr(reason, "detail", None)):
            if isinstance(value, BaseException):
                todo.append(value)
            elif isinstance(value, tuple):
                todo.extend(
                    v.exception
                    for v in value
                    if isinstance(getattr(v, "exception", None), BaseException)
                )
        if e.__cause__ is not None:
            todo.append(e.__cause__)
    return None


def _migrate(argv: list[str]) -> int:
    from actorchat.config import parse_settings
    from actorchat.store import upgrade

    settings = parse_settings(argv, os.environ)
    import asyncio

    from actorchat.store import StoreError

    try:
        asyncio.run(upgrade(settings.database_url))
    except StoreError as e:
        print(f"actorchat migrate: {e}", file=sys.stderr)
        return 1
    from actorchat.node import safe_url

    print(f"the schema is up to date in {safe_url(settings.database_url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
