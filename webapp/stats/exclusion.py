"""Which voters and origins a fit leaves out, and the evidence the team view lists.

Pure: judgment arrays in (webapp.jobs.fit loads them), masks and report rows out.
The voter model itself is webapp.stats.voters.
"""

from __future__ import annotations

import hashlib

import numpy as np

from webapp.stats import looking, quality, voters
from webapp.stats.design import CONTROL, Design
from webapp.stats.estimates import variant_weights

EXCLUDED_LISTED = 200  # voters listed in the team view (the most active first)


def negative_gold(design: Design) -> np.ndarray:
    """Return, per cell, whether it is negative gold: a control pair no real variant returns."""
    gold = np.zeros(len(design.cells), dtype=bool)
    for i in design.of_kind(CONTROL):
        gold[list(design.by_variant[i].values())] = True
    for i in design.real():
        gold[list(design.by_variant[i].values())] = False
    return gold


def positive_gold(design: Design, item_of: dict[int, str]) -> np.ndarray:
    """Return, per cell, whether it is positive gold: a real variant's match of the same
    product as its query (both images carry one item_id, docs/build-format.md);
    `item_of` maps image ids to item ids."""
    gold = np.zeros(len(design.cells), dtype=bool)
    for i in design.real():
        for cell in design.by_variant[i].values():
            q, m = design.cells[cell]
            gold[cell] = item_of.get(q) is not None and item_of.get(q) == item_of.get(m)
    return gold


def _groups(labels) -> tuple[np.ndarray, np.ndarray]:
    if len(labels):
        return np.unique(labels, return_inverse=True)
    return np.array([], dtype=object), np.zeros(0, dtype=np.int64)


def membership(design: Design, cells: np.ndarray) -> np.ndarray:
    """Return judgments x real variants: whether each judged cell is the variant's."""
    return (variant_weights(design)[design.real()] != 0).T[cells]


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
    by two voters or more and at chance on gold (all of them together), or when its votes follow
    one variant rather than the pictures, beyond how much honest people differ
    (webapp.stats.quality). Being many is not evidence: an origin is judged on how far
    it is from the crowd. Votes without an origin stand for their voter."""
    labels = np.array([o if o is not None else f"voter:{v}"
                       for o, v in zip(votes["origin"], voter, strict=True)], dtype=object)
    names, origin = _groups(labels)
    records = voters.gold_records(origin, votes["dope"], on_gold, len(names))
    distinct = np.unique(np.stack([origin, voter]), axis=1) if len(voter) \
        else np.zeros((2, 0), dtype=np.int64)
    voters_per = np.bincount(distinct[0], minlength=len(names))
    z, column = quality.follows(*voters.targeting_effects(
        origin, votes["cell"], votes["dope"].astype(float), membership(design, votes["cell"]),
        len(names)))
    real, chance = design.real(), quality.GoldFloor.chance()
    why = {}
    for o, r in enumerate(records):
        if z[o] > quality.Z_TARGETING:
            target = (slugs or design.variant_ids)[real[column[o]]]
            why[o] = f"follows {target} (z = {z[o]:.1f} beyond honest spread)"
        elif voters_per[o] >= 2 and not str(names[o]).startswith("voter:") and chance.below(r):
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
    """Fit the voter model; return (each judgment's weight, report for the team view): 0
    for excluded voters and origins, else webapp.stats.quality's omega (below 1 for voters
    below the crowd's floor without strong evidence) times webapp.stats.looking's
    P(discerning). `positive`: per cell, positive gold (None: none); `slugs`: variant
    names."""
    names, voter = _groups(votes["voter"])
    negative = negative_gold(design)
    on_gold = negative[votes["cell"]]
    records = voters.gold_records(voter, votes["dope"], on_gold, len(names))
    gold = np.where(negative, 0, -1)
    if positive is not None:
        gold = np.where(positive, 1, gold)
    model = voters.dawid_skene(voter, votes["cell"], votes["dope"].astype(float), gold,
                               len(names)) if len(names) else None
    floor = quality.GoldFloor.of(records)
    excluded = [v for v, r in enumerate(records) if floor.below(r)]
    by_origin, origin_rows = origin_report(votes, voter, on_gold, design, slugs) \
        if "origin" in votes else (np.zeros(len(voter), dtype=bool), [])
    keep = ~np.isin(voter, excluded) & ~by_origin
    omega = np.array([floor.weight(r) for r in records]) if records else np.ones(0)
    looks = looking.fit_looking(*np.array([(r.gold_votes, r.gold_dopes, r.other_votes,
                                            r.other_dopes) for r in records]).reshape(-1, 4).T)
    lowered = (omega < 1) & ~np.isin(np.arange(len(names)), excluded)
    omega = omega * looks.weight
    weight = np.where(keep, omega[voter] if len(voter) else 1.0, 0.0)
    rows = [{"voter": hashlib.sha256(str(names[v]).encode()).hexdigest()[:12],
             **gold_row(records[v]),
             "sensitivity": round(float(model.sensitivity[v]), 3),
             "specificity": round(float(model.specificity[v]), 3)}
            for v in most_active(excluded, records)]
    return weight, {"voters": len(names), "excluded": len(excluded),
                    "down_weighted": int(lowered.sum()), "looking": looks.summary(),
                  "excluded_origins": len(origin_rows), "listed_origins": origin_rows,
                  "excluded_judgments": int((~keep).sum()), "listed": rows,
                  "rule": floor.describe(), "gold_floor": round(floor.floor, 4),
                  "prevalence": round(model.prevalence, 4) if model else None}
