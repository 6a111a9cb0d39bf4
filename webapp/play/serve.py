"""Serve a blind pair and record its vote: the game's two requests, for the API views
and the fast path alike. Each raises ApiError having committed nothing."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app, request
from sqlalchemy.exc import IntegrityError

from webapp.http import ApiError
from webapp.models import VERDICTS, IssuedToken, Pair, Vote, utcnow
from webapp.play import fastsql, limits
from webapp.play.limits import check_address, check_pair_rate, claim_rate_slot, rate_limited
from webapp.play.pairing import Chosen, next_pair, seen_by
from webapp.play.tokens import TokenError, make_pair_token, new_voter_id, read_pair_token
from webapp.play.voter import create_voter

IMAGE_PREFIX = "/images/"
MAX_DECISION_MS = 3_600_000

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


def image_url(name: str, root: str) -> str:
    """Return the URL of a stored image (url_for("game.image", name=name), cheaper);
    `root` is the app's script root (request.script_root)."""
    return f"{root}{IMAGE_PREFIX}{name}"


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
