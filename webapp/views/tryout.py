"""Try it out: the page, and its JSON API (webapp/tryout does the work).

    GET  /try                     the page (says so when the search service is down)
    POST /api/try/photos          multipart: photo (JPEG, PNG or WebP), consent ("1": keep
                                  the photo); 201 {"photo", "first"}; 4xx for a bad file,
                                  503 when the search service cannot answer
    GET  /api/try/<photo>/next    the next first match to judge, or {"done": true}
    POST /api/try/vote            {"token", "verdict", "reason"?, "decision_ms"?}
    POST /api/try/more            {"token"}: after a nope, that variant's next match
    POST /api/try/reason          {"token", "reason"}: what was off, with a nope cast
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, render_template, request
from sqlalchemy.exc import OperationalError

from webapp.http import ApiError, api_error, json_response, origin_ok
from webapp.play import fastsql, limits
from webapp.play.limits import check_address
from webapp.play.voter import current_voter_id, ensure_voter
from webapp.tryout import judging, service, uploads
from webapp.views.api import database_busy

bp = Blueprint("tryout", __name__)
logger = logging.getLogger(__name__)
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")
SERVICE_DOWN = ("Our search is resting right now, so photos cannot be matched. "
                "Please try again in a little while; the game still works.")


@bp.get("/try")
def page():
    try:
        service.health()
        down = False
    except service.ServiceDown as exc:
        logger.warning("try page: %s", exc)
        down = True
    return render_template("try.html", service_down=down, message=SERVICE_DOWN,
                           max_mb=current_app.config["DOPE_MAX_PHOTO_BYTES"] // 2**20,
                           reasons=judging.NOPE_REASONS)


api = Blueprint("tryout_api", __name__, url_prefix="/api/try")
api.register_error_handler(ApiError, api_error)
api.register_error_handler(OperationalError, database_busy)  # the game's: 503 busy


@api.after_request
def no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


def _origin() -> str:
    return limits.origin(current_app.config["SECRET_KEY"], request.remote_addr)


def _photo() -> tuple[bytes, str]:
    """Return the posted photo's bytes and type, or raise a clear 4xx."""
    limit = current_app.config["DOPE_MAX_PHOTO_BYTES"]
    if request.content_length is None:
        raise ApiError(411, "length_required", "Send the photo with its Content-Length.")
    if request.content_length > limit + 65536:
        raise ApiError(413, "too_large", f"The photo is too large: at most {limit // 2**20} MB.")
    if not request.mimetype.startswith("multipart/form-data"):
        raise ApiError(415, "bad_content_type", "Send the photo as multipart/form-data.")
    photo = request.files.get("photo")
    if photo is None:
        raise ApiError(400, "no_photo", "The form has no photo field.")
    if photo.mimetype not in PHOTO_TYPES:
        raise ApiError(415, "bad_photo_type", "Photos must be JPEG, PNG or WebP images.")
    data = photo.read(limit + 1)
    if not data:
        raise ApiError(400, "empty_photo", "The photo is empty.")
    if len(data) > limit:
        raise ApiError(413, "too_large", f"The photo is too large: at most {limit // 2**20} MB.")
    return data, photo.mimetype


@api.post("/photos")
def photos():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site uploads are not accepted.")
    data, kind = _photo()
    if current_voter_id() is None:
        check_address("photo", request.remote_addr, spend=False)  # before making a voter
    voter_id = ensure_voter()
    check_address("photo", request.remote_addr)
    fastsql.commit()  # the budget is spent now, not held across the search
    try:
        answer = service.search(data, kind, current_app.config["DOPE_TRY_K"],
                                keep=request.form.get("consent") == "1")
        upload = uploads.create_upload(voter_id, _origin(), answer)
    except service.PhotoRefused as exc:
        raise ApiError(exc.status, "bad_photo", str(exc)) from None
    except service.ServiceDown as exc:
        logger.warning("try-it-out upload: %s", exc)
        raise ApiError(503, "service_down", SERVICE_DOWN, retry_after=30) from None
    first = judging.next_first_match(upload, voter_id, request.script_root)
    return json_response({"photo": upload.nonce, "first": first}, 201)


@api.get("/<nonce>/next")
def next_match(nonce: str):
    voter_id = current_voter_id()
    upload = judging.own_upload(nonce, voter_id)
    return json_response(judging.next_first_match(upload, voter_id, request.script_root))


@api.post("/vote")
def vote():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site votes are not accepted.")
    body = request.get_json(silent=True)
    return json_response(judging.cast_try_vote(body, current_voter_id(), _origin()), 201)


@api.post("/more")
def more():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site requests are not accepted.")
    body = request.get_json(silent=True)
    token = body.get("token") if isinstance(body, dict) else None
    return json_response(judging.next_after_nope(token, current_voter_id(),
                                                 request.script_root))


@api.post("/reason")
def reason():
    if not origin_ok():
        raise ApiError(403, "bad_origin", "Cross-site requests are not accepted.")
    return json_response(judging.set_nope_reason(request.get_json(silent=True),
                                                 current_voter_id()))
