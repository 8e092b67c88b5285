"""A node's settings: command line over ``ACTORCHAT_<NAME>`` environment variables over defaults.

`parse_settings(argv, environ)` is pure apart from reading the host name and making a random
secret: no files, no logging. A bad value exits like argparse does (status 2, usage on stderr),
naming the option or the environment variable it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actorchat.protocol import SessionLimits

__all__ = ["Settings", "SettingsError", "normalize_database_url", "parse_settings"]

_LIMITS = SessionLimits()
_DEFAULT_PORT = 8765
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
BLOB_STORES = ("fs", "s3")
_ZERO_OK = ("port", "admin_port")  # 0: any free port
_NODE_NAME = re.compile(r"\A[A-Za-z0-9_.\-]{1,64}\Z")


class SettingsError(ValueError):
    """A setting that is invalid on its own or together with another one."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node is configured with. Durations are seconds, sizes bytes."""

    host: str = "127.0.0.1"
    port: int = _DEFAULT_PORT
    database_url: str = "sqlite+aiosqlite:///actorchat.db"
    node_name: str = "node1"
    log_level: str = "INFO"
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    ephemeral_secret: bool = False
    """True when no secret was configured and a random one was made: log a warning at start,
    since tokens will not survive a restart nor work on another node."""
    token_ttl: float = 7 * 24 * 3600.0
    max_frame_bytes: int = _LIMITS.max_frame_bytes
    max_body_bytes: int = _LIMITS.max_body_bytes
    messages_per_second: float = _LIMITS.messages_per_second
    message_burst: int = _LIMITS.message_burst
    typing_per_second: float = _LIMITS.typing_per_second
    typing_burst: int = _LIMITS.typing_burst
    max_bad_frames: int = _LIMITS.max_bad_frames
    max_unauthenticated_frames: int = _LIMITS.max_unauthenticated_frames
    idle_timeout: float = 300.0
    ack_timeout: float = 10.0
    mailbox_bound: int = 1000
    send_queue_bound: int = 256
    send_stall_timeout: float = 30.0
    max_media_bytes: int = 16 * 1024 * 1024
    media_dir: str = "actorchat-media"
    # Media blobs (docs/operations.md): the filesystem under media_dir, or an S3-compatible
    # bucket (credentials from the usual AWS environment variables / profile / role).
    blob_store: str = "fs"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    migrate: bool = True
    db_pool_size: int = 5
    db_statement_timeout: float = 5.0
    db_wait: float = 30.0
    # The cluster (docs/operations.md, "Cluster"): on with a secret, off (one node) without.
    cluster_secret: bytes | None = field(default=None, repr=False)
    cluster_lease: float = 5.0
    """Seconds a member's lease lasts; renewed every lease/4. A node down is seen within it."""
    cluster_address: str | None = None
    """The ws:// URL peers dial for this node's link (default ws://HOST:PORT/cluster/link)."""
    presence_grace: float = 5.0
    """Seconds a user whose last connection closed still counts as online (no flap)."""
    # Operations (docs/operations.md): log format, TLS, the admin listener.
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    admin_port: int | None = None
    """The admin listener (``/admin/tree``) is off unless a port is set (0: any free port)."""
    admin_host: str = "127.0.0.1"
    admin_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError("port", "must be between 0 and 65535")
        self._check_operations()
        self._check_blob_store()
        if not _NODE_NAME.match(self.node_name):
            raise SettingsError("node_name", "1 to 64 letters, digits, `_`, `-` or `.`")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError("log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        if len(self.secret) < 16:
            raise SettingsError("secret", "must be at least 16 bytes")
        if self.max_body_bytes > self.max_frame_bytes:
            raise SettingsError("max_body_bytes", "must not be over max_frame_bytes")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) in (int, float) and f.name not in _ZERO_OK and not value > 0:
                raise SettingsError(f.name, "must be positive")

    def _check_operations(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise SettingsError("log_format", f"must be one of {', '.join(LOG_FORMATS)}")
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("tls_cert", "tls_key") if self.tls_key is None else (
                "tls_key", "tls_cert")
            raise SettingsError(
                given,
                f"needs --{missing.replace('_', '-')} (or {_env_name(missing)}) too: "
                "a certificate and its private key go together",
            )
        if self.admin_port is None:
            return
        if not 0 <= self.admin_port <= 65535:
            raise SettingsError("admin_port", "must be between 0 and 65535")
        if self.admin_port and self.admin_port == self.port:
            raise SettingsError("admin_port", "must differ from --port")
        if self.admin_token is None:
            raise SettingsError(
                "admin_port",
                "the admin listener needs a token: set ACTORCHAT_ADMIN_TOKEN "
                "(or --admin-token) to at least 16 characters",
            )
        if len(self.admin_token) < 16:
            raise SettingsError("admin_token", "must be at least 16 characters")

    def _check_blob_store(self) -> None:
        if self.blob_store not in BLOB_STORES:
            raise SettingsError("blob_store", f"must be one of {', '.join(BLOB_STORES)}")
        if self.blob_store != "s3":
            return
        if not self.s3_bucket:
            raise SettingsError(
                "blob_store", "s3 needs a bucket: --s3-bucket (or ACTORCHAT_S3_BUCKET)"
            )
        from actorchat.blobs import boto3_missing

        if (why := boto3_missing()) is not None:
            raise SettingsError("blob_store", why)

    def session_limits(self) -> SessionLimits:
        """The per-connection limits for `actorchat.protocol.ServerSession`."""
        return SessionLimits(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(SessionLimits)}
        )


