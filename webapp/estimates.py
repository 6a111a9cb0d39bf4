"""Each variant's approval from pooled, weighted judgments (docs/statistics.md).

A judgment t of cell c_t (an image pair), drawn by the allocation with probability
pi_t, with verdict y_t (1 dope, 0 nope; skips are not judgments), counts for every
variant that returns c_t. Variant v's approval is the mean, over its queries Q_v, of
its cells' approval. The Horvitz-Thompson term

    Z_vt = y_t * [c_t is v's cell] / (|Q_v| * pi_t)

has conditional mean exactly that approval whatever the allocation did before (pi_t
is the probability the allocation used at t), so the mean of the Z_vt is unbiased and
its centred sum a martingale: the confidence sequences of webapp/confseq.py apply.
Two variants are compared on the queries both answer, through the terms of the
difference, which vanish on the queries where they return the same match.

Everything here works from per-cell sums (`Tally`), so a fit over a million votes
costs one pass to tally them and then microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import confseq
from .design import Design

ALPHA = 0.05
EPSILON = 0.01  # variants within one point of the best count as best (epsilon-best)
MIN_JUDGMENTS = 200  # before this many, nothing is settled (the sequences are asymptotic)
POSTERIOR_DRAWS = 4000
BASELINE = None  # the control variate's constant (mean_and_sd); None: the dope rate


@dataclass
class Tally:
    """Per-cell sums of the judgments: n judgments in all; per cell the judgments, the
    dopes, and the sums of 1/pi and 1/pi^2 over the dopes and over all judgments."""

    n: int
    judged: np.ndarray
    dopes: np.ndarray
    dope_inv: np.ndarray
    dope_inv_sq: np.ndarray
    inv: np.ndarray
    inv_sq: np.ndarray

    @classmethod
    def empty(cls, cells: int) -> Tally:
        return cls(0, *(np.zeros(cells) for _ in range(6)))

    def add(self, cell: int, dope: bool, probability: float) -> None:
        """Count one judgment (the offline simulations add votes one at a time)."""
        inv = 1.0 / probability
        self.n += 1
        self.judged[cell] += 1
        self.inv[cell] += inv
        self.inv_sq[cell] += inv * inv
        if dope:
            self.dopes[cell] += 1
            self.dope_inv[cell] += inv
            self.dope_inv_sq[cell] += inv * inv


def tally(cells: int, cell: np.ndarray, dope: np.ndarray, probability: np.ndarray) -> Tally:
    """Return the tally of judgments given as arrays (cell index, dope 0/1, pi)."""
    inv = 1.0 / probability
    dope = dope.astype(float)

    def per_cell(values):
        return np.bincount(cell, weights=values, minlength=cells)

    return Tally(len(cell), np.bincount(cell, minlength=cells).astype(float),
                 per_cell(dope), per_cell(dope * inv), per_cell(dope * inv * inv),
                 per_cell(inv), per_cell(inv * inv))


def variant_weights(design: Design) -> np.ndarray:
    """Return W (variants x cells): 1/|Q_v| on each of v's cells."""
    w = np.zeros((len(design.variant_ids), len(design.cells)))
    for i, queries in enumerate(design.by_variant):
        if queries:
            w[i, list(queries.values())] += 1.0 / len(queries)
    return w


def difference_weights(design: Design, i: int, j: int) -> np.ndarray:
    """Return the weights of (approval of i) - (approval of j) over the queries both
    answer: +-1/|shared| on the cells of the queries where they differ."""
    d = np.zeros(len(design.cells))
    shared = design.shared(i, j)
    for q in design.differing(i, j):
        d[design.by_variant[i][q]] += 1.0 / shared
        d[design.by_variant[j][q]] -= 1.0 / shared
    return d


def plain_rate(weights: np.ndarray, t: Tally) -> float:
    """Return the unweighted dope rate of the judgments of the cells with a weight."""
    touched = weights != 0
    judged = float(t.judged[touched].sum())
    if judged:
        return float(t.dopes[touched].sum()) / judged
    return float(t.dopes.sum() / t.n) if t.n else 0.5


