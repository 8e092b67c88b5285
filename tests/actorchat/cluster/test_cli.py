"""``python -m actorchat cluster``'s own options: the two it uses, not the node's list."""

from __future__ import annotations

import pytest

from actorchat.cluster._cli import parse


def test_the_help_lists_only_the_clusters_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse(["--help"], {})
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "python -m actorchat cluster" in text
    assert "--database-url" in text and "--cluster-secret" in text
    assert "--port" not in text and "--node-name" not in text and "--secret " not in text


def test_the_command_line_wins_over_the_environment_over_the_default() -> None:
    secret = "s" * 16
    env = {"ACTORCHAT_DATABASE_URL": "postgresql://db/env", "ACTORCHAT_CLUSTER_SECRET": secret}
    assert parse([], env) == ("postgresql+asyncpg://db/env", secret.encode())
    url, key = parse(["--database-url", "postgresql://db/cli"], env)
    assert (url, key) == ("postgresql+asyncpg://db/cli", secret.encode())
    url, key = parse([], {})
    assert url.startswith("sqlite") and key is None


def test_a_short_secret_is_refused_wherever_it_comes_from() -> None:
    with pytest.raises(SystemExit):
        parse(["--cluster-secret", "short"], {})
    with pytest.raises(SystemExit):
        parse([], {"ACTORCHAT_CLUSTER_SECRET": "short"})
