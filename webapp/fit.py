"""The periodic fit: voter model, exclusions, pooled weighted estimates, stored as JSON.

Too slow for a request at a million votes (a second or two), so it runs outside them:
`flask --app webapp fit` (once, or `--every SECONDS`), after `import-build`, and in a
background thread of a worker that serves the leaderboard or the team page when the
newest fit is older than DOPE_FIT_INTERVAL and votes came in since. The leaderboard
reads the newest fit_result row. Two workers may both start a fit at once; each
writes its own row and the newest wins: no harm but the work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import timedelta

import numpy as np
import sqlalchemy as sa
from flask import Flask, current_app

from . import estimates, voters
from .allocation import make_allocation
from .design import CONTROL, REAL, Design, build_design
from .extensions import db
from .models import FitResult, Image, Pair, Variant, Vote, utcnow

logger = logging.getLogger(__name__)
EXCLUDED_LISTED = 200  # voters listed in the team view (the most active first)


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
    probability (NaN for votes from before probabilities were recorded)."""
    rows = db.session.execute(
        sa.select(Vote.id, Vote.pair_id, Vote.voter_id, Vote.verdict, Vote.probability,
                  Vote.fit_id, Vote.origin)
        .where(Vote.verdict != "skip").order_by(Vote.id).execution_options(yield_per=20000))
    ids, cells, who, dope, prob, epoch, origin = [], [], [], [], [], [], []
    for vote_id, pair_id, voter_id, verdict, probability, fit_id, source in rows:
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
    return {"origin": np.array(origin, dtype=object), "id": np.array(ids, dtype=np.int64),
            "cell": np.array(cells, dtype=np.int64),
            "voter": np.array(who, dtype=object), "dope": np.array(dope, dtype=np.int64),
            "probability": np.array(prob, dtype=float),
            "epoch": np.array(epoch, dtype=np.int64)}


def negative_gold(design: Design) -> np.ndarray:
    """Return, per cell, whether it is negative gold: a control pair no real variant returns."""
    gold = np.zeros(len(design.cells), dtype=bool)
    for i in design.of_kind(CONTROL):
        gold[list(design.by_variant[i].values())] = True
    for i in design.real():
        gold[list(design.by_variant[i].values())] = False
    return gold


def positive_gold(design: Design) -> np.ndarray:
    """Return, per cell, whether it is positive gold: a real variant's match of the same
    product as its query (both images carry one item_id, docs/build-format.md)."""
    item = dict(db.session.execute(sa.select(Image.id, Image.item_id)
                                   .where(Image.item_id.is_not(None))).all())
    gold = np.zeros(len(design.cells), dtype=bool)
    for i in design.real():
        for cell in design.by_variant[i].values():
            q, m = design.cells[cell]
            gold[cell] = item.get(q) is not None and item.get(q) == item.get(m)
    return gold


def standing_json(st: estimates.Standing, slugs: list[str]) -> dict:
    """Return a Standing as JSON: per variant slug, and the stopping rule's verdict."""
    rows = {}
    for k, i in enumerate(st.positions):
        rows[slugs[i]] = {"estimate": _num(st.estimate[k]), "ci_low": _num(st.low[k]),
                          "ci_high": _num(st.high[k]), "rank_low": st.ranks[k][0],
                          "rank_high": st.ranks[k][1], "p_best": round(st.p_best[k], 4)}
    return {"variants": rows, "leader": slugs[st.leader] if st.leader is not None else None,
            "settled": st.settled, "tied_with": [slugs[j] for j in st.tied_with],
            "margins": {slugs[j]: [_num(lo), _num(hi)] for j, (lo, hi) in st.margins.items()}}


def reference_json(design: Design, t: estimates.Tally, weights: estimates.Weights,
                   slugs: list[str]) -> dict:
    """Return the control's estimate and interval (a reference row: no rank)."""
    out = {}
    for i in design.of_kind(CONTROL):
        estimate, low, high = estimates.vector_interval(t, weights, ("v", i), estimates.ALPHA)
        out[slugs[i]] = {"estimate": _num(estimate), "ci_low": _num(low), "ci_high": _num(high)}
    return out


def _num(x: float) -> float | None:
    return round(float(x), 5) if np.isfinite(x) else None


def _groups(labels) -> tuple[np.ndarray, np.ndarray]:
    if len(labels):
        return np.unique(labels, return_inverse=True)
    return np.array([], dtype=object), np.zeros(0, dtype=np.int64)


def membership(design: Design, cells: np.ndarray) -> np.ndarray:
    """Return judgments x real variants: whether each judged cell is the variant's."""
    return (estimates.variant_weights(design)[design.real()] != 0).T[cells]


def gold_row(record: voters.GoldRecord) -> dict:
    """The team view's evidence for one excluded voter or origin."""
    contrast, sd = record.contrast()
    return {"votes": record.gold_votes + record.other_votes, "gold_votes": record.gold_votes,
            "gold_dopes": record.gold_dopes, "other_votes": record.other_votes,
            "other_dopes": record.other_dopes, "contrast": round(contrast, 3),
            "contrast_sd": round(sd, 3)}


