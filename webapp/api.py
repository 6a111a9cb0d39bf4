"""JSON API for the game: fetch a blind pair, cast a vote."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, after_this_request, current_app, g, jsonify, request, session
from sqlalchemy.exc import IntegrityError, OperationalError

from . import fastsql, limits
from .extensions import db
from .game import image_url
from .models import VERDICTS, IssuedToken, Pair, Vote, Voter, utcnow
from .pairing import Chosen, next_pair, seen_by
from .tokens import (
    VOTER_COOKIE,
    VOTER_RE,
    TokenError,
    make_pair_token,
    new_voter_id,
    read_pair_token,
    read_voter_cookie,
    voter_cookie,
)

bp = Blueprint("api", __name__, url_prefix="/api")
logger = logging.getLogger(__name__)

MAX_DECISION_MS = 3_600_000


class ApiError(Exception):
    """An API failure with its status, error code, message and extra fields."""

    def __init__(self, status: int, error: str, message: str, **extra):
        super().__init__(message)
        self.status, self.error, self.message, self.extra = status, error, message, extra


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    response = jsonify({"error": exc.error, "message": exc.message, **exc.extra})
    if "retry_after" in exc.extra:
        response.headers["Retry-After"] = str(math.ceil(exc.extra["retry_after"]))
    return response, exc.status


@bp.errorhandler(OperationalError)
def database_busy(exc: OperationalError):
    # A database still locked after the busy timeout: say so and let the client retry.
    db.session.rollback()
    fastsql.rollback()
    logger.warning("Database busy: %s", exc.orig)
    return api_error(ApiError(503, "busy", "The server is busy; try again.", retry_after=1))


@bp.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def compact_json(body: dict) -> str:
    """Return the API's JSON text for a body (no spaces), as both paths send it."""
    return json.dumps(body, separators=(",", ":"))


def json_response(body: dict, status: int = 200):
    """Return compact JSON like jsonify, without its per-call provider machinery."""
    return current_app.response_class(compact_json(body), status=status,
                                      mimetype="application/json")


def current_voter_id() -> str | None:
    """Return the voter id of this browser's signed voter cookie, None without one.

    Voters from before the voter cookie carry their id in Flask's session cookie:
    they keep it, and get the voter cookie on this response.
    """
    if "dope_voter" in g:
        return g.dope_voter
    voter_id = read_voter_cookie(request.cookies.get(VOTER_COOKIE))
    if voter_id is None:
        legacy = session.get("voter")
        if isinstance(legacy, str) and VOTER_RE.match(legacy):
            voter_id = legacy
            session.pop("voter")
            give_voter_cookie(voter_id)
    g.dope_voter = voter_id
    return voter_id


def give_voter_cookie(voter_id: str) -> None:
    """Set the signed voter cookie on this request's response, whatever it turns out to be."""
    @after_this_request
    def set_cookie(response):
        interface, app = current_app.session_interface, current_app._get_current_object()
        response.set_cookie(
            VOTER_COOKIE, voter_cookie(voter_id), path=interface.get_cookie_path(app),
            domain=interface.get_cookie_domain(app), secure=interface.get_cookie_secure(app),
            httponly=True, samesite=interface.get_cookie_samesite(app))
        return response


# The hot paths' statements are built once, compiled once per dialect and run on the
# request's DB-API connection (fastsql): the ORM's bookkeeping would cost more than
# the database does.
_DATETIME = sa.DateTime()
_NOW = sa.bindparam("b_now", type_=_DATETIME)
_ISSUE_TOKEN = fastsql.Prepared(sa.insert(IssuedToken).values(
    nonce=sa.bindparam("b_nonce"), voter_id=sa.bindparam("b_voter"),
    pair_id=sa.bindparam("b_pair"), issued_at=_NOW, used=False,
    reason=sa.bindparam("b_reason", type_=sa.String()),
    probability=sa.bindparam("b_probability", type_=sa.Float()),
    fit_id=sa.bindparam("b_fit", type_=sa.Integer()),
    origin=sa.bindparam("b_origin", type_=sa.String())))


def create_voter(voter_id: str) -> None:
    """Store the voter row (committed); a row that already exists is fine."""
    db.session.add(Voter(id=voter_id))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()


def ensure_voter() -> str:
    """Return this session's voter id, creating the voter (cookie and row) if needed.

    A session that already carries a voter id has its row: the row is stored before
    the signed cookie goes out. (Should the row be gone, issuing the pair's token
    fails on its foreign key and `issue_token` stores the row then.)
    """
    voter_id = current_voter_id()
    if voter_id is None:
        voter_id = g.dope_voter = new_voter_id()
        create_voter(voter_id)
        give_voter_cookie(voter_id)
    return voter_id


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


