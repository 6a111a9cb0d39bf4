"""The public leaderboard, as a page and as JSON.

Counts are live (the vote trigger keeps them); the corrected figures (estimates,
anytime-valid intervals, rank ranges, probabilities of being best, `settled`) are
the newest fit's (webapp/fit.py), which runs outside requests. Reading them is one
row, so the board costs the same at a million votes as at ten.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify, render_template

from . import fit as fitting
from .extensions import db
from .models import Pair, Variant, Vote

bp = Blueprint("leaderboard", __name__)


def _corrected(fit: dict | None, slug: str, control: bool) -> dict:
    """Return a variant's corrected figures from the fit, or the no-data defaults."""
    part = (fit or {}).get("corrected", {})
    got = part.get("reference" if control else "variants", {}).get(slug)
    if got is None:
        return {"estimate": None, "ci_low": 0.0, "ci_high": 1.0, "rank_low": None,
                "rank_high": None, "p_best": None}
    estimate = got["estimate"]
    if estimate is not None:  # a weighted mean may stray outside [0, 1] on few votes
        estimate = min(max(estimate, 0.0), 1.0)
    return {"estimate": estimate, "ci_low": max(got["ci_low"] or 0.0, 0.0),
            "ci_high": min(1.0 if got["ci_high"] is None else got["ci_high"], 1.0),
            "rank_low": got.get("rank_low"), "rank_high": got.get("rank_high"),
            "p_best": got.get("p_best")}


def variant_row(v, fit: dict | None) -> dict:
    """Return one variant's leaderboard row: pooled raw counts and corrected figures."""
    votes = v.judged_dope + v.judged_nope
    row = {"slug": v.slug, "name": v.name, "votes": votes, "approvals": v.judged_dope,
           "skips": v.judged_skip, "rate": v.judged_dope / votes if votes else None,
           "served": v.dope_count + v.nope_count, "offline_accuracy": v.offline_accuracy,
           "control": bool(v.control), "parent": v.parent_slug, "round": v.round}
    row.update(_corrected(fit, v.slug, bool(v.control)))
    return row


def _sort_key(row: dict):
    # Ties (every row before any fit) put the control below the real variants.
    return (row["control"], -(row["ci_low"] or 0.0), -(row["estimate"] or row["rate"] or 0.0),
            row["name"])


def fit_summary(row, fit: dict | None, last_vote: int) -> dict:
    """Return when the figures were fitted and how many votes have come in since."""
    if row is None:
        return {"at": None, "judgments": 0, "votes_since": last_vote, "excluded_voters": 0}
    return {"at": row.created_at.isoformat(timespec="seconds") + "Z",
            "judgments": fit["corrected"]["judgments"],
            "votes_since": max(last_vote - row.last_vote_id, 0),
            "excluded_voters": fit["voters"]["excluded"]}


def leaderboard() -> dict:
    """Return every variant's row, ranked, with the stopping rule's verdict."""
    variants = db.session.execute(sa.select(
        Variant.slug, Variant.name, Variant.dope_count, Variant.nope_count, Variant.skip_count,
        Variant.judged_dope, Variant.judged_nope, Variant.judged_skip,
        Variant.offline_accuracy, Variant.control, Variant.parent_slug, Variant.round)).all()
    row, fit = fitting.latest_fit()
    rows = sorted((variant_row(v, fit) for v in variants), key=_sort_key)
    real = [r for r in rows if not r["control"]]
    for r in real:
        if r["rank_low"] is None:  # not in the fit yet: any place
            r["rank_low"], r["rank_high"] = 1, len(real)
    corrected = (fit or {}).get("corrected", {})
    leader, tied = corrected.get("leader"), corrected.get("tied_with", [])
    last_vote = db.session.scalar(sa.select(sa.func.max(Vote.id))) or 0
    return {
        "variants": rows,
        "total_votes": sum(v.dope_count + v.nope_count for v in variants),
        "total_skips": sum(v.skip_count for v in variants),
        "settled": bool(corrected.get("settled")),
        "leader": leader,
        "tied_with": tied if corrected.get("settled") else [],
        "epsilon": (fit or {}).get("epsilon"),
        "separation": {"status": "settled" if corrected.get("settled") else
                       ("open" if corrected.get("judgments") else "no_data"),
                       "leader": leader, "margins": corrected.get("margins", {})},
        "fit": fit_summary(row, fit, last_vote),
        "_fit_row": row,
        "_fit": fit,
        "_last_vote": last_vote,
    }


def public(board: dict) -> dict:
    return {k: v for k, v in board.items() if not k.startswith("_")}


def count_votes() -> dict[int, dict[str, int]]:
    """Return {variant id: {verdict: n}} counted from the votes table (slow; for checks)."""
    counts: dict[int, dict[str, int]] = {}
    rows = db.session.execute(sa.select(Vote.variant_id, Vote.verdict, sa.func.count())
                              .group_by(Vote.variant_id, Vote.verdict))
    for variant_id, verdict, n in rows:
        counts.setdefault(variant_id, {})[verdict] = n
    return counts


def count_judgments() -> dict[int, dict[str, int]]:
    """Return {variant id: {verdict: n}} pooled: every vote on an image pair the variant
    returns for that query (slow; for checks)."""
    shown, mine = sa.orm.aliased(Pair), sa.orm.aliased(Pair)
    counts: dict[int, dict[str, int]] = {}
    rows = db.session.execute(
        sa.select(mine.variant_id, Vote.verdict, sa.func.count())
        .join(shown, shown.id == Vote.pair_id)
        .join(mine, sa.and_(mine.query_id == shown.query_id, mine.match_id == shown.match_id))
        .group_by(mine.variant_id, Vote.verdict))
    for variant_id, verdict, n in rows:
        counts.setdefault(variant_id, {})[verdict] = n
    return counts


def recount_votes() -> int:
    """Set every variant's counters from the votes table; return how many were off."""
    served, pooled, changed = count_votes(), count_judgments(), 0
    for variant in db.session.scalars(sa.select(Variant)):
        c, p = served.get(variant.id, {}), pooled.get(variant.id, {})
        fresh = tuple(c.get(v, 0) for v in ("dope", "nope", "skip")) + \
            tuple(p.get(v, 0) for v in ("dope", "nope", "skip"))
        names = ("dope_count", "nope_count", "skip_count", "judged_dope", "judged_nope",
                 "judged_skip")
        if tuple(getattr(variant, n) for n in names) != fresh:
            for name, value in zip(names, fresh, strict=True):
                setattr(variant, name, value)
            changed += 1
    db.session.commit()
    return changed


@bp.get("/leaderboard")
def page():
    board = leaderboard()
    fitting.maybe_refit(board["_fit_row"], board["_last_vote"])
    names = {row["slug"]: row["name"] for row in board["variants"]}
    return render_template("leaderboard.html", board=public(board), names=names)


@bp.get("/api/leaderboard")
def api():
    board = leaderboard()
    fitting.maybe_refit(board["_fit_row"], board["_last_vote"])
    response = jsonify(public(board))
    response.headers["Cache-Control"] = "no-store"
    return response
