"""Passwords (scrypt) and session tokens (HMAC-signed, checked without a database).

Hashing a password costs about 50 ms of CPU and 16 MiB of memory on purpose (scrypt is
memory-hard, so guessing on GPUs is dear). Never call `hash_password` or `verify_password` on the
trio loop: use ``await trio.to_thread.run_sync(verify_password, password, stored)``.

A token is ``<payload>.<mac>``, both base64url without padding; the payload is
``v1:<expiry>:<user>`` (expiry in whole seconds since the epoch) and the mac is HMAC-SHA256 of it
under a key derived from the node's secret. Every node sharing the secret accepts the token, so a
user resumes on any node. Tokens cannot be revoked before they expire; keep `ttl` modest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from functools import cache

from actorchat.protocol import USER_NAME_PATTERN

__all__ = [
    "BadToken",
    "ExpiredToken",
    "ForgedToken",
    "MalformedToken",
    "TokenSigner",
    "hash_password",
    "valid_user_name",
    "verify_password",
]

_user_name = re.compile(USER_NAME_PATTERN)


def valid_user_name(name: str) -> bool:
    """1 to 64 ASCII letters, digits, `_`, `-` or `.`: the same rule as the protocol's."""
    return isinstance(name, str) and _user_name.match(name) is not None


# -- passwords -------------------------------------------------------------------------------

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024
# Bounds on parameters read back from storage, so a corrupted row cannot ask for gigabytes.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    secret = password.encode("utf-8", "surrogatepass")
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=dklen)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding; raises ValueError on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """A self-describing hash: ``scrypt$16384$8$1$<salt>$<hash>`` (base64url). Blocking: ~50 ms."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches `stored` (from `hash_password`). Blocking: ~50 ms.

    Pass ``stored=None`` for a user that does not exist: the same work is done against a dummy
    hash and False returned, so timing does not tell which user names exist. Raises ValueError
    if `stored` is not a hash this module wrote.
    """
    if stored is None:
        verify_password(password, _dummy_hash())
        return False
    try:
        scheme, n_text, r_text, p_text, salt_text, hash_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = _unb64(salt_text), _unb64(hash_text)
    except ValueError:
        raise ValueError("not a password hash written by actorchat.auth") from None
    if scheme != "scrypt" or not (1 < n <= _MAX_N and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        raise ValueError(f"unsupported password hash parameters: {scheme} n={n} r={r} p={p}")
    if n & (n - 1) or not expected:
        raise ValueError("scrypt n must be a power of two and the hash non-empty")
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected)


# -- tokens ----------------------------------------------------------------------------------


class BadToken(Exception):
    """A token that must not open a session; the node answers ``bad_credentials``."""


class MalformedToken(BadToken):
    """Not a token at all: wrong shape, bad base64, unreadable payload."""


class ForgedToken(BadToken):
    """Well formed, but the signature does not match: not issued with this secret."""


class ExpiredToken(BadToken):
    """Genuine, but past its expiry."""


_TOKEN_VERSION = "v1"


class TokenSigner:
    """Issues and checks tokens for one secret; nodes of one chat must share the secret."""

    def __init__(self, secret: bytes, ttl: float) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        # A key for this one purpose, so the raw secret can serve other uses safely.
        self._key = hmac.new(secret, b"actorchat session token", hashlib.sha256).digest()
        self.ttl = ttl

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, user: str, now: float) -> str:
        """A token for `user`, valid until ``now + ttl`` (rounded up to a whole second)."""
        if not valid_user_name(user):
            raise ValueError(f"not a user name: {user!r}")
        expiry = math.ceil(now + self.ttl)
        payload = f"{_TOKEN_VERSION}:{expiry}:{user}".encode("ascii")
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def verify(self, token: str, now: float) -> str:
        """The user the token was issued to; raises `MalformedToken`, `ForgedToken` or
        `ExpiredToken` (all `BadToken`). The signature is checked before anything is trusted."""
        try:
            payload_text, mac_text = token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, AttributeError, binascii.Error):
            raise MalformedToken("not a token") from None
        if not payload or len(mac) != hashlib.sha256().digest_size:
            raise MalformedToken("not a token")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise ForgedToken("token signature does not match")
        try:
            version, expiry_text, user = payload.decode("ascii").split(":")
            expiry = int(expiry_text)
        except ValueError:
            raise MalformedToken("unreadable token payload") from None
        if version != _TOKEN_VERSION or not valid_user_name(user):
            raise MalformedToken("unsupported token payload")
        if now >= expiry:
            raise ExpiredToken("token expired")
        return user