def origin_report(votes, voter: np.ndarray, on_gold: np.ndarray, design: Design,
                  slugs=None) -> tuple[np.ndarray, list]:
    """Return (mask of judgments from excluded origins, rows for the team view).

    Votes are grouped by origin (a keyed hash of the client address) as well as by
    voter: a script that drops its cookie every few votes is many voters with little
    evidence each, but one origin with a lot. An origin is excluded when it is shared
    by two voters or more and at chance on gold, or when its votes follow one variant
    rather than the pictures (voters.targeting). Votes without an origin stand for
    their voter."""
    labels = np.array([o if o is not None else f"voter:{v}"
                       for o, v in zip(votes["origin"], voter, strict=True)], dtype=object)
    names, origin = _groups(labels)
    records = voters.gold_records(origin, votes["dope"], on_gold, len(names))
    distinct = np.unique(np.stack([origin, voter]), axis=1) if len(voter) \
        else np.zeros((2, 0), dtype=np.int64)
    voters_per = np.bincount(distinct[0], minlength=len(names))
    z, column = voters.targeting(origin, votes["cell"], votes["dope"].astype(float),
                                 membership(design, votes["cell"]), len(names))
    real = design.real()
    why = {}
    for o, r in enumerate(records):
        if z[o] > voters.Z_TARGETING:
            target = (slugs or design.variant_ids)[real[column[o]]]
            why[o] = f"follows {target} (z = {z[o]:.1f})"
        elif voters_per[o] >= 2 and not str(names[o]).startswith("voter:") and r.at_chance():
            why[o] = "at chance on gold"
    bad = list(why)
    rows = [{"origin": str(names[o])[:12], "voters": int(voters_per[o]), "why": why[o],
             **gold_row(records[o])} for o in most_active(bad, records)]
    return np.isin(origin, bad), rows


def most_active(indices: list[int], records: list) -> list[int]:
    """The first EXCLUDED_LISTED of indices, most judgments first."""
    return sorted(indices, key=lambda i: -(records[i].gold_votes + records[i].other_votes))[
        :EXCLUDED_LISTED]


def voter_report(votes, design: Design, positive=None, slugs=None) -> tuple[np.ndarray, dict]:
    """Fit the voter model; return (mask of judgments kept, report for the team view).
    `positive`: per cell, positive gold (None: none); `slugs`: variant names."""
    names, voter = _groups(votes["voter"])
    negative = negative_gold(design)
    on_gold = negative[votes["cell"]]
    records = voters.gold_records(voter, votes["dope"], on_gold, len(names))
    gold = np.where(negative, 0, -1)
    if positive is not None:
        gold = np.where(positive, 1, gold)
    model = voters.dawid_skene(voter, votes["cell"], votes["dope"].astype(float), gold,
                               len(names)) if len(names) else None
    excluded = [v for v, r in enumerate(records) if r.at_chance()]
    by_origin, origin_rows = origin_report(votes, voter, on_gold, design, slugs) \
        if "origin" in votes else (np.zeros(len(voter), dtype=bool), [])
    keep = ~np.isin(voter, excluded) & ~by_origin
    rows = [{"voter": hashlib.sha256(str(names[v]).encode()).hexdigest()[:12],
             **gold_row(records[v]),
             "sensitivity": round(float(model.sensitivity[v]), 3),
             "specificity": round(float(model.specificity[v]), 3)}
            for v in most_active(excluded, records)]
    return keep, {"voters": len(names), "excluded": len(excluded),
                  "excluded_origins": len(origin_rows), "listed_origins": origin_rows,
                  "excluded_judgments": int((~keep).sum()), "listed": rows,
                  "rule": f"excluded when P(gold contrast > {voters.J_MIN}) < 5%",
                  "prevalence": round(model.prevalence, 4) if model else None}


def weight_key(design: Design, key: tuple) -> str:
    """A Ledger vector's key by variant ids, stable from fit to fit: v:<id> or d:<id>:<id>."""
    return ":".join([key[0], *(str(design.variant_ids[i]) for i in key[1:])])


def load_epoch_weights(epochs, design: Design) -> dict[int, dict[tuple, float]]:
    """Return {fit id: h per Ledger key} for the fits that started these epochs."""
    ids = sorted({int(e) for e in epochs if e})
    stored = dict(db.session.execute(sa.select(FitResult.id, FitResult.epoch_weights)
                                     .where(FitResult.id.in_(ids))).all()) if ids else {}
    position = {str(v): i for i, v in enumerate(design.variant_ids)}
    out = {}
    for fit_id, text in stored.items():
        h = {}
        for name, value in json.loads(text).items():
            kind, *ids_ = name.split(":")
            if all(i in position for i in ids_):
                h[(kind, *(position[i] for i in ids_))] = float(value)
        out[fit_id] = h
    return out


