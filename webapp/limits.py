"""Per-address request limits, shared by every worker and host through the database.

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
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from . import fastsql
from .extensions import db
from .models import RateBucket

HOUR = 3600.0
SETTINGS = {
    "pair": ("DOPE_ADDRESS_PAIR_BURST", "DOPE_ADDRESS_PAIR_RATE", "DOPE_ADDRESS_PAIRS_PER_HOUR"),
    "login": ("DOPE_LOGIN_BURST", "DOPE_LOGIN_RATE", "DOPE_LOGINS_PER_HOUR"),
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
