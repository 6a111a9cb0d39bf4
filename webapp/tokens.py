"""Pair tokens (signed, single-use, bound to a voter) and a small session CSRF token."""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

PAIR_SALT = "dope-pair-token"
MAX_TOKEN_CHARS = 512


class TokenError(Exception):
    """A pair token is not acceptable; status says which HTTP code explains why."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def new_voter_id() -> str:
    """Return a random, non-sequential anonymous voter id."""
    return secrets.token_hex(16)


def _serializer() -> URLSafeTimedSerializer:
    # Built once per app and key: building one derives its signing key (a hash) anew.
    key = current_app.config["SECRET_KEY"]
    cached = current_app.extensions.get("dope_pair_serializer")
    if cached is None or cached[0] != key:
        cached = current_app.extensions["dope_pair_serializer"] = (
            key, URLSafeTimedSerializer(key, salt=PAIR_SALT))
    return cached[1]


def make_pair_token(nonce: str, voter_id: str) -> str:
    """Sign a nonce for a voter; the pair behind it is known only to the database."""
    return _serializer().dumps({"n": nonce, "v": voter_id})


def read_pair_token(token: str, voter_id: str | None) -> str:
    """Return the nonce of a valid token for this voter, or raise TokenError."""
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(400, "bad_token", "The token is not valid.")
    try:
        payload = _serializer().loads(token, max_age=current_app.config["DOPE_TOKEN_TTL"])
    except SignatureExpired as exc:
        raise TokenError(400, "expired_token", "The token has expired; fetch a new pair.") \
            from exc
    except (BadSignature, ValueError, TypeError, UnicodeError) as exc:
        raise TokenError(400, "bad_token", "The token is not valid.") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("n"), str) \
            or not isinstance(payload.get("v"), str):
        raise TokenError(400, "bad_token", "The token is not valid.")
    if voter_id is None or not hmac.compare_digest(payload["v"], voter_id):
        raise TokenError(403, "wrong_session", "This token belongs to another session.")
    return payload["n"]


def csrf_token() -> str:
    """Return this session's CSRF token, creating it on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def csrf_ok(submitted: str | None) -> bool:
    """Return True when a submitted form token matches the session's."""
    expected = session.get("csrf")
    return bool(expected and submitted) and hmac.compare_digest(str(submitted), expected)
