"""JSON API for the game: fetch a blind pair, cast a vote."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request, session, url_for
from sqlalchemy.exc import IntegrityError, OperationalError

from .extensions import db
from .models import VERDICTS, IssuedToken, Pair, Variant, Vote, Voter, utcnow
from .pairing import next_pair
from .tokens import TokenError, make_pair_token, new_voter_id, read_pair_token

bp = Blueprint("api", __name__, url_prefix="/api")
logger = logging.getLogger(__name__)

VOTER_RE = re.compile(r"^[0-9a-f]{32}$")
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
    logger.warning("Database busy: %s", exc.orig)
    return api_error(ApiError(503, "busy", "The server is busy; try again.", retry_after=1))


@bp.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def current_voter_id() -> str | None:
    """Return this session's voter id if it has a well-formed one."""
    voter_id = session.get("voter")
    return voter_id if isinstance(voter_id, str) and VOTER_RE.match(voter_id) else None


def _conn():
    """Return the request transaction's connection: hot paths skip the ORM's bookkeeping."""
    return db.session.connection()


# The hot paths' statements are built once; SQLAlchemy caches their compiled SQL.
_VOTER_EXISTS = sa.select(Voter.id).where(Voter.id == sa.bindparam("b_voter"))
_RECENT_PAIRS = (sa.select(IssuedToken.issued_at)
                 .where(IssuedToken.voter_id == sa.bindparam("b_voter"),
                        IssuedToken.issued_at > sa.bindparam("b_since", type_=sa.DateTime()))
                 .order_by(IssuedToken.issued_at.desc())
                 .offset(sa.bindparam("b_offset", type_=sa.Integer())).limit(1))
_ISSUE_TOKEN = sa.insert(IssuedToken).values(
    nonce=sa.bindparam("b_nonce"), voter_id=sa.bindparam("b_voter"),
    pair_id=sa.bindparam("b_pair"), issued_at=sa.bindparam("b_now", type_=sa.DateTime()),
    used=False)


def ensure_voter() -> str:
    """Return this session's voter id, creating the voter (cookie and row) if needed."""
    voter_id = current_voter_id()
    if voter_id is None:
        voter_id = session["voter"] = new_voter_id()
    if _conn().execute(_VOTER_EXISTS, {"b_voter": voter_id}).first() is None:
        db.session.add(Voter(id=voter_id))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
    return voter_id


def _retry_after(oldest) -> float:
    return max(1.0, (oldest + timedelta(hours=1) - utcnow()).total_seconds())


def check_pair_rate(conn, voter_id: str) -> None:
    """Refuse more pairs than DOPE_MAX_PAIRS_PER_HOUR for one voter."""
    cap = current_app.config["DOPE_MAX_PAIRS_PER_HOUR"]
    if cap <= 0:
        return
    oldest = conn.execute(_RECENT_PAIRS, {
        "b_voter": voter_id, "b_since": utcnow() - timedelta(hours=1),
        "b_offset": cap - 1}).scalar()
    if oldest is not None:
        raise ApiError(429, "rate_limited", "Too many pairs this hour; take a break.",
                       retry_after=round(_retry_after(oldest), 3))


@bp.get("/pair")
def pair():
    voter_id = ensure_voter()
    check_pair_rate(_conn(), voter_id)
    chosen = next_pair(voter_id, current_app.config["DOPE_CONTROL_SHARE"])
    if chosen is None:
        raise ApiError(404, "no_pairs", "You have judged every pair we have. Thank you!")
    nonce = new_voter_id()
    _conn().execute(_ISSUE_TOKEN, {"b_nonce": nonce, "b_voter": voter_id,
                                   "b_pair": chosen.id, "b_now": utcnow()})
    db.session.commit()
    return jsonify({
        "token": make_pair_token(nonce, voter_id),
        "query": {"url": url_for("game.image", name=chosen.query_file)},
        "match": {"url": url_for("game.image", name=chosen.match_file)},
    })


