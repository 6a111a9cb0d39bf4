"""Every request limit, per address and per voter, shared by every worker and host
through the database.

A script that drops its cookie gets a new voter each time, so per-voter limits do
not stop it; the client's address does. Each (kind, address) has a token bucket
(`burst` requests at once, refilled at `rate` per second) and an hourly cap, kept
in the `rate_bucket` table and spent by one conditional UPDATE whose WHERE refuses
an empty bucket (a new address is inserted), inside the caller's transaction. A
refused request spends nothing. The address is the client's, as werkzeug's ProxyFix reads it behind
DOPE_TRUSTED_PROXIES proxies; IPv6 addresses count per /64, which one subscriber
usually holds whole.

Kinds and their settings (config.py; all per address):
- `pair`: DOPE_ADDRESS_PAIR_BURST, DOPE_ADDRESS_PAIR_RATE, DOPE_ADDRESS_PAIRS_PER_HOUR.
  Spent per pair served. A vote needs the token of a served pair and a token buys one
  vote, so this budget caps the address's votes too, at one statement per
  pair-and-vote instead of two (the vote's own checks stay per voter).
- `login`: DOPE_LOGIN_BURST, DOPE_LOGIN_RATE, DOPE_LOGINS_PER_HOUR (the team sign-in)

Per voter (the voter row's window and the issued tokens): DOPE_MAX_PAIRS_PER_HOUR,
DOPE_MAX_VOTES_PER_HOUR and DOPE_MIN_VOTE_INTERVAL_MS (`check_pair_rate`,
`claim_rate_slot`). A refusal is the API's 429 with how long to wait.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import time
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from webapp.extensions import db
from webapp.http import ApiError
from webapp.models import IssuedToken, RateBucket, Voter, utcnow
from webapp.play import fastsql

HOUR = 3600.0
SETTINGS = {
    "pair": ("DOPE_ADDRESS_PAIR_BURST", "DOPE_ADDRESS_PAIR_RATE", "DOPE_ADDRESS_PAIRS_PER_HOUR"),
    "login": ("DOPE_LOGIN_BURST", "DOPE_LOGIN_RATE", "DOPE_LOGINS_PER_HOUR"),
    "photo": ("DOPE_ADDRESS_PHOTO_BURST", "DOPE_ADDRESS_PHOTO_RATE",
              "DOPE_ADDRESS_PHOTOS_PER_HOUR"),
}

_T = RateBucket.__table__
_KEY = sa.bindparam("b_key", type_=sa.String())
_NOW = sa.bindparam("b_now", type_=sa.Float())
_BURST = sa.bindparam("b_burst", type_=sa.Float())
_RATE = sa.bindparam("b_rate", type_=sa.Float())
_CAP = sa.bindparam("b_cap", type_=sa.Integer())
_FILLED = _T.c.tokens + (_NOW - _T.c.updated_at) * _RATE
_REFILL = sa.case((_FILLED > _BURST, _BURST), else_=_FILLED)
_NEW_HOUR = _NOW - _T.c.hour_start >= HOUR


# An address seen before (nearly every request) costs one conditional UPDATE; only a
# new one, or a refusal, costs a second statement.
_SPEND = fastsql.Prepared(
    sa.update(_T).where(_T.c.key == _KEY, _REFILL >= 1,
                        sa.or_(_NEW_HOUR, _T.c.hour_count < _CAP))
    .values(tokens=_REFILL - 1, updated_at=_NOW,
            hour_start=sa.case((_NEW_HOUR, _NOW), else_=_T.c.hour_start),
            hour_count=sa.case((_NEW_HOUR, 1), else_=_T.c.hour_count + 1))
    .returning(_T.c.tokens))


def _first_statement(insert):
    # A race with another worker's first request from the same address: nothing is
    # inserted, and the caller reads the row that worker wrote.
    return fastsql.Prepared(
        insert(_T).values(key=_KEY, tokens=_BURST - 1, updated_at=_NOW, hour_start=_NOW,
                          hour_count=1).on_conflict_do_nothing(index_elements=[_T.c.key])
        .returning(_T.c.tokens))


_FIRST = {"sqlite": _first_statement(sqlite.insert),
          "postgresql": _first_statement(postgresql.insert)}
_READ = fastsql.Prepared(sa.select(_T.c.tokens, _T.c.updated_at, _T.c.hour_start,
                                   _T.c.hour_count).where(_T.c.key == _KEY))


@functools.lru_cache(maxsize=4096)
def address_key(address: str | None) -> str:
    """Return the counted form of a client address: IPv4 as it is, IPv6 as its /64."""
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def origin(secret, address: str | None) -> str:
    """Return a keyed hash of the client's address as the limits count it (16 hex
    digits): what the voter model groups votes by to see one address behind many
    cookies. The address itself is never stored."""
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    return _origin(raw, address_key(address))


@functools.lru_cache(maxsize=4096)
def _origin(secret: bytes, key: str) -> str:
    return hmac.new(hmac.digest(secret, b"dope-origin", hashlib.sha256), key.encode(),
                    hashlib.sha256).hexdigest()[:16]


def _params(config, kind: str, address: str | None, now: float) -> dict | None:
    burst, rate, cap = (config[name] for name in SETTINGS[kind])
    if burst <= 0:
        return None  # this kind is not limited
    return {"b_key": f"{kind}:{address_key(address)}", "b_now": now, "b_burst": float(burst),
            "b_rate": float(rate), "b_cap": int(cap) if cap > 0 else 2**31 - 1}


def wait_seconds(row, p: dict) -> float:
    """Return how long until a bucket in state `row` allows one more request (0: now)."""
    tokens, updated_at, hour_start, hour_count = row
    filled = min(p["b_burst"], tokens + (p["b_now"] - updated_at) * p["b_rate"])
    wait = 0.0
    if filled < 1:
        wait = (1 - filled) / p["b_rate"] if p["b_rate"] > 0 else HOUR
    if hour_count >= p["b_cap"] and p["b_now"] - hour_start < HOUR:
        wait = max(wait, hour_start + HOUR - p["b_now"])
    return wait


def take(config, kind: str, address: str | None) -> float | None:
    """Spend one request of `kind` for `address` in the current transaction.

    Return None when allowed, else the seconds to wait (nothing was spent). A refusal
    is only given when the bucket, read after the failed update, cannot pay: an update
    that lost a race with another worker's (its clock read before the other's
    commit) is tried again with a fresh clock, twice at most."""
    p = _params(config, kind, address, time.time())
    if p is None:
        return None
    conn = fastsql.connection()
    for _ in range(SPEND_TRIES):
        # fetchall: a DML statement with RETURNING is finished only once its rows are read.
        if _SPEND.execute(conn, p).fetchall():
            return None
        row = _READ.execute(conn, {"b_key": p["b_key"]}).fetchone()
        if row is None:  # a new address; or another worker's first request won the insert
            if _FIRST[db.engine.dialect.name].execute(conn, p).fetchall() \
                    or _SPEND.execute(conn, p).fetchall():
                return None
            row = _READ.execute(conn, {"b_key": p["b_key"]}).fetchone()
        wait = wait_seconds(row, p) if row is not None else 0.0
        if wait > 0:
            return wait
        p["b_now"] = time.time()
    return 0.001


SPEND_TRIES = 3


def blocked(config, kind: str, address: str | None) -> float | None:
    """Return the seconds to wait if `address` could not make a `kind` request now."""
    p = _params(config, kind, address, time.time())
    if p is None:
        return None
    row = _READ.execute(fastsql.connection(), {"b_key": p["b_key"]}).fetchone()
    if row is None:
        return None
    wait = wait_seconds(row, p)
    return wait if wait > 0 else None


# --- per voter: pairs an hour, votes an hour and the gap between votes ------------------
# (per address: the buckets above). They raise or return the API's 429.

_DATETIME = sa.DateTime()
_NOW_DT = sa.bindparam("b_now", type_=_DATETIME)


def _retry_after(oldest) -> float:
    return max(1.0, (oldest + timedelta(hours=1) - utcnow()).total_seconds())


# The cap-th newest token of the last hour, if there is one: it leaves the window
# first, which is when the voter may go on.
_OLDEST_COUNTED = (sa.select(IssuedToken.issued_at)
                   .where(IssuedToken.voter_id == sa.bindparam("b_voter"),
                          IssuedToken.issued_at > sa.bindparam("b_since", type_=_DATETIME))
                   .order_by(IssuedToken.issued_at.desc())
                   .offset(sa.bindparam("b_offset", type_=sa.Integer())).limit(1))


def check_pair_rate(voter_id: str, tokens_ever: int) -> None:
    """Refuse more pairs than DOPE_MAX_PAIRS_PER_HOUR for one voter.

    Only a voter who has been issued at least the cap in all has its last hour counted.
    """
    cap = current_app.config["DOPE_MAX_PAIRS_PER_HOUR"]
    if cap <= 0 or tokens_ever < cap:
        return
    oldest = db.session.execute(_OLDEST_COUNTED, {
        "b_voter": voter_id, "b_since": utcnow() - timedelta(hours=1),
        "b_offset": cap - 1}).scalar()
    if oldest is None:
        return
    raise ApiError(429, "rate_limited", "Too many pairs this hour; take a break.",
                   retry_after=round(_retry_after(oldest), 3))


_FRESH_WINDOW = sa.or_(Voter.window_start.is_(None),
                       Voter.window_start <= sa.bindparam("b_hour_ago", type_=_DATETIME))
_CLAIM_RATE_SLOT = fastsql.Prepared(
    sa.update(Voter)
    .where(Voter.id == sa.bindparam("b_voter"),
           sa.or_(Voter.last_vote_at.is_(None),
                  Voter.last_vote_at <= sa.bindparam("b_min_gap", type_=_DATETIME)),
           sa.or_(_FRESH_WINDOW, Voter.window_votes < sa.bindparam("b_cap", type_=sa.Integer())))
    .values(last_vote_at=_NOW_DT,
            window_start=sa.case((_FRESH_WINDOW, _NOW_DT), else_=Voter.window_start),
            window_votes=sa.case((_FRESH_WINDOW, 1), else_=Voter.window_votes + 1),
            votes_cast=Voter.votes_cast + 1)
    .returning(Voter.votes_cast))


def claim_rate_slot(conn, voter_id: str) -> int | None:
    """Count one vote against the voter's limits; return votes_cast, None if limited."""
    cfg, now = current_app.config, utcnow()
    # fetchall: a DML statement with RETURNING is finished only once its rows are read.
    rows = _CLAIM_RATE_SLOT.execute(conn, {
        "b_voter": voter_id, "b_now": now, "b_hour_ago": now - timedelta(hours=1),
        "b_min_gap": now - timedelta(milliseconds=cfg["DOPE_MIN_VOTE_INTERVAL_MS"]),
        "b_cap": cfg["DOPE_MAX_VOTES_PER_HOUR"]}).fetchall()
    return rows[0][0] if rows else None