def issue_token(voter_id: str, chosen: Chosen, origin: str | None = None) -> str:
    """Store a fresh single-use token for the voter and the chosen pair, with the rule
    that chose it, its probability and the client's origin (committed); return its
    nonce."""
    nonce = new_voter_id()
    params = {"b_nonce": nonce, "b_voter": voter_id, "b_pair": chosen.id, "b_now": utcnow(),
              "b_reason": chosen.reason, "b_probability": chosen.probability,
              "b_fit": chosen.fit_id, "b_origin": origin}
    conn = fastsql.connection()
    try:
        _ISSUE_TOKEN.execute(conn, params)
        fastsql.commit()
    except IntegrityError:
        # The voter row is missing (the database was reset under a live cookie).
        fastsql.rollback()
        create_voter(voter_id)
        _ISSUE_TOKEN.execute(conn, params)
        fastsql.commit()
    return nonce


NETWORK_BUSY = "Too many requests from your network; please wait a moment."


def check_address(kind: str, address: str | None, *, spend: bool = True) -> None:
    """Spend one `kind` request of the client's address (limits.py), or raise 429.

    With spend=False only look: a new visitor is refused before a voter is made for it.
    """
    check = limits.take if spend else limits.blocked
    wait = check(current_app.config, kind, address)
    if wait is not None:
        raise ApiError(429, "rate_limited", NETWORK_BUSY, retry_after=round(wait, 3))


def serve_pair(voter_id: str, root: str, address: str | None) -> dict:
    """Choose the voter's next pair, issue its token (committed); return the answer's body.

    Raises ApiError (429 too many pairs for the voter or its address, 404 none left)
    having committed nothing. `root` is the app's script root, for the image URLs;
    `address` the client's, for the per-address limits.
    """
    state = seen_by(voter_id)
    check_pair_rate(voter_id, state[0].count)
    chosen = next_pair(state)
    if chosen is None:
        raise ApiError(404, "no_pairs", "You have judged every pair we have. Thank you!")
    # Last before the token, in its transaction: the address's budget is spent only
    # for a pair that is served, and SQLite's write lock is held for the least time.
    check_address("pair", address)
    nonce = issue_token(voter_id, chosen,
                        limits.origin(current_app.config["SECRET_KEY"], address))
    return {
        "token": make_pair_token(nonce, voter_id),
        "query": {"url": image_url(chosen.query_file, root)},
        "match": {"url": image_url(chosen.match_file, root)},
    }


@bp.get("/pair")
def pair():
    if current_voter_id() is None:
        check_address("pair", request.remote_addr, spend=False)  # before making a voter
    return json_response(serve_pair(ensure_voter(), request.script_root, request.remote_addr))


def names_host(origin: str, host: str) -> bool:
    """Return True when an Origin or Referer URL names `host`; False for any other or
    for what is not a URL."""
    try:
        return urlsplit(origin).netloc == host
    except ValueError:
        return False


