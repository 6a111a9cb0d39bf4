"""Dope or Nope web app: blind voting on visual-search pairs and an honest leaderboard."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException, InternalServerError

from . import config as config_module
from . import fastsql
from .extensions import db, migrate

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# Everything is served from here; style attributes draw the leaderboard bars.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")


def create_app(test_config=None):
    """Create and configure the Dope or Nope app."""
    app = Flask(__name__, instance_relative_config=True,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(config_module.DEFAULTS)
    app.config.update(config_module.from_environ())  # DOPE_DEMO=1 among them
    if test_config is not None:
        app.config.from_mapping(test_config)
    config_module.finish(app.config, app.instance_path)
    os.makedirs(app.instance_path, exist_ok=True)
    os.makedirs(app.config["DOPE_IMAGE_DIR"], exist_ok=True)

    db.init_app(app)
    fastsql.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))

    from . import api, game, leaderboard, team
    app.register_blueprint(game.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(leaderboard.bp)
    app.register_blueprint(team.bp)

    from . import cli
    cli.init_app(app)

    from .tokens import csrf_token
    app.jinja_env.globals["csrf_token"] = csrf_token
    register_error_handlers(app)
    app.after_request(security_headers)
    app.session_interface = SessionInterface()
    from . import fastpath
    fastpath.init_app(app)
    proxies = app.config["DOPE_TRUSTED_PROXIES"]
    if proxies > 0:
        # Outermost, so that the fast path and every view see the client's address.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    return app


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
