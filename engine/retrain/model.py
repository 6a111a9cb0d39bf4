"""Retrain from votes: a challenger metric learned from what voters approved.

The challenger re-ranks its parent's candidates (the base variant's Annoy top 50)
by a learned distance over frozen, precomputed feature families:

    D(q, c) = sum_f w_f * x_f(q, c)

- `base`: the base variant's own distance, under its own metric;
- `cnn:<network.layer>`: for every layer the build extracted, the L2 distance
  between L2-normalised rows;
- `wb:<family>`: the white-box families of engine.builder.whitebox (L1).

Each x_f is divided by its median over the training pairs (scales fixed at round 1
and inherited). A vote is a judgment of a (query, match) pair: P(dope) =
sigmoid(a - D(q, m)). The weights are the maximum a posteriori estimate under a
Gaussian prior centred on the parent (round 1: the base distance alone, its slope
fitted to the votes; later rounds: the parent's weights), so with no votes the
challenger ranks exactly as the parent does, and a few hundred votes move it only as
far as they can support. The prior's strength is chosen by cross-validation grouped by
query on a ranking criterion (held-out AUC of -D between dope and nope votes).

The gate: every vote is scored by a challenger fitted without its query (4 folds of
whole queries, the prior strength chosen inside each fold). On those out-of-fold
scores the challenger must beat its parent by the same criterion, with a paired
bootstrap over queries putting its AUC gain above zero with 95% confidence.
Otherwise no challenger is published.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from engine.builder.whitebox import FAMILIES

logger = logging.getLogger(__name__)

MIN_VOTES = 50
LAMBDAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
FOLDS = 4
BOOTSTRAP = 1000
CONFIDENCE = 0.95


class RetrainRefused(ValueError):
    """The votes cannot train a challenger; the message says why."""


@dataclass
class Model:
    """A retrained variant's distance: weights over feature families with fixed scales."""

    base: str  # the indexed variant whose candidates it re-ranks
    families: list[str]
    scales: dict[str, float]
    weights: dict[str, float]
    bias: float = 0.0
    report: dict = field(default_factory=dict)
    # For visitors' photos (engine.retrain.photo_metric): the weights refined on photo
    # votes, when they beat `weights` there; None: photos are ranked by `weights`.
    photo_weights: dict[str, float] | None = None

    def vector(self) -> np.ndarray:
        return np.array([self.weights.get(f, 0.0) for f in self.families])

    def photo_vector(self) -> np.ndarray:
        """Return the weights that rank a visitor's photo's candidates."""
        weights = self.photo_weights if self.photo_weights is not None else self.weights
        return np.array([weights.get(f, 0.0) for f in self.families])

    def to_dict(self) -> dict:
        out = {"base": self.base, "families": self.families, "scales": self.scales,
               "weights": self.weights, "bias": self.bias, "report": self.report}
        return out | ({"photo_weights": self.photo_weights} if self.photo_weights else {})

    @classmethod
    def from_dict(cls, d: dict) -> Model:
        photo = d.get("photo_weights")
        return cls(d["base"], list(d["families"]), dict(d["scales"]), dict(d["weights"]),
                   float(d.get("bias", 0.0)), dict(d.get("report", {})),
                   dict(photo) if photo else None)


def family_names(feature_keys: list[str]) -> list[str]:
    return ["base"] + [f"cnn:{k}" for k in feature_keys] + [f"wb:{f}" for f in FAMILIES]


# ---------------------------------------------------------------- logistic fit

def _loss_grad_hess(theta, X, y, lam, prior):
    """Penalised logistic loss of P(dope) = sigmoid(a - w.x); theta = (a, w)."""
    z = theta[0] - X @ theta[1:]
    p = 1.0 / (1.0 + np.exp(-z))
    diff = theta[1:] - prior
    loss = np.sum(np.logaddexp(0, z) - y * z) + 0.5 * lam * diff @ diff
    design = np.hstack([np.ones((len(X), 1)), -X])
    grad = design.T @ (p - y)
    grad[1:] += lam * diff
    hess = design.T @ (design * (p * (1 - p))[:, None])
    hess[1:, 1:] += lam * np.eye(len(prior))
    return loss, grad, hess


def fit_logistic(X: np.ndarray, y: np.ndarray, *, lam: float, prior: np.ndarray,
                 bias0: float = 0.0, iterations: int = 50) -> tuple[float, np.ndarray]:
    """Return (a, w) minimising the logistic loss plus lam/2 |w - prior|^2 (Newton)."""
    theta = np.concatenate([[bias0], prior]).astype(float)
    for _ in range(iterations):
        loss, grad, hess = _loss_grad_hess(theta, X, y, lam, prior)
        hess[0, 0] += 1e-9
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(theta)), grad)
        t = 1.0
        while t > 1e-4:
            trial = theta - t * step
            if _loss_grad_hess(trial, X, y, lam, prior)[0] <= loss:
                break
            t /= 2
        theta = theta - t * step
        if np.max(np.abs(t * step)) < 1e-8:
            break
    return float(theta[0]), theta[1:]


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """Return the probability that a dope pair scores above a nope pair (ties half)."""
    pos, neg = scores[y == 1], scores[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    ranks[order] = _average_ranks(values)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2)
                 / (len(pos) * len(neg)))