def origin_ok() -> bool:
    """Return False when Origin (or Referer) names another host than this one."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    return not origin or names_host(origin, request.host)


def read_vote_body() -> bytes:
    """Return the request's JSON body, or raise ApiError(400)."""
    if request.mimetype != "application/json":
        raise ApiError(400, "bad_request", "Send JSON with Content-Type: application/json.")
    limit = current_app.config["DOPE_MAX_BODY_BYTES"]
    if (request.content_length or 0) > limit:
        raise ApiError(400, "bad_request", "The request body is too large.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(400, "bad_request", "The request body is too large.")
    return raw


def parse_vote(raw: bytes) -> tuple[str, str, int | None]:
    """Return (token, verdict, decision_ms) from a vote's JSON body, or raise ApiError(400)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "bad_request", "The body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "The body must be a JSON object.")
    token, verdict = body.get("token"), body.get("verdict")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "bad_request", "'token' must be a non-empty string.")
    if not isinstance(verdict, str) or verdict not in VERDICTS:
        raise ApiError(400, "bad_request", "'verdict' must be one of dope, nope, skip.")
    return token, verdict, read_decision_ms(body.get("decision_ms"))


def read_decision_ms(value) -> int | None:
    """Return decision_ms clamped to [0, 1 hour], None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise ApiError(400, "bad_request", "'decision_ms' must be a number of milliseconds.")
    return int(min(max(value, 0), MAX_DECISION_MS))


_FRESH_WINDOW = sa.or_(Voter.window_start.is_(None),
                       Voter.window_start <= sa.bindparam("b_hour_ago", type_=_DATETIME))
_CLAIM_RATE_SLOT = fastsql.Prepared(
    sa.update(Voter)
    .where(Voter.id == sa.bindparam("b_voter"),
           sa.or_(Voter.last_vote_at.is_(None),
                  Voter.last_vote_at <= sa.bindparam("b_min_gap", type_=_DATETIME)),
           sa.or_(_FRESH_WINDOW, Voter.window_votes < sa.bindparam("b_cap", type_=sa.Integer())))
    .values(last_vote_at=_NOW,
            window_start=sa.case((_FRESH_WINDOW, _NOW), else_=Voter.window_start),
            window_votes=sa.case((_FRESH_WINDOW, 1), else_=Voter.window_votes + 1),
            votes_cast=Voter.votes_cast + 1)
    .returning(Voter.votes_cast))
_TOKEN = fastsql.Prepared(sa.select(IssuedToken.voter_id, IssuedToken.used,
                                    IssuedToken.issued_at)
                          .where(IssuedToken.nonce == sa.bindparam("b_nonce")))
# A token can buy a vote only once its pair has been out for DOPE_MIN_DECISION_MS.
_READY = sa.bindparam("b_ready", type_=_DATETIME)
# The vote, from the voter's unused token and its pair, in one statement. The vote
# trigger (models.py, migration 0003) counts it and marks the token used. Of two
# racing requests with one token, one inserts and the other breaks the unique
# token_nonce (or, on SQLite, which serialises writers, finds the token used).
_VOTE_COLUMNS = ["pair_id", "variant_id", "voter_id", "verdict", "decision_ms", "created_at",
                 "token_nonce", "reason", "probability", "fit_id", "origin"]
_INSERT_VOTE = fastsql.Prepared(sa.insert(Vote).from_select(_VOTE_COLUMNS, sa.select(
    Pair.id, Pair.variant_id, IssuedToken.voter_id, sa.bindparam("b_verdict", type_=sa.String()),
    sa.bindparam("b_ms", type_=sa.Integer()), _NOW, IssuedToken.nonce, IssuedToken.reason,
    IssuedToken.probability, IssuedToken.fit_id, IssuedToken.origin)
    .join(Pair, Pair.id == IssuedToken.pair_id)
    .where(IssuedToken.nonce == sa.bindparam("b_nonce"),
           IssuedToken.voter_id == sa.bindparam("b_voter"),
           IssuedToken.used.is_(False), IssuedToken.issued_at <= _READY)).returning(Vote.id))


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


def refuse_token(conn, nonce: str, voter_id: str, ready) -> ApiError:
    """Return why the voter's token bought no vote: 400 unknown or not theirs, 409 used,
    429 sent sooner after its pair than anyone can look."""
    token = _TOKEN.execute(conn, {"b_nonce": nonce}).fetchone()
    fastsql.rollback()
    if token is None or token[0] != voter_id:
        return ApiError(400, "bad_token", "The token is not valid.")
    if token[1]:
        return ApiError(409, "already_voted", "This pair has already been judged.")
    # The DB-API row is raw: SQLite gives its stored ISO text, PostgreSQL a datetime.
    issued_at = datetime.fromisoformat(token[2]) if isinstance(token[2], str) else token[2]
    wait = max((issued_at - ready).total_seconds(), 0.001)
    return ApiError(429, "too_fast", "That was quicker than anyone can look at two pictures; "
                    "take a moment.", retry_after=round(wait, 3))


def record_vote(nonce: str, voter_id: str, verdict: str, decision_ms: int | None) -> tuple:
    """Store one vote for a token exactly once; return (vote id, votes cast)."""
    conn = fastsql.connection()
    now = utcnow()
    ready = now - timedelta(milliseconds=current_app.config["DOPE_MIN_DECISION_MS"])
    try:
        # fetchall: a DML statement with RETURNING is finished only once its rows are read.
        rows = _INSERT_VOTE.execute(conn, {
            "b_nonce": nonce, "b_voter": voter_id, "b_verdict": verdict, "b_ms": decision_ms,
            "b_now": now, "b_ready": ready}).fetchall()
    except IntegrityError as exc:
        fastsql.rollback()
        raise ApiError(409, "already_voted", "This pair has already been judged.") from exc
    if not rows:
        raise refuse_token(conn, nonce, voter_id, ready)
    votes_cast = claim_rate_slot(conn, voter_id)
    if votes_cast is None:
        fastsql.rollback()
        raise rate_limited(voter_id)
    fastsql.commit()
    return rows[0][0], votes_cast


def cast_vote(raw: bytes, voter_id: str | None) -> dict:
    """Store the vote a JSON body asks for; return the answer's body.

    Raises ApiError (400 body or token, 403 another voter's token, 409 already
    judged, 429 too fast) having committed nothing.
    """
    token, verdict, decision_ms = parse_vote(raw)
    try:
        nonce = read_pair_token(token, voter_id)
    except TokenError as exc:
        raise ApiError(exc.status, exc.error, exc.message) from exc
    vote_id, votes_cast = record_vote(nonce, voter_id, verdict, decision_ms)
    return {"id": vote_id, "votes_cast": votes_cast}


@bp.post("/vote")
def vote():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site votes are not accepted.")
    return json_response(cast_vote(read_vote_body(), current_voter_id()), 201)
