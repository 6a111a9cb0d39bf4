"""The public leaderboard, as a page and as JSON (webapp.reports.board makes it)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request

from webapp.reports.board import current_board

bp = Blueprint("leaderboard", __name__)


def _board():
    """Return (board, None), or (None, (message, known categories)) for an unknown one."""
    category = request.args.get("category") or None
    photos = request.args.get("on") == "photos"
    try:
        return current_board(category, photos)[0], None
    except KeyError:
        known = current_board()[0]["categories"]
        if photos:
            return None, ("no photo has been judged yet: try it out at /try", known)
        return None, (f"unknown category {category!r}; the board has: "
                      f"{', '.join(known) or 'none yet (no fit)'}", known)


@bp.get("/leaderboard")
def page():
    board, problem = _board()
    if problem is not None:
        return render_template("error.html", code=404, name="Not Found",
                               message=problem[0]), 404
    names = {row["slug"]: row["name"] for row in board["variants"]}
    return render_template("leaderboard.html", board=board, names=names)


@bp.get("/api/leaderboard")
def api():
    board, problem = _board()
    if problem is not None:
        response = jsonify({"error": "not_found", "message": problem[0],
                            "categories": problem[1]})
        response.status_code = 404
    else:
        response = jsonify(board)
    response.headers["Cache-Control"] = "no-store"
    return response
