"""The public leaderboard, as a page and as JSON (webapp.reports.board makes it)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from webapp.reports.board import current_board

bp = Blueprint("leaderboard", __name__)


@bp.get("/leaderboard")
def page():
    board, _ = current_board()
    names = {row["slug"]: row["name"] for row in board["variants"]}
    return render_template("leaderboard.html", board=board, names=names)


@bp.get("/api/leaderboard")
def api():
    response = jsonify(current_board()[0])
    response.headers["Cache-Control"] = "no-store"
    return response
