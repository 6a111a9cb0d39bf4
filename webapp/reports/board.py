"""The leaderboard's rows: live counts (the vote trigger keeps them) beside the newest
fit's corrected figures (estimates, anytime-valid intervals, rank ranges, probabilities
of being best, `settled`). Reading them is one row, so the board costs the same at a
million votes as at ten."""

from __future__ import annotations

import sqlalchemy as sa

from webapp.extensions import db
from webapp.jobs.fit_schedule import maybe_refit
from webapp.jobs.fit_store import NO_FIGURES, StoredFit, latest_fit, newest_vote_id
from webapp.models import Variant


def _corrected(fit: StoredFit, slug: str, control: bool) -> dict:
    """Return a variant's corrected figures from the fit, or the no-data defaults."""
    got = fit.figures(slug, control)
    if got is None:
        return dict(NO_FIGURES)
    estimate = got["estimate"]
    if estimate is not None:  # a weighted mean may stray outside [0, 1] on few votes
        estimate = min(max(estimate, 0.0), 1.0)
    return {"estimate": estimate, "ci_low": max(got["ci_low"] or 0.0, 0.0),
            "ci_high": min(1.0 if got["ci_high"] is None else got["ci_high"], 1.0),
            "rank_low": got.get("rank_low"), "rank_high": got.get("rank_high"),
            "p_best": got.get("p_best")}


def variant_row(v, fit: StoredFit, counts: dict | None = None) -> dict:
    """Return one variant's leaderboard row: pooled raw counts (the live ones, or a
    category's from the fit) and corrected figures."""
    votes, dopes = v.judged_dope + v.judged_nope, v.judged_dope
    if counts is not None:
        got = counts.get(v.slug, {})
        votes, dopes = got.get("judgments", 0), got.get("dopes", 0)
    row = {"slug": v.slug, "name": v.name, "votes": votes, "approvals": dopes,
           "skips": v.judged_skip, "rate": dopes / votes if votes else None,
           "served": v.dope_count + v.nope_count, "offline_accuracy": v.offline_accuracy,
           "control": bool(v.control), "parent": v.parent_slug, "round": v.round}
    row.update(_corrected(fit, v.slug, bool(v.control)))
    return row


def _sort_key(row: dict):
    # Ties (every row before any fit) put the control below the real variants.
    return (row["control"], -(row["ci_low"] or 0.0), -(row["estimate"] or row["rate"] or 0.0),
            row["name"])


def fit_summary(fit: StoredFit, last_vote: int) -> dict:
    """Return when the figures were fitted and how many votes have come in since."""
    if not fit.exists:
        return {"at": None, "judgments": 0, "votes_since": last_vote, "excluded_voters": 0}
    return {"at": fit.created_at.isoformat(timespec="seconds") + "Z",
            "judgments": fit.corrected["judgments"],
            "votes_since": max(last_vote - fit.last_vote_id, 0),
            "excluded_voters": fit.voters["excluded"]}


def leaderboard(fit: StoredFit, last_vote: int, category: str | None = None,
                photos: bool = False) -> dict:
    """Return every variant's row, ranked, with the stopping rule's verdict; `last_vote`
    is the newest vote's id; `category`: that category's board (its queries only; the
    counts are the fit's, as of the fit); `photos`: the "on your photos" board (the
    try-it-out votes, never pooled). KeyError for a board the fit lacks."""
    categories, has_photos = fit.categories, fit.has_photos
    counts = None
    if category is not None or photos:
        fit = fit.for_photos() if photos else fit.for_category(category)
        counts = fit.corrected.get("counts", {})
    variants = db.session.execute(sa.select(
        Variant.slug, Variant.name, Variant.dope_count, Variant.nope_count, Variant.skip_count,
        Variant.judged_dope, Variant.judged_nope, Variant.judged_skip,
        Variant.offline_accuracy, Variant.control, Variant.parent_slug, Variant.round)).all()
    rows = sorted((variant_row(v, fit, counts) for v in variants), key=_sort_key)
    real = [r for r in rows if not r["control"]]
    for r in real:
        if r["rank_low"] is None:  # not in the fit yet: any place
            r["rank_low"], r["rank_high"] = 1, len(real)
    corrected = fit.corrected
    leader, tied = corrected.get("leader"), corrected.get("tied_with", [])
    return {
        "variants": rows,
        "total_votes": sum(v.dope_count + v.nope_count for v in variants),
        "total_skips": sum(v.skip_count for v in variants),
        "settled": fit.settled,
        "leader": leader,
        "tied_with": tied if fit.settled else [],
        "epsilon": fit.body.get("epsilon"),
        "separation": {"status": "settled" if fit.settled else
                       ("open" if corrected.get("judgments") else "no_data"),
                       "leader": leader, "margins": corrected.get("margins", {})},
        "fit": fit_summary(fit, last_vote),
        "category": category,
        "categories": categories,
        "photos": photos,
        "photos_board": has_photos,
    }


def current_board(category: str | None = None, photos: bool = False) -> tuple[dict, StoredFit]:
    """Return the board (of one category, of the photos, or of all) and the fit it shows;
    start a background fit when one is due. KeyError for a board the fit lacks."""
    fit, last_vote = latest_fit(), newest_vote_id()
    maybe_refit(fit, last_vote)
    return leaderboard(fit, last_vote, category, photos), fit
