"""actorchat.config: command line over environment over defaults, and clear errors."""

from __future__ import annotations

import pytest

from actorchat.config import Settings, SettingsError, normalize_database_url, parse_settings
from actorchat.protocol import SessionLimits

SECRET = "0123456789abcdef0123"


def test_defaults() -> None:
    s = parse_settings([], {})
    assert (s.host, s.port, s.log_level) == ("127.0.0.1", 8765, "INFO")
    assert s.database_url == "sqlite+aiosqlite:///actorchat.db"
    assert s.node_name.endswith("-8765") or s.node_name == "node1"
    assert s.token_ttl == 7 * 24 * 3600
    assert (s.max_frame_bytes, s.max_body_bytes) == (65536, 16384)
    assert s.ephemeral_secret and len(s.secret) == 32
    assert parse_settings([], {}).secret != s.secret
    assert s.session_limits() == SessionLimits()


def test_command_line_over_environment_over_default() -> None:
    env = {"ACTORCHAT_PORT": "9000", "ACTORCHAT_HOST": "0.0.0.0", "ACTORCHAT_SECRET": SECRET}
    s = parse_settings(["--port", "9100"], env)
    assert (s.port, s.host) == (9100, "0.0.0.0")
    assert s.secret == SECRET.encode() and not s.ephemeral_secret
    assert s.node_name.endswith("-9100") or s.node_name == "node1"


def test_empty_environment_variable_counts_as_unset() -> None:
    assert parse_settings([], {"ACTORCHAT_PORT": ""}).port == 8765


def test_every_option_has_an_environment_variable() -> None:
    env = {
        "ACTORCHAT_HOST": "::1", "ACTORCHAT_PORT": "0", "ACTORCHAT_NODE_NAME": "n-1",
        "ACTORCHAT_DATABASE_URL": "sqlite:///x.db", "ACTORCHAT_LOG_LEVEL": "debug",
        "ACTORCHAT_SECRET": SECRET, "ACTORCHAT_TOKEN_TTL": "12h",
        "ACTORCHAT_MAX_FRAME_BYTES": "128KiB", "ACTORCHAT_MAX_BODY_BYTES": "32k",
        "ACTORCHAT_MESSAGES_PER_SECOND": "2.5", "ACTORCHAT_MESSAGE_BURST": "5",
        "ACTORCHAT_TYPING_PER_SECOND": "1", "ACTORCHAT_TYPING_BURST": "2",
        "ACTORCHAT_MAX_BAD_FRAMES": "3", "ACTORCHAT_MAX_UNAUTHENTICATED_FRAMES": "4",
        "ACTORCHAT_IDLE_TIMEOUT": "5m", "ACTORCHAT_ACK_TIMEOUT": "250ms",
        "ACTORCHAT_MAILBOX_BOUND": "10", "ACTORCHAT_SEND_QUEUE_BOUND": "11",
        "ACTORCHAT_SEND_STALL_TIMEOUT": "1.5", "ACTORCHAT_MAX_MEDIA_BYTES": "1M",
        "ACTORCHAT_MEDIA_DIR": "/tmp/m",
    }
    s = parse_settings([], env)
    assert s == Settings(
        host="::1", port=0, node_name="n-1", database_url="sqlite+aiosqlite:///x.db",
        log_level="DEBUG", secret=SECRET.encode(), token_ttl=43200.0,
        max_frame_bytes=131072, max_body_bytes=32768, messages_per_second=2.5, message_burst=5,
        typing_per_second=1.0, typing_burst=2, max_bad_frames=3, max_unauthenticated_frames=4,
        idle_timeout=300.0, ack_timeout=0.25, mailbox_bound=10, send_queue_bound=11,
        send_stall_timeout=1.5, max_media_bytes=1048576, media_dir="/tmp/m",
    )
    assert s.session_limits().max_bad_frames == 3


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
    ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
    ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
    ("sqlite:///rel.db", "sqlite+aiosqlite:///rel.db"),
    ("sqlite:////abs/path.db", "sqlite+aiosqlite:////abs/path.db"),
    ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ("sqlite://", "sqlite+aiosqlite://"),
])
def test_normalize_database_url(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u:hunter2@h/db", "postgresql+psycopg2://h/db", "x.db"])
def test_unsupported_database_url_does_not_echo_the_password(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SettingsError):
        normalize_database_url(url)
    with pytest.raises(SystemExit):
        parse_settings(["--database-url", url], {})
    assert "hunter2" not in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--port", "abc"], {}, "argument --port: invalid int value: 'abc'"),
    ([], {"ACTORCHAT_PORT": "abc"}, "environment variable ACTORCHAT_PORT: invalid int value"),
    ([], {"ACTORCHAT_PORT": "70000"}, "environment variable ACTORCHAT_PORT: must be between"),
    (["--port", "-1"], {}, "argument --port: must be >= 0"),
    (["--log-level", "loud"], {}, "argument --log-level: invalid choice"),
    ([], {"ACTORCHAT_TOKEN_TTL": "soon"}, "ACTORCHAT_TOKEN_TTL: invalid duration"),
    (["--idle-timeout", "0"], {}, "argument --idle-timeout: invalid duration"),
    (["--max-frame-bytes", "64 parsecs"], {}, "invalid size"),
    (["--message-burst", "0"], {}, "argument --message-burst: must be > 0"),
    (["--messages-per-second", "fast"], {}, "invalid float value: 'fast'"),
    (["--secret", "short"], {}, "argument --secret: must be at least 16 bytes"),
    (["--node-name", "a b"], {}, "argument --node-name: 1 to 64"),
    (["--host", " "], {}, "argument --host: must not be empty"),
    (["--max-body-bytes", "1M"], {}, "argument --max-body-bytes: must not be over max_frame"),
    ([], {"ACTORCHAT_MAX_BODY_BYTES": "1M"}, "variable ACTORCHAT_MAX_BODY_BYTES: must not be"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
])
def test_bad_values_exit_like_argparse_naming_their_source(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv, env)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: actorchat")
    assert message in err


