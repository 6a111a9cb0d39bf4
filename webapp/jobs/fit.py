"""The periodic fit: voter model, exclusions, pooled weighted estimates, stored as JSON.

Too slow for a request at a million votes (a second or two), so it runs outside them:
`flask --app webapp fit` (once, or `--every SECONDS`), after `import-build`, and in a
background thread (webapp.jobs.fit_schedule) of a worker that serves the leaderboard or
the team page when the newest fit is older than DOPE_FIT_INTERVAL and votes came in
since. The leaderboard reads the newest fit_result row (webapp.jobs.fit_store). Two
workers may both start a fit at once; each writes its own row and the newest wins: no
harm but the work.
"""

from __future__ import annotations

import json
import time

import numpy as np
import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.jobs.fit_store import newest_vote_id
from webapp.jobs.photo_fit import photo_figures
from webapp.models import FitResult, Image, Pair, Variant, Vote
from webapp.stats.allocation import GOLD_RULE
from webapp.stats.design import CONTROL, REAL, Design, build_design
from webapp.stats.exclusion import positive_gold
from webapp.stats.fitting import fit_body, parse_epoch_weights


def load_design() -> tuple[Design, list[str], dict[int, int]]:
    """Return the design, the variant slugs in its order and {pair id: cell}."""
    variants = db.session.execute(sa.select(Variant.id, Variant.slug, Variant.control)
                                  .order_by(Variant.id)).all()
    pairs = db.session.execute(sa.select(Pair.id, Pair.variant_id, Pair.query_id,
                                         Pair.match_id).where(Pair.rank == 1)
                               .order_by(Pair.id)).all()
    design = build_design([(v.id, CONTROL if v.control else REAL) for v in variants], pairs)
    cell_of = {}
    for pair_id, _, query_id, match_id in pairs:
        cell = design.cell_index.get((query_id, match_id))
        if cell is not None:
            cell_of[pair_id] = cell
    return design, [v.slug for v in variants], cell_of


def load_votes(cell_of: dict[int, int]) -> dict[str, np.ndarray]:
    """Return every judgment (skips left out) as arrays: vote id, cell, voter id, dope,
    probability (NaN for votes from before probabilities were recorded), whether it was
    a warm-up gold pair (outside the allocation: the voter model only)."""
    rows = db.session.execute(
        sa.select(Vote.id, Vote.pair_id, Vote.voter_id, Vote.verdict, Vote.probability,
                  Vote.fit_id, Vote.origin, Vote.reason)
        .where(Vote.verdict != "skip").order_by(Vote.id).execution_options(yield_per=20000))
    ids, cells, who, dope, prob, epoch, origin, gold = [], [], [], [], [], [], [], []
    for vote_id, pair_id, voter_id, verdict, probability, fit_id, source, reason in rows:
        cell = cell_of.get(pair_id)
        if cell is None:
            continue
        ids.append(vote_id)
        cells.append(cell)
        who.append(voter_id)
        dope.append(verdict == "dope")
        prob.append(np.nan if probability is None else probability)
        epoch.append(0 if fit_id is None else fit_id)
        origin.append(source)
        gold.append(reason == GOLD_RULE)
    return {"gold": np.array(gold, dtype=bool), "origin": np.array(origin, dtype=object),
            "id": np.array(ids, dtype=np.int64),
            "cell": np.array(cells, dtype=np.int64),
            "voter": np.array(who, dtype=object), "dope": np.array(dope, dtype=np.int64),
            "probability": np.array(prob, dtype=float),
            "epoch": np.array(epoch, dtype=np.int64)}


def item_ids() -> dict[int, str]:
    """Return {image id: item id} of the images that carry one."""
    return dict(db.session.execute(sa.select(Image.id, Image.item_id)
                                   .where(Image.item_id.is_not(None))).all())


def load_epoch_weights(epochs, design: Design) -> dict[int, dict[tuple, float]]:
    """Return {fit id: h per Ledger key} for the fits that started these epochs."""
    ids = sorted({int(e) for e in epochs if e})
    stored = dict(db.session.execute(sa.select(FitResult.id, FitResult.epoch_weights)
                                     .where(FitResult.id.in_(ids))).all()) if ids else {}
    return parse_epoch_weights(stored, design)


def query_categories(design: Design) -> dict[str, set[int]]:
    """Return each catalog category's query images (the real variants' queries)."""
    queries = {q for i in design.real() for q in design.by_variant[i]}
    out: dict[str, set[int]] = {}
    for image_id, category in db.session.execute(sa.select(Image.id, Image.category)):
        if image_id in queries:
            out.setdefault(category, set()).add(image_id)
    return out


def run_fit() -> FitResult:
    """Fit everything from the votes now in the database; store and return the result."""
    started = time.perf_counter()
    design, slugs, cell_of = load_design()
    last = newest_vote_id()
    votes = load_votes(cell_of)
    config = current_app.config
    body, epoch_weights = fit_body(
        design, slugs, votes, positive=positive_gold(design, item_ids()),
        epoch_h=load_epoch_weights(votes["epoch"], design),
        shares={"control_share": config["DOPE_CONTROL_SHARE"],
                "adaptive_share": config["DOPE_ADAPTIVE_SHARE"]},
        categories=query_categories(design))
    body["photos"] = photo_figures()  # "on your photos": never pooled with the above
    body["seconds"] = round(time.perf_counter() - started, 3)
    row = FitResult(last_vote_id=last, body=json.dumps(body, separators=(",", ":")),
                    epoch_weights=json.dumps(epoch_weights, separators=(",", ":")))
    db.session.add(row)
    db.session.commit()
    return row