def ledger_of(weights: estimates.Weights, votes: dict, mask: np.ndarray,
              epoch_h: dict[int, dict]) -> estimates.Ledger:
    """Return the judgments under mask as a Ledger: one epoch per fit that drew them,
    in order, each with the weights that fit stored before its votes were drawn (a
    fit no longer stored, or votes before any fit: every weight 1)."""
    ledger = estimates.Ledger(weights)
    for epoch in np.unique(votes["epoch"][mask]):
        ledger.start_epoch(epoch_h.get(int(epoch), {}))
        part = mask & (votes["epoch"] == epoch)
        ledger.add_many(votes["cell"][part], votes["dope"][part], votes["probability"][part])
    return ledger


def next_epoch_weights(design: Design, weights: estimates.Weights, focus) -> dict[str, float]:
    """Return the weights h of the epoch the allocation for `focus` starts (with this
    app's shares, as the workers will draw it)."""
    config = current_app.config
    shares = {"control_share": config["DOPE_CONTROL_SHARE"]}
    drawn = make_allocation(design, adaptive_share=config["DOPE_ADAPTIVE_SHARE"],
                            focus=focus, **shares)
    uniform = make_allocation(design, adaptive_share=0.0, **shares)
    h = estimates.epoch_weights(weights, drawn.probability, uniform.probability)
    return {weight_key(design, k): round(v, 6) for k, v in h.items()}


def fit_body(design: Design, slugs: list[str], votes: dict) -> tuple[dict, dict]:
    """Return the fit's figures, raw (every judgment) and corrected (voter model), and
    the epoch weights of the allocation it starts."""
    weighted = ~np.isnan(votes["probability"])
    keep, report = voter_report(votes, design, positive_gold(design), slugs)
    weights = estimates.Weights(design)
    epoch_h = load_epoch_weights(votes["epoch"], design)
    out = {"judgments": int(len(votes["id"])), "legacy_judgments": int((~weighted).sum()),
           "alpha": estimates.ALPHA, "epsilon": estimates.EPSILON, "voters": report}
    focus = None
    for name, mask in (("raw", weighted), ("corrected", weighted & keep)):
        ledger = ledger_of(weights, votes, mask, epoch_h)
        st = estimates.standing(design, ledger, weights=weights, seed=ledger.total.n)
        out[name] = {"judgments": ledger.total.n, **standing_json(st, slugs),
                     "reference": reference_json(design, ledger.total, weights, slugs)}
        if name == "corrected":
            focus = st.focus()
            out["allocation"] = {"focus": [[design.variant_ids[i], design.variant_ids[j], w]
                                           for (i, j), w in (focus or {}).items()]}
    return out, next_epoch_weights(design, weights, focus)


def run_fit() -> FitResult:
    """Fit everything from the votes now in the database; store and return the result."""
    started = time.perf_counter()
    design, slugs, cell_of = load_design()
    last = db.session.scalar(sa.select(sa.func.max(Vote.id))) or 0
    votes = load_votes(cell_of)
    body, epoch_weights = fit_body(design, slugs, votes)
    body["seconds"] = round(time.perf_counter() - started, 3)
    row = FitResult(last_vote_id=last, body=json.dumps(body, separators=(",", ":")),
                    epoch_weights=json.dumps(epoch_weights, separators=(",", ":")))
    db.session.add(row)
    db.session.commit()
    return row


def latest_fit() -> tuple[FitResult | None, dict | None]:
    """Return the newest fit row and its body."""
    row = db.session.scalar(sa.select(FitResult).order_by(FitResult.id.desc()).limit(1))
    return row, (json.loads(row.body) if row is not None else None)


_RUNNING = threading.Lock()


def needs_fit(row: FitResult | None, last_vote: int) -> bool:
    """True when votes came in after the newest fit (the newest vote id is `last_vote`)
    and it is older than the interval."""
    interval = current_app.config["DOPE_FIT_INTERVAL"]
    if interval <= 0:
        return False
    if row is not None and row.created_at > utcnow() - timedelta(seconds=interval):
        return False
    return last_vote > (row.last_vote_id if row is not None else 0)


def maybe_refit(row: FitResult | None, last_vote: int) -> bool:
    """Start a fit in a background thread of this worker when one is due; return
    whether one was started."""
    if not needs_fit(row, last_vote) or not _RUNNING.acquire(blocking=False):
        return False
    app = current_app._get_current_object()
    threading.Thread(target=_fit_in_background, args=(app,), daemon=True).start()
    return True


def _fit_in_background(app: Flask) -> None:
    try:
        with app.app_context():
            run_fit()
    except Exception:  # noqa: BLE001 - a failed fit leaves the last one in place; say why
        logger.exception("The periodic fit failed")
    finally:
        _RUNNING.release()
