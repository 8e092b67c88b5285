"""``python -m actorchat tree --node HOST:PORT``: print a running node's supervision tree.

It asks the node's admin listener (``--admin-port`` of the node) for ``GET /admin/tree`` with
the admin token (``--token`` or ``ACTORCHAT_ADMIN_TOKEN``) and prints one actor a line,
indented under its supervisor: id (and label: whose mailbox a ``user`` is), kind, state,
restarts, mailbox depth.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["fetch_tree", "format_tree", "main"]

TOKEN_ENV = "ACTORCHAT_ADMIN_TOKEN"


class TreeError(Exception):
    """The tree could not be fetched: says why, for the command line."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def fetch_tree(
    host: str, port: int, token: str, max_children: int = 100, timeout: float = 10.0
) -> dict[str, Any]:
    """The admin endpoint's answer: ``{"node": name, "tree": {...}}``."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(
            "GET",
            f"/admin/tree?max_children={max_children}",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = connection.getresponse()
        body = response.read()
    except OSError as e:
        raise TreeError(f"cannot reach the admin endpoint at {host}:{port}: {e}") from e
    finally:
        connection.close()
    if response.status == 401:
        raise TreeError(f"the node refused the admin token ({TOKEN_ENV} or --token)")
    if response.status != 200:
        raise TreeError(f"the admin endpoint answered {response.status}: {body[:200]!r}")
    try:
        return json.loads(body)
    except ValueError as e:
        raise TreeError(f"the admin endpoint sent something that is not JSON: {e}") from e


def format_tree(answer: Mapping[str, Any]) -> str:
    """Pure: the tree as indented lines (box-drawing branches)."""
    lines = [f"node {answer.get('node', '?')}"]

    def line(node: Mapping[str, Any]) -> str:
        label = f" ({node['label']})" if node.get("label") else ""
        return (
            f"{node['id']}{label}  {node['kind']}  {node['state']}  "
            f"restarts={node['restarts']}  mailbox={node['mailbox_depth']}"
        )

    def walk(node: Mapping[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        lines.append(prefix + branch + line(node))
        children = list(node.get("children", []))
        omitted = node.get("omitted", 0)
        inner = prefix if top else prefix + ("    " if last else "│   ")
        for i, child in enumerate(children):
            walk(child, inner, i == len(children) - 1 and not omitted, False)
        if omitted:
            lines.append(f"{inner}└── ... {omitted} more")

    walk(answer["tree"], "", True, True)
    return "\n".join(lines)


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="actorchat tree",
        description="Print the live supervision tree of a running node (its admin endpoint).",
    )
    parser.add_argument(
        "--node",
        type=_host_port,
        required=True,
        metavar="HOST:PORT",
        help="the node's admin listener (its --admin-host and --admin-port)",
    )
    parser.add_argument("--token", help=f"the node's admin token [{TOKEN_ENV}]")
    parser.add_argument(
        "--max-children",
        type=int,
        default=100,
        metavar="N",
        help="list at most N children under each supervisor (0: all); default 100",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON as received")
    args = parser.parse_args(list(argv))
    token = args.token or environ.get(TOKEN_ENV, "")
    if not token:
        parser.error(f"no admin token: give --token or set {TOKEN_ENV}")
    host, port = args.node
    try:
        answer = fetch_tree(host, port, token, max(args.max_children, 0))
    except TreeError as e:
        print(f"actorchat tree: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else format_tree(answer))
    return 0