class Weights:
    """A design's weights, computed once: W, and each pair's difference weights."""

    def __init__(self, design: Design):
        self.design, self.w, self.differences = design, variant_weights(design), {}

    def difference(self, i: int, j: int) -> np.ndarray:
        if (i, j) not in self.differences:
            self.differences[(i, j)] = difference_weights(self.design, i, j)
        return self.differences[(i, j)]


def mean_and_sd(weights: np.ndarray, t: Tally,
                baseline: float | None = BASELINE) -> tuple[float, float]:
    """Return the mean and standard deviation of the terms

        (y_t - b) * weights[c_t] / pi_t + b * sum(weights)

    Each has the conditional mean weights . approval whatever the constant b: the
    baseline only takes variance away (y - b is smaller than y when approval is
    near b), as a control variate does. By default b is the plain dope rate of the
    judgments of the cells the weights touch, a plug-in whose own noise moves the
    estimate by O(1/n) (for a difference, whose weights sum to 0, not at all)."""
    if t.n == 0:
        return float("nan"), float("nan")
    b = plain_rate(weights, t) if baseline is None else baseline
    offset = b * float(weights.sum())
    w2 = weights * weights
    centred = float(weights @ (t.dope_inv - b * t.inv)) / t.n
    second = float(w2 @ ((1 - 2 * b) * t.dope_inv_sq + b * b * t.inv_sq)) / t.n
    return centred + offset, max(second - centred * centred, 0.0) ** 0.5


def interval(weights, t: Tally, alpha: float) -> tuple[float, float, float]:
    """Return (estimate, low, high): the confidence sequence at this many judgments."""
    mean, sd = mean_and_sd(weights, t)
    if t.n == 0:
        return mean, -np.inf, np.inf
    low, high = confseq.interval(mean, sd, t.n, alpha)
    return mean, low, high


def rank_ranges(low: list[float], high: list[float]) -> list[tuple[int, int]]:
    """Rank ranges from simultaneous intervals: 1 + those clearly above, to those not
    clearly below (itself included)."""
    out = []
    for i in range(len(low)):
        above = sum(1 for j in range(len(low)) if j != i and low[j] > high[i])
        not_below = sum(1 for j in range(len(low)) if high[j] >= low[i])
        out.append((1 + above, not_below))
    return out


def posterior_best(weights: Weights, t: Tally, real: list[int], seed: int = 0) -> list[float]:
    """Return each real variant's posterior probability of being the best.

    Each cell's approval has a Beta posterior (prior: strength 2 at the overall dope
    rate); a variant's approval is the mean of its cells', approximately normal with
    the covariance the shared cells give. Monte Carlo over that normal.
    """
    if not real:
        return []
    total = t.judged.sum()
    rate = (t.dopes.sum() + 1) / (total + 2)
    a, b = t.dopes + 2 * rate, t.judged - t.dopes + 2 * (1 - rate)
    mean = a / (a + b)
    var = mean * (1 - mean) / (a + b + 1)
    w = weights.w[real]
    mu, cov = w @ mean, (w * var) @ w.T
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal(mu, cov, size=POSTERIOR_DRAWS, method="cholesky")
    wins = np.bincount(draws.argmax(axis=1), minlength=len(real))
    return (wins / POSTERIOR_DRAWS).tolist()