def origin_ok() -> bool:
    """Return False when Origin (or Referer) names another host than this one."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True
    try:
        return urlsplit(origin).netloc == request.host
    except ValueError:
        return False


def read_vote_body() -> tuple[str, str, int | None]:
    """Return (token, verdict, decision_ms) from the request, or raise ApiError(400)."""
    if request.mimetype != "application/json":
        raise ApiError(400, "bad_request", "Send JSON with Content-Type: application/json.")
    limit = current_app.config["DOPE_MAX_BODY_BYTES"]
    if (request.content_length or 0) > limit:
        raise ApiError(400, "bad_request", "The request body is too large.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(400, "bad_request", "The request body is too large.")
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


_DATETIME = sa.DateTime()
_NOW = sa.bindparam("b_now", type_=_DATETIME)
_FRESH_WINDOW = sa.or_(Voter.window_start.is_(None),
                       Voter.window_start <= sa.bindparam("b_hour_ago", type_=_DATETIME))
_CLAIM_RATE_SLOT = (
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
_TOKEN = (sa.select(IssuedToken.id, IssuedToken.voter_id, IssuedToken.used, IssuedToken.pair_id,
                    Pair.variant_id)
          .join(Pair, Pair.id == IssuedToken.pair_id)
          .where(IssuedToken.nonce == sa.bindparam("b_nonce")))
# Conditional: of two racing requests with one token, exactly one changes the row.
_SPEND_TOKEN = (sa.update(IssuedToken)
                .where(IssuedToken.id == sa.bindparam("b_token"), IssuedToken.used.is_(False))
                .values(used=True))
_INSERT_VOTE = sa.insert(Vote).values(
    pair_id=sa.bindparam("b_pair"), variant_id=sa.bindparam("b_variant"),
    voter_id=sa.bindparam("b_voter"), verdict=sa.bindparam("b_verdict"),
    decision_ms=sa.bindparam("b_ms", type_=sa.Integer()), created_at=_NOW,
    token_nonce=sa.bindparam("b_nonce")).returning(Vote.id)
_COUNT_VOTE = {
    verdict: sa.update(Variant).where(Variant.id == sa.bindparam("b_variant"))
    .values({getattr(Variant, f"{verdict}_count"): getattr(Variant, f"{verdict}_count") + 1})
    for verdict in VERDICTS}


def claim_rate_slot(conn, voter_id: str) -> int | None:
    """Count one vote against the voter's limits; return votes_cast, None if limited."""
    cfg, now = current_app.config, utcnow()
    return conn.execute(_CLAIM_RATE_SLOT, {
        "b_voter": voter_id, "b_now": now, "b_hour_ago": now - timedelta(hours=1),
        "b_min_gap": now - timedelta(milliseconds=cfg["DOPE_MIN_VOTE_INTERVAL_MS"]),
        "b_cap": cfg["DOPE_MAX_VOTES_PER_HOUR"]}).scalar()


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


def record_vote(nonce: str, voter_id: str, verdict: str, decision_ms: int | None) -> tuple:
    """Store one vote for a token exactly once; return (vote id, votes cast)."""
    conn = _conn()
    token = conn.execute(_TOKEN, {"b_nonce": nonce}).first()
    if token is None or token.voter_id != voter_id:
        raise ApiError(400, "bad_token", "The token is not valid.")
    if token.used or not conn.execute(_SPEND_TOKEN, {"b_token": token.id}).rowcount:
        db.session.rollback()
        raise ApiError(409, "already_voted", "This pair has already been judged.")
    votes_cast = claim_rate_slot(conn, voter_id)
    if votes_cast is None:
        db.session.rollback()
        raise rate_limited(voter_id)
    try:
        vote_id = conn.execute(_INSERT_VOTE, {
            "b_pair": token.pair_id, "b_variant": token.variant_id, "b_voter": voter_id,
            "b_verdict": verdict, "b_ms": decision_ms, "b_now": utcnow(),
            "b_nonce": nonce}).scalar_one()
        conn.execute(_COUNT_VOTE[verdict], {"b_variant": token.variant_id})
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise ApiError(409, "already_voted", "This pair has already been judged.") from exc
    return vote_id, votes_cast


@bp.post("/vote")
def vote():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site votes are not accepted.")
    token, verdict, decision_ms = read_vote_body()
    try:
        nonce = read_pair_token(token, current_voter_id())
    except TokenError as exc:
        raise ApiError(exc.status, exc.error, exc.message) from exc
    vote_id, votes_cast = record_vote(nonce, current_voter_id(), verdict, decision_ms)
    return jsonify({"id": vote_id, "votes_cast": votes_cast}), 201
