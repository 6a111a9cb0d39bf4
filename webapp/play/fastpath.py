"""The game's two hot requests, answered without Flask's per-request machinery.

`GET /api/pair` and `POST /api/vote` are nearly all of a game's traffic. For them,
Flask's request context, URL matching, session, hooks and Response objects cost as
much as the work itself (docs/benchmarks.md). This WSGI middleware, wrapped around
the app's `wsgi_app`, answers the ordinary case of each inside an app context with
the very functions the views use (`serve.serve_pair`, `serve.cast_vote`), and sends the
status, headers and body the view would have sent.

Anything out of the ordinary is handed, untouched, to Flask, whose views then answer
and say why: no valid voter cookie (a new voter, a legacy session voter), a body
that is not plain JSON with a Content-Length within the limit, an Origin or Referer
naming another host, and every refusal (400, 403, 404, 409, 429) or database error.
Those functions commit only once the answer is certain, and the app context's
teardown rolls back whatever a declined request left open, so a request handed on
has changed nothing. (A declined vote's body, already read, is handed on with it.)
`DOPE_FAST_PATH=0` turns the middleware off.
"""

from __future__ import annotations

import io
import logging

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES, parse_cookie
from werkzeug.sansio.utils import get_host

from webapp.http import SECURITY_HEADERS, compact_json, names_host
from webapp.play.serve import cast_vote, serve_pair
from webapp.play.tokens import VOTER_COOKIE, read_voter_cookie

logger = logging.getLogger(__name__)


class Declined(Exception):
    """The fast path does not answer this request; Flask does."""


def _script_root(environ) -> str:
    # As werkzeug's Request.script_root computes it.
    return (environ.get("SCRIPT_NAME") or "").encode("latin1").decode(
        "utf-8", "replace").rstrip("/")


def _same_origin(environ, trusted_hosts) -> bool:
    """api.origin_ok on the WSGI environ: the host as werkzeug's Request.host computes it."""
    origin = environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER")
    return not origin or names_host(origin, get_host(
        environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_HOST"),
        (environ.get("SERVER_NAME"), environ.get("SERVER_PORT")), trusted_hosts))


class FastPath:
    """WSGI middleware: the ordinary pair and vote requests, answered directly."""

    def __init__(self, app: Flask, wsgi_app):
        self.app, self.wsgi_app = app, wsgi_app
        self.answered = self.declined = 0  # this worker's, for tests and curiosity
        # What the API blueprint's no_store and the app's security_headers add.
        self.headers = [("Cache-Control", "no-store"), *SECURITY_HEADERS]

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/api/pair":
            handler, status = self.pair, 200
        elif path == "/api/vote":
            handler, status = self.vote, 201
        else:
            return self.wsgi_app(environ, start_response)
        config = self.app.config
        # With SERVER_NAME set, Flask routes by host too: leave that to Flask.
        if not config["DOPE_FAST_PATH"] or config.get("SERVER_NAME"):
            return self.wsgi_app(environ, start_response)
        try:
            with self.app.app_context():
                body = handler(environ)
        except Exception as exc:  # noqa: BLE001 - Flask's views answer, and log what is wrong
            if not isinstance(exc, Declined):
                logger.debug("Fast path declined %s: %r", path, exc)
            self.declined += 1
            return self.wsgi_app(environ, start_response)
        self.answered += 1
        data = compact_json(body).encode()
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        *self.headers])
        return [data]

    def voter(self, environ) -> str:
        voter_id = read_voter_cookie(parse_cookie(environ).get(VOTER_COOKIE))
        if voter_id is None:
            raise Declined("no valid voter cookie")
        return voter_id

    def pair(self, environ) -> dict:
        if environ.get("REQUEST_METHOD") != "GET":
            raise Declined("method")
        return serve_pair(self.voter(environ), _script_root(environ), environ.get("REMOTE_ADDR"))

    def vote(self, environ) -> dict:
        if environ.get("REQUEST_METHOD") != "POST":
            raise Declined("method")
        content_type = environ.get("CONTENT_TYPE", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise Declined("not JSON")
        length = environ.get("CONTENT_LENGTH", "")
        if not (length.isascii() and length.isdigit()) \
                or not 0 < int(length) <= self.app.config["DOPE_MAX_BODY_BYTES"]:
            raise Declined("no or too large Content-Length")
        if not _same_origin(environ, self.app.config.get("TRUSTED_HOSTS")):
            raise Declined("origin")
        raw = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, should this be declined
        if len(raw) != int(length):
            raise Declined("short body")
        return cast_vote(raw, self.voter(environ))


def init_app(app: Flask) -> None:
    app.wsgi_app = FastPath(app, app.wsgi_app)