def _average_ranks(sorted_values: np.ndarray) -> np.ndarray:
    ranks = np.arange(1, len(sorted_values) + 1, dtype=float)
    _, start, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    for s, c in zip(start, counts, strict=True):
        if c > 1:
            ranks[s:s + c] = ranks[s:s + c].mean()
    return ranks


# ---------------------------------------------------------------- choosing and gating

def group_folds(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Return a fold number per row, whole groups (queries) per fold."""
    unique = rng.permutation(np.unique(groups))
    fold_of = {g: i % k for i, g in enumerate(unique)}
    return np.array([fold_of[g] for g in groups])


def choose_lambda(X, y, groups, prior, bias0, rng) -> tuple[float, dict]:
    """Return the prior strength with the best grouped cross-validated AUC."""
    folds = group_folds(groups, FOLDS, rng)
    scores = {}
    for lam in LAMBDAS:
        held = []
        for k in range(FOLDS):
            train, test = folds != k, folds == k
            if len(set(y[train])) < 2 or len(set(y[test])) < 2:
                continue
            _, w = fit_logistic(X[train], y[train], lam=lam, prior=prior, bias0=bias0)
            held.append(auc(-(X[test] @ w), y[test]))
        scores[lam] = float(np.mean(held)) if held else float("nan")
    valid = {k: v for k, v in scores.items() if not math.isnan(v)}
    # Ties go to the stronger prior (closer to the parent).
    best = max(valid, key=lambda k: (round(valid[k], 6), k)) if valid else max(LAMBDAS)
    return best, scores


def out_of_fold_scores(X, y, groups, prior, bias0, rng) -> tuple[np.ndarray, list]:
    """Return every vote's challenger score from a fit that never saw its query (whole
    queries per fold, the prior strength chosen inside each fold), and those strengths."""
    folds = group_folds(groups, FOLDS, rng)
    scores, lambdas = -(X @ prior), []
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        if not test.any() or len(set(y[train])) < 2:
            continue
        lam, _ = choose_lambda(X[train], y[train], groups[train], prior, bias0, rng)
        _, w = fit_logistic(X[train], y[train], lam=lam, prior=prior, bias0=bias0)
        scores[test] = -(X[test] @ w)
        lambdas.append(lam)
    return scores, lambdas


def paired_bootstrap(challenger, parent, y, groups, rng) -> np.ndarray:
    """Return bootstrap draws of AUC(challenger) - AUC(parent), resampling queries."""
    by_group = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    keys = list(by_group)
    draws = []
    for _ in range(BOOTSTRAP):
        rows = np.concatenate([by_group[keys[j]] for j in rng.integers(0, len(keys), len(keys))])
        a, b = auc(challenger[rows], y[rows]), auc(parent[rows], y[rows])
        if not (math.isnan(a) or math.isnan(b)):
            draws.append(a - b)
    return np.array(draws)


@dataclass
class Learned:
    model: Model
    gate: dict
    published: bool


def learn(X: np.ndarray, y: np.ndarray, groups: np.ndarray, parent: Model, *,
          seed: int) -> Learned:
    """Fit the challenger to judged pairs (rows of X), gate it, refit on everything."""
    rng = np.random.default_rng(seed)
    prior = parent.vector()
    # Round 1: the parent is the base distance alone; fit its slope and bias to the votes.
    if np.count_nonzero(prior) == 1 and prior[0] != 0 and parent.report.get("round", 0) == 0:
        a, slope = fit_logistic(X[:, :1], y, lam=0.0, prior=np.array([0.0]))
        prior = np.zeros(len(prior))
        prior[0] = max(float(slope[0]), 1e-3)
    else:
        a = parent.bias
    challenger_scores, cv = out_of_fold_scores(X, y, groups, prior, a, rng)
    parent_scores = -(X @ prior)
    gain = auc(challenger_scores, y) - auc(parent_scores, y)
    draws = paired_bootstrap(challenger_scores, parent_scores, y, groups, rng)
    low = float(np.quantile(draws, 1 - CONFIDENCE)) if len(draws) else float("nan")
    published = bool(len(draws) and low > 0)
    gate = {"criterion": "out-of-fold AUC of -D between dope and nope votes, "
                         f"{FOLDS} folds of whole queries",
            "held_out_queries": int(len(np.unique(groups))), "held_out_votes": int(len(y)),
            "challenger_auc": round(auc(challenger_scores, y), 4),
            "parent_auc": round(auc(parent_scores, y), 4),
            "gain": round(float(gain), 4), "gain_low_95": round(low, 4),
            "lambda_per_fold": cv}
    lam_all, _ = choose_lambda(X, y, groups, prior, a, rng)
    a_all, w_all = fit_logistic(X, y, lam=lam_all, prior=prior, bias0=a)
    model = Model(parent.base, parent.families, parent.scales,
                  dict(zip(parent.families, map(float, w_all), strict=True)), a_all)
    return Learned(model, gate | {"lambda_final": lam_all}, published)


def weight_shares(model: Model, X: np.ndarray) -> dict[str, float]:
    """Return each family's share of the learned distance's spread (|w_f| * sd of x_f)."""
    spread = np.abs(model.vector()) * X.std(axis=0)
    total = spread.sum() or 1.0
    return {f: round(float(s / total), 4) for f, s in zip(model.families, spread, strict=True)}
