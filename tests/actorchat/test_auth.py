"""actorchat.auth: scrypt password hashes and HMAC-signed tokens."""

from __future__ import annotations

import base64

import pytest

from actorchat.auth import (
    BadToken,
    ExpiredToken,
    ForgedToken,
    MalformedToken,
    TokenSigner,
    hash_password,
    valid_user_name,
    verify_password,
)

SECRET = b"s" * 32


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse")


def test_hash_is_self_describing_and_salted(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.urlsafe_b64decode(salt + "==")) == 16
    assert len(base64.urlsafe_b64decode(digest + "=")) == 32
    assert hash_password("correct horse") != stored  # a new salt every time


def test_verify_password(stored: str) -> None:
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)


def test_verify_password_for_a_missing_user_does_the_work_and_fails() -> None:
    assert verify_password("anything", None) is False


def test_non_ascii_password() -> None:
    stored = hash_password("pässwörd 🔑")
    assert verify_password("pässwörd 🔑", stored)
    assert not verify_password("passwörd 🔑", stored)


@pytest.mark.parametrize("bad", [
    "", "plain", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA",
    "scrypt$1073741824$8$1$AAAA$AAAA",  # would need gigabytes: refused, not attempted
    "scrypt$1000$8$1$AAAA$AAAA",  # n not a power of two
    "scrypt$16384$8$1$AA*A$AAAA", "scrypt$16384$8$1$AAAA$",
])
def test_verify_password_rejects_a_stored_value_it_did_not_write(bad: str) -> None:
    with pytest.raises(ValueError):
        verify_password("pw", bad)


@pytest.mark.parametrize(("name", "ok"), [
    ("alice", True), ("A.b-c_9", True), ("a" * 64, True), ("", False), ("a" * 65, False),
    ("a b", False), ("alice\n", False), ("ålice", False), ("a/b", False), ("a:b", False),
])
def test_valid_user_name(name: str, ok: bool) -> None:
    assert valid_user_name(name) is ok


def test_token_round_trip_until_expiry() -> None:
    signer = TokenSigner(SECRET, ttl=60.0)
    token = signer.issue("alice", now=1000.0)
    assert signer.verify(token, now=1000.0) == "alice"
    assert signer.verify(token, now=1059.9) == "alice"
    with pytest.raises(ExpiredToken):
        signer.verify(token, now=1060.0)


def test_token_from_another_secret_is_forged() -> None:
    token = TokenSigner(b"x" * 32, ttl=60.0).issue("alice", now=0.0)
    with pytest.raises(ForgedToken):
        TokenSigner(SECRET, ttl=60.0).verify(token, now=0.0)


def test_another_node_with_the_same_secret_accepts_the_token() -> None:
    token = TokenSigner(SECRET, ttl=60.0).issue("alice", now=0.0)
    assert TokenSigner(SECRET, ttl=1.0).verify(token, now=30.0) == "alice"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_tampered_user_or_expiry_is_forged() -> None:
    signer = TokenSigner(SECRET, ttl=60.0)
    payload, mac = signer.issue("alice", now=0.0).split(".")
    assert base64.urlsafe_b64decode(payload + "==") == b"v1:60:alice"
    for tampered in (b"v1:60:mallory", b"v1:999999:alice"):
        with pytest.raises(ForgedToken):
            signer.verify(f"{_b64(tampered)}.{mac}", now=0.0)


@pytest.mark.parametrize("token", [
    "", "abc", "a.b.c", "!!!.???", "djE6NjA6YWxpY2U", ".", "a.", "\u00e9.\u00e9",
])
def test_malformed_token(token: str) -> None:
    with pytest.raises(MalformedToken):
        TokenSigner(SECRET, ttl=60.0).verify(token, now=0.0)


def test_bad_tokens_share_one_base_class() -> None:
    assert issubclass(ExpiredToken, BadToken)
    assert issubclass(ForgedToken, BadToken)
    assert issubclass(MalformedToken, BadToken)


def test_signer_refuses_weak_settings() -> None:
    with pytest.raises(ValueError):
        TokenSigner(b"short", ttl=60.0)
    with pytest.raises(ValueError):
        TokenSigner(SECRET, ttl=0)
    with pytest.raises(ValueError):
        TokenSigner(SECRET, ttl=60.0).issue("not a name", now=0.0)
