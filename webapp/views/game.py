"""The game pages and the image store."""

from __future__ import annotations

import re

from flask import Blueprint, abort, current_app, render_template, send_from_directory

from webapp.extensions import db
from webapp.models import Voter
from webapp.play.serve import IMAGE_PREFIX
from webapp.play.voter import current_voter_id

bp = Blueprint("game", __name__)

IMAGE_NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpg|jpeg|webp)$")
YEAR = 365 * 24 * 3600


def votes_cast() -> int:
    """Return how many votes this session has cast."""
    voter_id = current_voter_id()
    voter = db.session.get(Voter, voter_id) if voter_id else None
    return voter.votes_cast if voter else 0


@bp.get("/")
def index():
    return render_template("index.html", votes_cast=votes_cast())


@bp.get("/play")
def play():
    return render_template("play.html", votes_cast=votes_cast())


@bp.get(IMAGE_PREFIX + "<name>")
def image(name: str):
    if not IMAGE_NAME.match(name):
        abort(404)
    response = send_from_directory(current_app.config["DOPE_IMAGE_DIR"], name, max_age=YEAR)
    response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    return response
