"""HTTP plumbing every view shares: security headers, the session cookie's serializer,
error pages and JSON errors, compact JSON answers and the same-origin check."""

from __future__ import annotations

import json
import logging
import math
from urllib.parse import urlsplit

from flask import Flask, current_app, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException, InternalServerError

from webapp.extensions import db

logger = logging.getLogger(__name__)

# Everything is served from here; style attributes draw the leaderboard bars.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "same-origin"), ("X-Frame-Options", "DENY"))


def security_headers(response):
    """Add headers that keep pages from being framed, sniffed or fed foreign code.

    A view that set one of them keeps its own (one pass over the headers, not four).
    """
    headers = response.headers
    present = {name.lower() for name, _ in headers.items()}
    for name, value in SECURITY_HEADERS:
        if name.lower() not in present:
            headers.add(name, value)
    return response


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the signing serializer built once per key.

    Flask builds it on every request, cookie or not (a JSON round trip to test the
    serializer, a key derivation); voters carry no Flask session at all.
    """

    def get_signing_serializer(self, app: Flask):
        key = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = app.extensions.get("dope_session_serializer")
        if cached is None or cached[0] != key:
            cached = app.extensions["dope_session_serializer"] = (
                key, super().get_signing_serializer(app))
        return cached[1]


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def register_error_handlers(app: Flask) -> None:
    """Answer API errors in JSON and page errors with templates/error.html."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _wants_json():
            body = {"error": (exc.name or "error").lower().replace(" ", "_"),
                    "message": exc.description}
            return jsonify(body), exc.code
        return render_template("error.html", code=exc.code, name=exc.name,
                               message=exc.description), exc.code

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        db.session.rollback()
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return http_error(InternalServerError())


class ApiError(Exception):
    """An API failure with its status, error code, message and extra fields."""

    def __init__(self, status: int, error: str, message: str, **extra):
        super().__init__(message)
        self.status, self.error, self.message, self.extra = status, error, message, extra


def api_error(exc: ApiError):
    """Answer an ApiError in JSON, with Retry-After when it says when to retry."""
    response = jsonify({"error": exc.error, "message": exc.message, **exc.extra})
    if "retry_after" in exc.extra:
        response.headers["Retry-After"] = str(math.ceil(exc.extra["retry_after"]))
    return response, exc.status


def compact_json(body: dict) -> str:
    """Return the API's JSON text for a body (no spaces), as both paths send it."""
    return json.dumps(body, separators=(",", ":"))


def json_response(body: dict, status: int = 200):
    """Return compact JSON like jsonify, without its per-call provider machinery."""
    return current_app.response_class(compact_json(body), status=status,
                                      mimetype="application/json")


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