@dataclass
class Standing:
    """The real variants' corrected figures and the stopping rule's verdict."""

    positions: list[int]  # design positions of the real variants
    estimate: list[float]
    low: list[float]
    high: list[float]
    ranks: list[tuple[int, int]]
    p_best: list[float]
    leader: int | None  # design position
    settled: bool
    tied_with: list[int]  # design positions within epsilon that the leader has not beaten
    margins: dict[int, tuple[float, float]]  # other -> (low, high) of leader - other
    challenger: int | None  # the comparison furthest from settled
    gaps: dict[int, float] = field(default_factory=dict)  # other -> leader - other
    errors: dict[int, float] = field(default_factory=dict)  # their standard errors

    def open_comparisons(self, epsilon: float = EPSILON) -> list[int]:
        """Return the variants the leader has not yet shown to be at most epsilon
        better than: lower bound of (leader - other) not above -epsilon."""
        return [j for j, (low, _) in self.margins.items() if not low > -epsilon]

    def focus(self, epsilon: float = EPSILON) -> dict[tuple[int, int], float] | None:
        """Return the adaptive rule's (leader, challenger) weights: the leader against
        each variant it has not yet settled with, alike (a challenger leaves when its
        comparison settles, as in successive elimination; weights by how hard each
        comparison looks did no better on the tuning seeds, and make the probabilities
        swing more); None before a leader."""
        if self.leader is None or not self.margins:
            return None
        still = self.open_comparisons(epsilon) or list(self.margins)
        return {(self.leader, j): 1.0 / len(still) for j in still}


def compare_leader(weights: Weights, t: Tally, leader: int, others: list[int], alpha: float,
                   epsilon: float, gaps: dict, errors: dict) -> tuple[bool, list[int], dict,
                                                                   int | None]:
    """Return (settled, tied, margins, challenger) of the leader against each other
    variant: settled when every difference's lower bound is above -epsilon; tied:
    those whose lower bound is not above 0; challenger: the smallest transportation
    cost (difference + epsilon) / standard error."""
    margins, settled, tied, costs = {}, t.n >= MIN_JUDGMENTS, [], {}
    for j in others:
        if weights.design.shared(leader, j) == 0:
            margins[j] = (-np.inf, np.inf)
            settled = False
            continue
        d = weights.difference(leader, j)
        mean, sd = mean_and_sd(d, t)
        gaps[j], errors[j] = mean, sd / np.sqrt(max(t.n, 1))
        _, low, high = interval(d, t, alpha)
        margins[j] = (low, high)
        settled = settled and low > -epsilon
        if low <= 0:
            tied.append(j)
        if np.any(d):
            costs[j] = (mean + epsilon) / max(sd / np.sqrt(t.n), 1e-12) if t.n else 0.0
    challenger = min(costs, key=costs.get) if costs else None
    return settled, tied, margins, challenger


def standing(design: Design, t: Tally, *, alpha: float = ALPHA, epsilon: float = EPSILON,
             seed: int = 0, weights: Weights | None = None) -> Standing:
    """Return every real variant's estimate, simultaneous interval and rank range, its
    probability of being best, and whether the best is settled (epsilon-best).

    Intervals are simultaneous over the real variants (alpha / K each); the leader's
    comparisons over the pairs that contain the true best (alpha / (K-1) each), so
    the stopping rule names a variant more than epsilon below the best with
    probability at most alpha, however often it is checked.
    """
    real = design.real()
    weights = weights or Weights(design)
    w = weights.w
    k = max(len(real), 1)
    rows = [interval(w[i], t, alpha / k) for i in real]
    estimate = [r[0] for r in rows]
    low, high = [r[1] for r in rows], [r[2] for r in rows]
    p_best = posterior_best(weights, t, real, seed) if t.n else [1.0 / k] * len(real)
    # The leader is the likeliest best: the posterior pools every cell, where a single
    # variant's weighted estimate uses only its own cells. (Any choice keeps the rule
    # valid: its error needs a miss of an interval that contains the true best.)
    leader = real[int(np.argmax(p_best))] if t.n and real else None
    settled, tied, margins, challenger, gaps, errors = False, [], {}, None, {}, {}
    if leader is not None and len(real) > 1:
        others = [i for i in real if i != leader]
        settled, tied, margins, challenger = compare_leader(
            weights, t, leader, others, alpha / (len(real) - 1), epsilon, gaps, errors)
    return Standing(real, estimate, low, high, rank_ranges(low, high), p_best, leader,
                    settled, tied if settled else [], margins, challenger, gaps, errors)
