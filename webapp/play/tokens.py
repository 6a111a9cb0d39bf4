"""Signed values a voter's browser carries: the voter cookie, pair tokens, a CSRF token.

Both the voter cookie and the pair token are HMAC-SHA256 signed with a key derived
from SECRET_KEY (one key per purpose), and say nothing but what they must:

- voter cookie ``dope_voter``: ``<voter id>.<mac>``; the voter id is random.
- pair token: ``<nonce>.<voter id>.<issued, unix seconds in hex>.<mac>``; the nonce
  is random and names an issued_token row, so only the database knows the pair.

A fixed format is checked before the MAC, so malformed input costs nothing and never
reaches a decoder. (They replaced itsdangerous's JSON tokens and Flask's session
cookie on the game's hot path: the same guarantees at a tenth of the cost.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time

from flask import current_app, session

MAX_TOKEN_CHARS = 512
VOTER_COOKIE = "dope_voter"
VOTER_RE = re.compile(r"^[0-9a-f]{32}$")
_MAC = r"[A-Za-z0-9_-]{43}"
_VOTER_COOKIE_RE = re.compile(rf"^([0-9a-f]{{32}})\.({_MAC})$")
_TOKEN_RE = re.compile(rf"^([0-9a-f]{{32}})\.([0-9a-f]{{32}})\.([0-9a-f]{{1,12}})\.({_MAC})$")
CLOCK_SKEW = 60  # seconds a token may seem to come from the future (several servers)


class TokenError(Exception):
    """A pair token is not acceptable; status says which HTTP code explains why."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def new_voter_id() -> str:
    """Return a random, non-sequential anonymous voter id."""
    return secrets.token_hex(16)


def _clock() -> float:
    return time.time()


def _keys() -> tuple[bytes, bytes]:
    """Return the (voter cookie, pair token) keys derived from SECRET_KEY (cached)."""
    secret = current_app.config["SECRET_KEY"]
    cached = current_app.extensions.get("dope_keys")
    if cached is None or cached[0] != secret:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        cached = current_app.extensions["dope_keys"] = (
            secret, hmac.digest(raw, b"dope-voter-cookie", hashlib.sha256),
            hmac.digest(raw, b"dope-pair-token", hashlib.sha256))
    return cached[1], cached[2]


def _mac(key: bytes, message: str) -> str:
    digest = hmac.digest(key, message.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def voter_cookie(voter_id: str) -> str:
    """Return the signed cookie value for a voter id."""
    return f"{voter_id}.{_mac(_keys()[0], voter_id)}"


VERIFIED_COOKIES_KEPT = 4096


def read_voter_cookie(value: str | None) -> str | None:
    """Return the voter id of a valid voter cookie, None for anything else.

    Each worker remembers the cookie values it has verified (up to 4,096, per key):
    a voter's every request carries the same one.
    """
    key = _keys()[0]
    verified = current_app.extensions.get("dope_verified_voters")
    if verified is None or verified[0] is not key or len(verified[1]) >= VERIFIED_COOKIES_KEPT:
        verified = current_app.extensions["dope_verified_voters"] = (key, {})
    voter_id = verified[1].get(value)
    if voter_id is not None:
        return voter_id
    match = _VOTER_COOKIE_RE.match(value) if value else None
    if match is None:
        return None
    voter_id, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(key, voter_id)):
        return None
    verified[1][value] = voter_id
    return voter_id


def make_pair_token(nonce: str, voter_id: str) -> str:
    """Sign a nonce for a voter; the pair behind it is known only to the database."""
    body = f"{nonce}.{voter_id}.{int(_clock()):x}"
    return f"{body}.{_mac(_keys()[1], body)}"


def read_pair_token(token: str, voter_id: str | None) -> str:
    """Return the nonce of a valid token for this voter, or raise TokenError."""
    match = _TOKEN_RE.match(token) if len(token) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise TokenError(400, "bad_token", "The token is not valid.")
    nonce, owner, issued, mac = match.groups()
    if not hmac.compare_digest(mac, _mac(_keys()[1], f"{nonce}.{owner}.{issued}")):
        raise TokenError(400, "bad_token", "The token is not valid.")
    age = _clock() - int(issued, 16)
    if age < -CLOCK_SKEW:
        raise TokenError(400, "bad_token", "The token is not valid.")
    if age > current_app.config["DOPE_TOKEN_TTL"]:
        raise TokenError(400, "expired_token", "The token has expired; fetch a new pair.")
    if voter_id is None or not hmac.compare_digest(owner, voter_id):
        raise TokenError(403, "wrong_session", "This token belongs to another session.")
    return nonce


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def csrf_ok(submitted: str | None) -> bool:
    """Return True when a submitted form token matches the session's."""
    expected = session.get("csrf")
    return bool(expected and submitted) and hmac.compare_digest(str(submitted), expected)