def test_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_settings(["--help"], {})
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for name in Settings.__dataclass_fields__:
        if name != "ephemeral_secret":
            assert f"--{name.replace('_', '-')}" in out
            assert f"ACTORCHAT_{name.upper()}" in out


def test_settings_validate_when_built_directly() -> None:
    with pytest.raises(SettingsError, match="max_body_bytes"):
        Settings(max_frame_bytes=100, max_body_bytes=200)
    with pytest.raises(SettingsError, match="mailbox_bound"):
        Settings(mailbox_bound=0)
    assert "secret" not in repr(Settings()).replace("ephemeral_secret", "")


def test_operations_options_from_environment_and_command_line() -> None:
    env = {
        "ACTORCHAT_LOG_FORMAT": "JSON", "ACTORCHAT_TLS_CERT": "/etc/c.pem",
        "ACTORCHAT_TLS_KEY": "/etc/k.pem", "ACTORCHAT_ADMIN_PORT": "0",
        "ACTORCHAT_ADMIN_TOKEN": "t" * 16,
    }
    s = parse_settings(["--admin-host", "10.0.0.5"], env)
    assert (s.log_format, s.tls_cert, s.tls_key) == ("json", "/etc/c.pem", "/etc/k.pem")
    assert (s.admin_port, s.admin_host, s.admin_token) == (0, "10.0.0.5", "t" * 16)
    assert "t" * 16 not in repr(s)
    d = parse_settings([], {})
    assert (d.log_format, d.tls_cert, d.admin_port, d.admin_host) == (
        "text", None, None, "127.0.0.1"
    )


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--log-format", "xml"], {}, "argument --log-format: invalid choice: 'xml'"),
    (["--tls-cert", "c.pem"], {}, "argument --tls-cert: needs --tls-key (or ACTORCHAT_TLS_KEY)"),
    ([], {"ACTORCHAT_TLS_KEY": "k.pem"}, "variable ACTORCHAT_TLS_KEY: needs --tls-cert"),
    (["--admin-port", "9000"], {}, "argument --admin-port: the admin listener needs a token"),
    (["--admin-port", "9000", "--admin-token", "short"], {},
     "argument --admin-token: must be at least 16 characters"),
    (["--port", "9000", "--admin-port", "9000"], {"ACTORCHAT_ADMIN_TOKEN": "t" * 16},
     "argument --admin-port: must differ from --port"),
    (["--admin-port", "70000"], {"ACTORCHAT_ADMIN_TOKEN": "t" * 16},
     "argument --admin-port: must be between 0 and 65535"),
])
def test_bad_operations_options_say_what_is_wrong(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv, env)
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