def normalize_database_url(url: str) -> str:
    """Name the async driver: ``postgres(ql)://`` -> ``postgresql+asyncpg://``,
    ``sqlite://`` -> ``sqlite+aiosqlite://``. Other schemes raise `SettingsError`."""
    scheme, sep, rest = url.partition("://")
    scheme = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }.get(scheme, scheme)
    if not sep or scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        # The URL may hold a password: name only its scheme.
        raise SettingsError(
            "database_url",
            f"unsupported scheme {scheme!r}; use postgresql://... or sqlite:///path",
        )
    return f"{scheme}://{rest}"


# -- parsing ---------------------------------------------------------------------------------


def _number(kind: type, *, minimum: float = 0, inclusive: bool = False) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if value < minimum or (value == minimum and not inclusive):
            bound = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {bound} {minimum}, got {text!r}")
        return value

    return convert


_UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {
    unit + suffix: 1024**power
    for power, unit in enumerate(("", "k", "m", "g"))
    for suffix in (("", "b") if not unit else ("", "b", "ib"))
}


def _duration(text: str) -> float:
    """Seconds: ``300``, ``1.5``, ``250ms``, ``30s``, ``5m``, ``2h``, ``7d``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*", text.lower())
    if not match or match[2] not in _UNITS or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration: {text!r} (e.g. 30, 250ms, 5m, 7d)")
    return float(match[1]) * _UNITS[match[2]]


def _size(text: str) -> int:
    """Bytes: ``65536``, ``64KiB``, ``16M`` (K, M, G are powers of 1024, with or without iB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]*)\s*", text.lower())
    if not match or match[2] not in _SIZES or int(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"invalid size: {text!r} (e.g. 65536, 64KiB, 16MiB)")
    return int(match[1]) * _SIZES[match[2]]


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {LOG_LEVELS})")
    return text.upper()


def _blob_store(text: str) -> str:
    if text.strip().lower() not in BLOB_STORES:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {BLOB_STORES})")
    return text.strip().lower()


def _log_format(text: str) -> str:
    if text.strip().lower() not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {LOG_FORMATS})")
    return text.strip().lower()


def _database_url(text: str) -> str:
    try:
        return normalize_database_url(text.strip())
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _secret(text: str) -> bytes:
    secret = text.encode("utf-8")
    if len(secret) < 16:
        raise argparse.ArgumentTypeError("must be at least 16 bytes (try: openssl rand -hex 32)")
    return secret


_positive_int = _number(int)
_positive_float = _number(float)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise argparse.ArgumentTypeError("must be yes or no")


