"""The "on your photos" board's figures: the try-it-out votes as their own population.

Each tried photo is a query, its variants' first matches the cells (pooled: a match two
variants share is one cell, judged once); the uploader judges every distinct first
match, so each judgment is a uniform draw over the cells, probability 1 / cells. The
same estimates, voter-clustered confidence sequences and stop as the catalog board
(webapp.stats), never pooled with it. A vote judges the image pair (photo, match)
whatever rank it was shown at: a "next one" that is another variant's first match
counts for it (it is not shown twice). Skips, and next ones no variant returns first,
are not in it.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import UploadMatch, UploadVote, Variant
from webapp.stats import estimates, standings
from webapp.stats.design import REAL, build_design
from webapp.stats.fitting import ledger_of, standing_json, variant_counts, voter_numbers


def photo_figures() -> dict | None:
    """Return the board's figures (None before any judged photo)."""
    variants = db.session.execute(sa.select(Variant.id, Variant.slug)
                                  .where(Variant.control.is_(False)).order_by(Variant.id)).all()
    firsts = db.session.execute(sa.select(UploadMatch.id, UploadMatch.variant_id,
                                          UploadMatch.upload_id, UploadMatch.image_id)
                                .where(UploadMatch.rank == 1).order_by(UploadMatch.id)).all()
    # Query ids are the negated upload ids: never an image id.
    design = build_design([(v.id, REAL) for v in variants],
                          [(m, v, -u, image) for m, v, u, image in firsts])
    rows = db.session.execute(sa.select(UploadVote.upload_id, UploadVote.image_id,
                                        UploadVote.voter_id, UploadVote.verdict)
                              .where(UploadVote.verdict != "skip")
                              .order_by(UploadVote.id)).all()
    cells = [design.cell_index.get((-u, image)) for u, image, _, _ in rows]
    kept = [(c, r) for c, r in zip(cells, rows, strict=True) if c is not None]
    if not kept:
        return None
    votes = {"cell": np.array([c for c, _ in kept], dtype=np.int64),
             "dope": np.array([r.verdict == "dope" for _, r in kept], dtype=np.int64),
             "voter": np.array([r.voter_id for _, r in kept], dtype=object),
             "probability": np.full(len(kept), 1.0 / len(design.cells)),
             "epoch": np.zeros(len(kept), dtype=np.int64)}
    weights = estimates.Weights(design)
    ledger = ledger_of(weights, votes, np.ones(len(kept), dtype=bool), {},
                       people=voter_numbers(votes))
    st = standings.standing(design, ledger, weights=weights, seed=len(kept))
    slugs = [v.slug for v in variants]
    return {"photos": len({u for u, _, _, _ in rows}), "judgments": len(kept),
            "counts": variant_counts(design, ledger.total, slugs), **standing_json(st, slugs)}
