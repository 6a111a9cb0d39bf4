"""Photo weights: the challenger's metric refined on votes cast on visitors' photos.

By default (`--photo-votes report`) the photo votes only score the challenger and its
parent on photos. With `--photo-votes learn` they refine photo weights, which on
simulated phone photos passed their gate yet lowered the approval of photos' first
matches more often than they raised it (docs/benchmarks.md): opt in, and watch the
photo board.

Photo votes are another population than the game's (docs/retrain.md, "Votes on tried
photos"): pooled into one fit they pulled the catalog metric towards what works on
phone photos and cost the catalog up to 5 points (docs/benchmarks.md). So the catalog
weights are learned from catalog votes alone, and the photo votes refine a second set
of weights, used only to rank photos (the query service):

- the same fit (engine.retrain.model.learn), its prior centred on the catalog weights,
  so a few photo votes move them only as far as they can support;
- the same gate, on photo votes only, against the catalog weights: out-of-fold AUC,
  whole photos per fold, the bootstrap's 95% lower bound of the gain above zero. When
  it fails, photos are ranked by the catalog weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.retrain.model import MIN_VOTES, Model, auc, learn, weight_shares


@dataclass
class PhotoWeights:
    """What the photo votes gave: the gate's figures, and the weights when they pass."""

    gate: dict
    weights: dict[str, float] | None
    shares: dict[str, float] | None


def photo_report(X: np.ndarray, y: np.ndarray, groups: np.ndarray, catalog: Model,
                 parent: Model) -> dict:
    """Return how the challenger's weights and its parent's rank the photo votes (AUC of
    -D between dope and nope; the challenger never saw these votes), learning nothing."""
    return {"held_out_votes": int(len(y)), "held_out_queries": int(len(np.unique(groups))),
            "challenger_auc": round(auc(-(X @ catalog.vector()), y), 4),
            "parent_auc": round(auc(-(X @ parent.photo_vector()), y), 4),
            "used": False, "learned": False}


def learn_photo_weights(X: np.ndarray, y: np.ndarray, groups: np.ndarray, catalog: Model,
                        parent: Model, *, seed: int) -> PhotoWeights:
    """Refine the catalog model on photo votes (rows of X); gate against it."""
    if len(y) < MIN_VOTES or len(set(y)) < 2:
        return PhotoWeights({"skipped": f"{len(y)} judged photo votes; photo weights need "
                                        f"at least {MIN_VOTES}, dope and nope"}, None, None)
    prior = replace(catalog, report={"round": 1}, photo_weights=None)  # no slope refit
    learned = learn(X, y, groups, prior, seed=seed)
    gate = {("catalog_weights_auc" if k == "parent_auc" else k): v
            for k, v in learned.gate.items()}
    gate["parent_auc"] = round(auc(-(X @ parent.photo_vector()), y), 4)
    if not learned.published:
        return PhotoWeights(gate, None, None)
    return PhotoWeights(gate, learned.model.weights, weight_shares(learned.model, X))
