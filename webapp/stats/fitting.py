"""The fit's figures from judgment arrays: raw and corrected standings, the control's
reference row, the epochs' weights and those of the allocation the fit starts.

Pure (webapp.jobs.fit reads the database and stores the result as JSON).
"""

from __future__ import annotations

import json

import numpy as np

from webapp.stats import estimates, standings
from webapp.stats.allocation import make_allocation
from webapp.stats.design import CONTROL, Design
from webapp.stats.exclusion import voter_report


def standing_json(st: standings.Standing, slugs: list[str]) -> dict:
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
        estimate, low, high = standings.vector_interval(t, weights, ("v", i), standings.ALPHA)
        out[slugs[i]] = {"estimate": _num(estimate), "ci_low": _num(low), "ci_high": _num(high)}
    return out


def _num(x: float) -> float | None:
    return round(float(x), 5) if np.isfinite(x) else None


def weight_key(design: Design, key: tuple) -> str:
    """A Ledger vector's key by variant ids, stable from fit to fit: v:<id> or d:<id>:<id>."""
    return ":".join([key[0], *(str(design.variant_ids[i]) for i in key[1:])])


def parse_epoch_weights(stored: dict[int, str], design: Design) -> dict[int, dict[tuple, float]]:
    """Return {fit id: h per Ledger key} from the weights fits stored (JSON by weight_key);
    keys naming a variant this design lacks are dropped."""
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
              epoch_h: dict[int, dict], omega: np.ndarray | None = None,
              people: np.ndarray | None = None) -> estimates.Ledger:
    """Return the judgments under mask as a Ledger: one epoch per fit that drew them,
    in order, each with the weights that fit stored before its votes were drawn (a
    fit no longer stored, or votes before any fit: every weight 1), their voters and the
    voters' weights omega (None: 1)."""
    ledger = estimates.Ledger(weights)
    people = voter_numbers(votes) if people is None else people
    for epoch in np.unique(votes["epoch"][mask]):
        ledger.start_epoch(epoch_h.get(int(epoch), {}))
        part = mask & (votes["epoch"] == epoch)
        ledger.add_many(votes["cell"][part], votes["dope"][part], votes["probability"][part],
                        people[part], None if omega is None else omega[part])
    return ledger


def voter_numbers(votes: dict) -> np.ndarray:
    """Number each judgment's voter (the cookie's id), so that the variance is clustered
    by voter; a judgment without one is its own voter."""
    voter = votes["voter"]
    missing = np.array([v is None for v in voter], dtype=bool)
    out = np.empty(len(voter), dtype=np.int64)
    if (~missing).any():
        _, out[~missing] = np.unique(voter[~missing].astype(str), return_inverse=True)
    known = int(out[~missing].max()) + 1 if (~missing).any() else 0
    out[missing] = known + np.arange(int(missing.sum()))
    return out


def next_epoch_weights(design: Design, weights: estimates.Weights, focus,
                       shares: dict[str, float]) -> dict[str, float]:
    """Return the weights h of the epoch the allocation for `focus` starts (with the app's
    `shares`, control_share and adaptive_share, as the workers will draw it)."""
    shares, adaptive = {"control_share": shares["control_share"]}, shares["adaptive_share"]
    drawn = make_allocation(design, adaptive_share=adaptive, focus=focus, **shares)
    uniform = make_allocation(design, adaptive_share=0.0, **shares)
    h = estimates.epoch_weights(weights, drawn.probability, uniform.probability)
    return {weight_key(design, k): round(v, 6) for k, v in h.items()}


def category_json(design: Design, slugs: list[str], votes: dict, mask: np.ndarray,
                  omega: np.ndarray, epoch_h: dict[int, dict], queries: set[int],
                  people: np.ndarray | None = None) -> dict:
    """Return one category's corrected figures: the same estimates, intervals and stop
    over that category's queries only. Every judgment enters (the estimate's denominator
    counts them all; cells of other categories weigh 0), with the voters' weights."""
    sub = design.restricted(queries)
    weights = estimates.Weights(sub)
    ledger = ledger_of(weights, votes, mask, epoch_h, omega, people)
    st = standings.standing(sub, ledger, weights=weights, seed=ledger.total.n)
    mine = np.zeros(len(design.cells), dtype=bool)
    for m in sub.by_variant:
        mine[list(m.values())] = True
    judged = int(ledger.total.judged[mine].sum())
    counts = variant_counts(sub, ledger.total, slugs)
    return {"queries": len(queries), "judgments": judged, "counts": counts,
            **standing_json(st, slugs),
            "reference": reference_json(sub, ledger.total, weights, slugs)}


def variant_counts(design: Design, t: estimates.Tally, slugs: list[str]) -> dict:
    """Return each variant's judgments and dopes on its own cells (pooled), by slug."""
    return {slugs[i]: {"judgments": int(t.judged[list(m.values())].sum()),
                       "dopes": int(t.dopes[list(m.values())].sum())}
            for i, m in enumerate(design.by_variant) if m}


def fit_body(design: Design, slugs: list[str], votes: dict, *, positive: np.ndarray | None,
             epoch_h: dict[int, dict], shares: dict[str, float],
             categories: dict[str, set[int]] | None = None) -> tuple[dict, dict]:
    """Return the fit's figures, raw (every judgment) and corrected (voter model), per
    category (corrected), and the epoch weights of the allocation it starts.
    `positive`: per cell, positive gold; `epoch_h`: the weights each epoch's fit stored;
    `shares`: the app's rule shares; `categories`: each category's query image ids."""
    gold = votes.get("gold", np.zeros(len(votes["id"]), dtype=bool))
    legacy = np.isnan(votes["probability"])
    weighted = ~legacy & ~gold  # warm-up gold pairs weigh voters, never variants
    weight, report = voter_report(votes, design, positive, slugs)
    weights, people = estimates.Weights(design), voter_numbers(votes)
    out = {"judgments": int(len(votes["id"])), "legacy_judgments": int(legacy.sum()),
           "gold_first_judgments": int(gold.sum()),
           "alpha": standings.ALPHA, "epsilon": standings.EPSILON, "voters": report}
    focus = None
    for name, mask, omega in (("raw", weighted, None), ("corrected", weighted & (weight > 0),
                                                         weight)):
        ledger = ledger_of(weights, votes, mask, epoch_h, omega, people)
        st = standings.standing(design, ledger, weights=weights, seed=ledger.total.n)
        out[name] = {"judgments": ledger.total.n, **standing_json(st, slugs),
                     "reference": reference_json(design, ledger.total, weights, slugs)}
        if name == "corrected":
            focus = st.focus()
            out["allocation"] = {"focus": [[design.variant_ids[i], design.variant_ids[j], w]
                                           for (i, j), w in (focus or {}).items()]}
    out["categories"] = {c: category_json(design, slugs, votes, weighted & (weight > 0), weight,
                                          epoch_h, queries, people)
                         for c, queries in sorted((categories or {}).items()) if queries}
    return out, next_epoch_weights(design, weights, focus, shares)
