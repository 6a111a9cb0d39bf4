"""The public leaderboard, as a page and as JSON."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify, render_template

from .extensions import db
from .models import Variant, Vote
from .ranking import make_row, rank_rows, votes_to_separate

bp = Blueprint("leaderboard", __name__)


def leaderboard() -> dict:
    """Return every variant's row, ranked, with the top-two separation estimate."""
    variants = db.session.execute(sa.select(
        Variant.slug, Variant.name, Variant.dope_count, Variant.nope_count,
        Variant.skip_count, Variant.offline_accuracy, Variant.control, Variant.parent_slug,
        Variant.round)).all()
    rows = rank_rows([make_row(*v) for v in variants])
    real = [r for r in rows if not r.control]
    top = sorted(real, key=lambda r: (r.rank_low, -r.ci_low))[:2]
    separation = votes_to_separate(*top) if len(top) == 2 else \
        {"between": [r.slug for r in top], "additional_votes": None, "status": "no_data"}
    return {
        "variants": [r.to_dict() for r in rows],
        "total_votes": sum(r.votes for r in rows),
        "total_skips": sum(r.skips for r in rows),
        "separation": separation,
    }


def count_votes() -> dict[int, dict[str, int]]:
    """Return {variant id: {verdict: n}} counted from the votes table (slow; for checks)."""
    counts: dict[int, dict[str, int]] = {}
    rows = db.session.execute(sa.select(Vote.variant_id, Vote.verdict, sa.func.count())
                              .group_by(Vote.variant_id, Vote.verdict))
    for variant_id, verdict, n in rows:
        counts.setdefault(variant_id, {})[verdict] = n
    return counts


def recount_votes() -> int:
    """Set every variant's counters from the votes table; return how many were off."""
    counts, changed = count_votes(), 0
    for variant in db.session.scalars(sa.select(Variant)):
        c = counts.get(variant.id, {})
        fresh = (c.get("dope", 0), c.get("nope", 0), c.get("skip", 0))
        if (variant.dope_count, variant.nope_count, variant.skip_count) != fresh:
            variant.dope_count, variant.nope_count, variant.skip_count = fresh
            changed += 1
    db.session.commit()
    return changed


@bp.get("/leaderboard")
def page():
    board = leaderboard()
    names = {row["slug"]: row["name"] for row in board["variants"]}
    return render_template("leaderboard.html", board=board, names=names)


@bp.get("/api/leaderboard")
def api():
    response = jsonify(leaderboard())
    response.headers["Cache-Control"] = "no-store"
    return response