def rate_limited(voter_id: str) -> ApiError:
    """Return the 429 error for a voter whose vote was refused by the limits."""
    voter = db.session.get(Voter, voter_id)
    now = utcnow()
    wait = 1.0
    if voter is not None and voter.last_vote_at is not None:
        gap = timedelta(milliseconds=current_app.config["DOPE_MIN_VOTE_INTERVAL_MS"])
        wait = max((voter.last_vote_at + gap - now).total_seconds(), 0.001)
        if voter.window_start and voter.window_votes >= \
                current_app.config["DOPE_MAX_VOTES_PER_HOUR"]:
            wait = max(wait, (voter.window_start + timedelta(hours=1) - now).total_seconds())
    return ApiError(429, "rate_limited", "Slow down a little.", retry_after=round(wait, 3))


NETWORK_BUSY = "Too many requests from your network; please wait a moment."


def check_address(kind: str, address: str | None, *, spend: bool = True) -> None:
    """Spend one `kind` request of the client's address (limits.py), or raise 429.

    With spend=False only look: a new visitor is refused before a voter is made for it.
    """
    check = take if spend else blocked
    wait = check(current_app.config, kind, address)
    if wait is not None:
        raise ApiError(429, "rate_limited", NETWORK_BUSY, retry_after=round(wait, 3))