# (field, converter, help). Each becomes --field-name and ACTORCHAT_FIELD_NAME.
_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("host", _text, "address to listen on"),
    ("port", _number(int, inclusive=True), "port for WebSocket and HTTP (0: any free port)"),
    (
        "database_url",
        _database_url,
        "SQLAlchemy URL: postgresql://user:pw@host/db (asyncpg) or sqlite:///file.db (aiosqlite)",
    ),
    ("node_name", _text, "this node's name in the cluster (default: <hostname>-<port>)"),
    ("log_level", _log_level, f"one of {', '.join(LOG_LEVELS)}"),
    (
        "secret",
        _secret,
        "token signing secret, the same on every node (prefer the environment variable: a command "
        "line is visible to other users); default: random, so tokens die with the process",
    ),
    ("token_ttl", _duration, "how long a login token stays valid (e.g. 7d, 12h)"),
    ("max_frame_bytes", _size, "largest client frame; larger ones get too_large"),
    ("max_body_bytes", _size, "largest message body, UTF-8 bytes; larger ones get too_large"),
    ("messages_per_second", _positive_float, "send frames a connection may make per second"),
    ("message_burst", _positive_int, "send frames a connection may make at once"),
    ("typing_per_second", _positive_float, "typing frames a connection may make per second"),
    ("typing_burst", _positive_int, "typing frames a connection may make at once"),
    ("max_bad_frames", _positive_int, "bad frames in a row before the connection is closed"),
    (
        "max_unauthenticated_frames",
        _positive_int,
        "frames a connection may send before welcome, then it is closed",
    ),
    ("idle_timeout", _duration, "close a connection silent for this long"),
    ("ack_timeout", _duration, "store a delivered message not acknowledged within this"),
    ("mailbox_bound", _positive_int, "messages a mailbox holds in memory; more go to storage"),
    ("send_queue_bound", _positive_int, "frames queued for one socket"),
    ("send_stall_timeout", _duration, "close a socket whose full queue drains nothing for this"),
    ("max_media_bytes", _size, "largest media upload; larger ones get 413"),
    ("media_dir", _text, "directory of the filesystem blob store"),
    ("blob_store", _blob_store, "where media blobs go: fs (--media-dir) or s3 (--s3-bucket)"),
    ("s3_bucket", _text, "bucket of the s3 blob store"),
    (
        "s3_endpoint_url",
        _text,
        "URL of an S3-compatible server (MinIO, Ceph...); unset: AWS S3",
    ),
    ("s3_region", _text, "region of the s3 bucket (or AWS_DEFAULT_REGION)"),
    (
        "migrate",
        _bool,
        "upgrade the database schema at start (yes/no); "
        "`python -m actorchat migrate` does it alone",
    ),
    ("db_pool_size", _positive_int, "database connections the store keeps open"),
    ("db_statement_timeout", _duration, "longest a database statement may run"),
    (
        "cluster_secret",
        _secret,
        "join the cluster of the nodes on the same database that share this secret "
        "(at least 16 bytes; prefer the environment variable); default: no cluster",
    ),
    ("cluster_lease", _duration, "membership lease: a node silent this long is down"),
    (
        "cluster_address",
        _text,
        "the ws:// URL other nodes dial for this node's link "
        "(default ws://HOST:PORT/cluster/link)",
    ),
    (
        "db_wait",
        _duration,
        "at start, how long to keep retrying an unreachable database before exiting",
    ),
    (
        "presence_grace",
        _duration,
        "a user whose last connection closed is shown offline after this (no flap on reconnect)",
    ),
    ("log_format", _log_format, "text (one readable line per event) or json (one object a line)"),
    ("tls_cert", _text, "PEM certificate (chain) file: serve wss:// and https:// directly"),
    ("tls_key", _text, "PEM private key file of --tls-cert"),
    (
        "admin_port",
        _number(int, inclusive=True),
        "port of the admin listener (`python -m actorchat tree`); off when unset",
    ),
    ("admin_host", _text, "address of the admin listener (keep it on loopback or a private net)"),
    (
        "admin_token",
        _text,
        "bearer token the admin listener requires (prefer the environment variable)",
    ),
)


def _env_name(name: str) -> str:
    return f"ACTORCHAT_{name.upper()}"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actorchat",
        description="Run one actorchat node.",
        epilog="Every option can also be set by the environment variable shown beside it. "
        "The command line wins over the environment, the environment over the default.",
    )
    defaults = Settings()
    for name, convert, help_text in _OPTIONS:
        hidden = name in ("secret", "node_name", "admin_token", "cluster_secret")
        default = "" if hidden else f"; default {getattr(defaults, name)}"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=convert,
            default=None,
            metavar=name.upper(),
            help=f"{help_text} [{_env_name(name)}{default}]",
        )
    return parser


def _default_node_name(port: int) -> str:
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:48]
    return f"{host}-{port}" if host else "node1"


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Settings from the command line (without the program name) and the environment.

    Exits with status 2 and a usage message on a bad value (and status 0 after ``--help``).
    """
    parser = _build_parser()
    args = vars(parser.parse_args(list(argv)))
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, convert, _ in _OPTIONS:
        if args[name] is not None:
            values[name], source[name] = args[name], "argument --" + name.replace("_", "-")
            continue
        text = environ.get(_env_name(name), "")
        if text:
            try:
                values[name] = convert(text)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"environment variable {_env_name(name)}: {exc}")
            source[name] = f"environment variable {_env_name(name)}"
    if "node_name" not in values:
        values["node_name"] = _default_node_name(values.get("port", _DEFAULT_PORT))
    if "secret" not in values:
        values["ephemeral_secret"] = True
    try:
        return Settings(**values)
    except SettingsError as exc:
        where = source.get(exc.name, exc.name)
        parser.error(f"{where}: {exc.message}")
        raise  # unreachable: parser.error exits
