"""The team view: detailed results behind a password, and vote downloads (routes;
webapp.reports makes the figures)."""

from __future__ import annotations

import functools
import hmac
import math
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)

from webapp.jobs.export import csv_lines, jsonl_lines
from webapp.play import fastsql, limits
from webapp.play.tokens import csrf_ok
from webapp.reports.board import current_board
from webapp.reports.team import category_table, comparison, lineages, samples, votes_over_time

bp = Blueprint("team", __name__, url_prefix="/team")


def login_required(view):
    """Send visitors who are not signed in to the login form."""
    @functools.wraps(view)
    def wrapped(**kwargs):
        if not current_app.config.get("DOPE_TEAM_PASSWORD") or not session.get("team"):
            return redirect(url_for("team.page"))
        return view(**kwargs)
    return wrapped


def check_csrf() -> None:
    """Refuse a form post whose CSRF token does not match the session's."""
    if not csrf_ok(request.form.get("csrf_token")):
        abort(400, "The form expired or did not come from this site; please try again.")


@bp.get("/")
def page():
    password = current_app.config.get("DOPE_TEAM_PASSWORD")
    if not password:
        return render_template("team_login.html", disabled=True)
    if not session.get("team"):
        return render_template("team_login.html", disabled=False)
    board, fit = current_board()
    slugs = [v["slug"] for v in board["variants"]]
    a, b = request.args.get("a"), request.args.get("b")
    chosen = (a, b) if a in slugs and b in slugs and a != b else None
    if (a or b) and chosen is None:
        flash("Pick two different variants to compare.", "error")
    return render_template("team.html", board=board, fit=fit, categories=category_table(),
                           samples=samples(), timeline=votes_over_time(),
                           lineage=lineages(), comparison=comparison(*chosen) if chosen else None)


@bp.post("/login")
def login():
    check_csrf()
    password = current_app.config.get("DOPE_TEAM_PASSWORD")
    given = request.form.get("password", "")
    if not password:
        abort(404)
    wait = limits.take(current_app.config, "login", request.remote_addr)
    fastsql.commit()  # every attempt counts, right or wrong
    if wait is not None:
        flash(f"Too many sign-in attempts from your network; try again in {math.ceil(wait)} s.",
              "error")
        response = make_response(render_template("team_login.html", disabled=False), 429)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    if not hmac.compare_digest(given.encode(), password.encode()):
        flash("Wrong password.", "error")
        return render_template("team_login.html", disabled=False), 401
    session["team"] = True
    return redirect(url_for("team.page"))


@bp.post("/logout")
def logout():
    check_csrf()
    session.pop("team", None)
    return redirect(url_for("game.index"))


def _download(lines, name: str, mimetype: str) -> Response:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    response = Response(stream_with_context(lines), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="votes-{stamp}.{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/votes.csv")
@login_required
def votes_csv():
    return _download(csv_lines(), "csv", "text/csv")


@bp.get("/votes.jsonl")
@login_required
def votes_jsonl():
    return _download(jsonl_lines(), "jsonl", "application/x-ndjson")
