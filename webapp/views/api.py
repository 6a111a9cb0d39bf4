"""JSON API for the game: fetch a blind pair, cast a vote (routes; play/ does the work)."""

from __future__ import annotations

import logging

from flask import Blueprint, request
from sqlalchemy.exc import OperationalError

from webapp.extensions import db
from webapp.http import ApiError, api_error, json_response, origin_ok
from webapp.play import fastsql
from webapp.play.limits import check_address
from webapp.play.serve import cast_vote, read_vote_body, serve_pair
from webapp.play.voter import current_voter_id, ensure_voter

bp = Blueprint("api", __name__, url_prefix="/api")
logger = logging.getLogger(__name__)
bp.register_error_handler(ApiError, api_error)


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


@bp.get("/pair")
def pair():
    if current_voter_id() is None:
        check_address("pair", request.remote_addr, spend=False)  # before making a voter
    return json_response(serve_pair(ensure_voter(), request.script_root, request.remote_addr))


@bp.post("/vote")
def vote():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site votes are not accepted.")
    return json_response(cast_vote(read_vote_body(), current_voter_id()), 201)
