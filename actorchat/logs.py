"""Logs: one line per event, readable text by default or one JSON object a line.

Every line can carry structured fields (``extra={"ctx": {...}}``): the text format appends
them as ``key=value``, the JSON format as keys of the object. Lines of a message's life go to
the ``actorchat.message`` logger at DEBUG, each with the ids that follow one message across
nodes: ``sender`` and ``id`` (the client's id, the same on every node), ``recipient``, ``mid``
(the recipient's mailbox key, once it has one) and ``node``. Callers guard them with
``MESSAGES.isEnabledFor(logging.DEBUG)``, so they cost one check when the level is higher.

Events, in the order of a message's life (docs/operations.md):

``received``   the sender's connection handed the message to the recipient's mailbox
``queued``     the recipient's mailbox took it and gave it a ``mid``
``duplicate``  a retried id, dropped (accepted again once the first is)
``refused``    not taken: the store is behind (the sender hears ``unavailable``)
``delivered``  written towards the recipient's connection (again after a reconnect)
``stored``     committed to the database
``accepted``   the sender is told ``accepted``
``acked``      the recipient acknowledged it (the sender gets a ``delivered`` receipt)
``drained``    its stored row is deleted, the recipient having acknowledged it
``loaded``     paged back from the database into the mailbox
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any

__all__ = [
    "MESSAGES",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "trace",
    "trace_ids",
    "trace_items",
]

MESSAGES = logging.getLogger("actorchat.message")
NOISY_LOGGERS = ("trio-websocket",)

# Attributes every LogRecord has: anything else given in `extra` is a field of the line.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "ctx"}
)


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    node = getattr(record, "node", None)
    if node is not None:
        fields["node"] = node
    ctx = getattr(record, "ctx", None)
    if isinstance(ctx, Mapping):
        fields.update((k, v) for k, v in ctx.items() if v is not None)
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and key != "node" and not key.startswith("_"):
            fields.setdefault(key, value)
    return fields


class NodeNameFilter(logging.Filter):
    """Stamps each record with the process's node name (a line's own ``node`` field wins:
    several nodes may share one process in tests)."""

    def __init__(self, node: str | None) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if self.node is not None and not hasattr(record, "node"):
            record.node = self.node
        return True


class TextFormatter(logging.Formatter):
    """``2026-11-28T19:40:00.123Z INFO actorchat.node: message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``msg``, the fields, and
    ``exc`` (the traceback as text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(
    level: str, log_format: str = "text", node: str | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one writing ``log_format`` lines to
    ``stream`` (stderr by default); returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(NodeNameFilter(node))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # trio-websocket logs every frame at DEBUG: DEBUG here means the node's own lines (a
    # message's life), not a line per WebSocket event of the library.
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))
    return handler


# -- a message's life ---------------------------------------------------------------------------
def trace(
    event: str,
    node: str,
    sender: str,
    id: str,
    recipient: str | None,
    mid: str | None = None,
    **more: Any,
) -> None:
    """One line of a message's life (call it under ``MESSAGES.isEnabledFor(DEBUG)``)."""
    ctx = {"event": event, "sender": sender, "id": id, "recipient": recipient, "mid": mid}
    ctx.update(more)
    ctx["node"] = node
    MESSAGES.debug(
        "message %s: %s/%s -> %s", event, sender, id, recipient, extra={"ctx": ctx}
    )


def trace_items(event: str, node: str, recipient: str, items: Iterable[Any]) -> None:
    """``trace`` for queue items (``sender``, ``id``, ``mid``)."""
    for item in items:
        trace(event, node, item.sender, item.id, recipient, item.mid)


def trace_ids(
    event: str,
    node: str,
    recipient: str,
    ids_by_sender: Mapping[str, Iterable[str]],
    mids: Mapping[tuple[str, str], int] | None = None,
) -> None:
    """``trace`` for ``{sender: [id, ...]}``; ``mids`` maps (sender, id) to a mailbox key."""
    for sender, ids in ids_by_sender.items():
        for id in ids:
            key = mids.get((sender, id)) if mids is not None else None
            trace(event, node, sender, id, recipient, None if key is None else str(key))
