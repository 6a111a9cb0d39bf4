"""Each variant's approval from pooled, weighted judgments (docs/statistics.md).

A judgment t of cell c_t (an image pair), drawn by the allocation with probability
pi_t, with verdict y_t (1 dope, 0 nope; skips are not judgments), counts for every
variant that returns c_t. Variant v's approval is the mean, over its queries Q_v, of
its cells' approval. The Horvitz-Thompson term

    Z_vt = y_t * [c_t is v's cell] / (|Q_v| * pi_t)

has conditional mean exactly that approval whatever the allocation did before (pi_t
is the probability the allocation used at t), so the mean of the Z_vt is unbiased and
its centred sum a martingale: the confidence sequences of webapp/stats/confseq.py apply.
Two variants are compared on the queries both answer, through the terms of the
difference, which vanish on the queries where they return the same match.

Everything here works from per-cell sums (`Tally`), so a fit over a million votes
costs one pass to tally them and then microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from webapp.stats import confseq
from webapp.stats.clusters import VoterSums
from webapp.stats.design import Design

BASELINE = None  # the control variate's constant (mean_and_sd); None: the dope rate


@dataclass
class Tally:
    """Per-cell sums of the judgments, each judgment weighted by its voter's weight omega
    (webapp.stats.quality; 1 unless the voter is down-weighted): n judgments in all and
    mass = sum omega, mass2 = sum omega^2; per cell the judgments and dopes (counts), and
    the sums of omega/pi and omega^2/pi (inv, inv2), omega^2/pi^2 (inv_sq), each also
    over the dopes only (dope_inv, dope_inv2, dope_inv_sq)."""

    n: int
    judged: np.ndarray
    dopes: np.ndarray
    dope_inv: np.ndarray
    dope_inv_sq: np.ndarray
    inv: np.ndarray
    inv_sq: np.ndarray
    mass: float = 0.0
    mass2: float = 0.0
    dope_inv2: np.ndarray | None = None
    inv2: np.ndarray | None = None

    ARRAYS = ("judged", "dopes", "dope_inv", "dope_inv_sq", "inv", "inv_sq", "dope_inv2",
              "inv2")

    @classmethod
    def empty(cls, cells: int) -> Tally:
        t = cls(0, *(np.zeros(cells) for _ in range(6)))
        t.dope_inv2, t.inv2 = np.zeros(cells), np.zeros(cells)
        return t

    def plus(self, other: Tally) -> Tally:
        out = Tally.empty(len(self.judged))
        out.n, out.mass, out.mass2 = (self.n + other.n, self.mass + other.mass,
                                      self.mass2 + other.mass2)
        for name in self.ARRAYS:
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def add(self, cell: int, dope: bool, probability: float) -> None:
        """Count one judgment of weight 1 (the offline simulations add votes one at a time)."""
        inv = 1.0 / probability
        self.n += 1
        self.mass += 1.0
        self.mass2 += 1.0
        self.judged[cell] += 1
        self.inv[cell] += inv
        self.inv2[cell] += inv
        self.inv_sq[cell] += inv * inv
        if dope:
            self.dopes[cell] += 1
            self.dope_inv[cell] += inv
            self.dope_inv2[cell] += inv
            self.dope_inv_sq[cell] += inv * inv


def tally(cells: int, cell: np.ndarray, dope: np.ndarray, probability: np.ndarray,
          weight: np.ndarray | None = None) -> Tally:
    """Return the tally of judgments given as arrays (cell index, dope 0/1, pi, and the
    voters' weights omega: 1 when None)."""
    inv = 1.0 / probability
    dope = dope.astype(float)
    omega = np.ones(len(cell)) if weight is None else np.asarray(weight, float)

    def per_cell(values):
        return np.bincount(cell, weights=values, minlength=cells)

    t = Tally(len(cell), np.bincount(cell, minlength=cells).astype(float), per_cell(dope),
              per_cell(omega * dope * inv), per_cell(omega ** 2 * dope * inv * inv),
              per_cell(omega * inv), per_cell(omega ** 2 * inv * inv),
              float(omega.sum()), float((omega ** 2).sum()))
    t.dope_inv2, t.inv2 = per_cell(omega ** 2 * dope * inv), per_cell(omega ** 2 * inv)
    return t


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

    def vector(self, key: tuple) -> np.ndarray:
        """("v", i): variant i's weights; ("d", i, j): those of i - j."""
        return self.w[key[1]] if key[0] == "v" else self.difference(key[1], key[2])


@dataclass
class Sums:
    """Sufficient statistics of the terms Z_t of one weight vector w, each term weighted
    by h_t (predictable: fixed before the draw; 1 without epochs):

        H1 = sum h, H2 = sum h^2, A1 = sum h y w/pi, P1 = sum h w/pi,
        A2 = sum h^2 y w/pi, P2 = sum h^2 w/pi, B = sum h^2 y w^2/pi^2, Q = sum h^2 w^2/pi^2
    """

    H1: float = 0.0
    H2: float = 0.0
    A1: float = 0.0
    P1: float = 0.0
    A2: float = 0.0
    P2: float = 0.0
    B: float = 0.0
    Q: float = 0.0

    def add(self, w: np.ndarray, t: Tally, h: float = 1.0) -> None:
        """Fold in a tally of judgments drawn while the weight was h."""
        w2 = w * w
        self.H1 += h * t.mass
        self.H2 += h * h * t.mass2
        self.A1 += h * float(w @ t.dope_inv)
        self.P1 += h * float(w @ t.inv)
        self.A2 += h * h * float(w @ t.dope_inv2)
        self.P2 += h * h * float(w @ t.inv2)
        self.B += h * h * float(w2 @ t.dope_inv_sq)
        self.Q += h * h * float(w2 @ t.inv_sq)

    def plus(self, other: Sums) -> Sums:
        return Sums(*(x + y for x, y in zip(self.values(), other.values(), strict=True)))

    def negated(self) -> Sums:
        """The sums of -w (the difference the other way round)."""
        return Sums(self.H1, self.H2, -self.A1, -self.P1, -self.A2, -self.P2, self.B, self.Q)

    def values(self) -> tuple:
        return (self.H1, self.H2, self.A1, self.P1, self.A2, self.P2, self.B, self.Q)


def weighted_mean(sums: Sums, b: float, total: float) -> tuple[float, float]:
    """Return (the h-weighted mean of the Z_t, V = sum h^2 (Z_t - mean)^2) for the terms

        Z_t = (y_t - b) * w(c_t) / pi_t + b * total,    total = sum_c w(c).

    Each Z_t has the conditional mean w . approval whatever the constant b: the
    baseline only takes variance away (y - b is smaller than y when approval is near
    b), as a control variate does."""
    if sums.H1 <= 0:
        return float("nan"), float("nan")
    mean = (sums.A1 - b * sums.P1) / sums.H1 + b * total
    first = sums.A2 - b * sums.P2 + b * total * sums.H2  # sum h^2 Z
    second = ((1 - 2 * b) * sums.B + b * b * sums.Q + 2 * b * total * (sums.A2 - b * sums.P2)
              + b * b * total * total * sums.H2)  # sum h^2 Z^2
    return mean, max(second - 2 * mean * first + mean * mean * sums.H2, 0.0)


def sums_interval(sums: Sums, b: float, total: float, alpha: float,
                  variance=None) -> tuple[float, float, float]:
    """Return (estimate, low, high) of the confidence sequence (webapp/stats/confseq.py) for
    the h-weighted mean; with every h = 1 it is the plain sequence of the mean.
    `variance(mean)`: the variance process to use (clustered by voter), else the plain one."""
    mean, v = weighted_mean(sums, b, total)
    if not sums.H1 > 0:
        return mean, -np.inf, np.inf
    if variance is not None:
        v = max(v, variance(mean))  # clustered, never below the independent
    half = confseq.weighted_radius(v, sums.H1, sums.H2, alpha)
    return mean, mean - half, mean + half


def sums_lower(sums: Sums, b: float, total: float, alpha: float,
               variance=None) -> float:
    """Return the one-sided lower confidence sequence of the h-weighted mean at alpha."""
    mean, v = weighted_mean(sums, b, total)
    if not sums.H1 > 0:
        return -np.inf
    if variance is not None:
        v = max(v, variance(mean))
    return mean - confseq.one_sided_radius(v, sums.H1, sums.H2, alpha)


def mean_and_sd(weights: np.ndarray, t: Tally,
                baseline: float | None = BASELINE) -> tuple[float, float]:
    """Return the mean and standard deviation of the unweighted terms Z_t (every h = 1).
    By default b is the plain dope rate of the judgments of the cells the weights
    touch, a plug-in whose own noise moves the estimate by O(1/n) (for a difference,
    whose weights sum to 0, not at all)."""
    if t.n == 0:
        return float("nan"), float("nan")
    sums = Sums()
    sums.add(weights, t)
    b = plain_rate(weights, t) if baseline is None else baseline
    mean, v = weighted_mean(sums, b, float(weights.sum()))
    return mean, (v / t.n) ** 0.5


class Ledger:
    """Judgments in epochs: each epoch is drawn by one allocation, and every weight
    vector has its own weight h for the epoch, fixed when the epoch starts (so the
    weighted sums stay martingales). h is the vector's probability mass under the
    epoch's allocation over its mass under the uniform allocation: judgments drawn
    while a comparison was in focus (low variance) count for more than those drawn
    before (high variance). (Hadad, Hirshberg, Zhan, Wager and Athey, PNAS 2021, weigh
    by the square root of the probability instead; docs/statistics.md.) Without epochs
    every h is 1."""

    def __init__(self, weights: Weights):
        self.weights = weights
        cells = len(weights.design.cells)
        self.total, self.epoch = Tally.empty(cells), Tally.empty(cells)
        self.folded: dict[tuple, Sums] = {}
        self.h: dict[tuple, float] = {}
        self.position = {key: k for k, key in enumerate(self.keys())}
        self.clusters: VoterSums | None = None  # made with the first voter given

    def add(self, cell: int, dope: bool, probability: float, voter=None) -> None:
        """Add one judgment; with its voter, the variance process is clustered by voter."""
        self.total.add(cell, dope, probability)
        self.epoch.add(cell, dope, probability)
        if voter is not None:
            self._clusters().add(voter, cell, dope, probability, self._h_vector())

    def add_many(self, cell: np.ndarray, dope: np.ndarray, probability: np.ndarray,
                 voters: np.ndarray | None = None, weight: np.ndarray | None = None) -> None:
        """Add judgments given as arrays to the open epoch (their voters, and the voters'
        weights omega: 1 when None)."""
        more = tally(len(self.weights.design.cells), cell, dope, probability, weight)
        self.total, self.epoch = self.total.plus(more), self.epoch.plus(more)
        if voters is not None:
            self._clusters().add_many(voters, cell, dope, probability, self._h_vector(),
                                      weight)

    def _clusters(self) -> VoterSums:
        if self.clusters is None:
            self.clusters = VoterSums(np.array([self.weights.vector(k) for k in self.keys()]))
        return self.clusters

    def _h_vector(self) -> np.ndarray:
        return np.array([self.h.get(key, 1.0) for key in self.keys()])

    def variance(self, key: tuple, sign: float, b: float, total: float):
        """Return V(mean) clustered by voter for a vector (sign -1: its negation), or
        None when no voters were given."""
        if self.clusters is None:
            return None
        k = self.position[key]
        return lambda mean: self.clusters.variance(k, sign, b, mean, total)

    def start_epoch(self, h: dict[tuple, float]) -> None:
        """Fold the open epoch in with its weights; the next epoch has weights h (a
        vector missing from h has weight 1)."""
        if self.epoch.n:
            for key in self.keys():
                self.folded.setdefault(key, Sums()).add(
                    self.weights.vector(key), self.epoch, self.h.get(key, 1.0))
            self.epoch = Tally.empty(len(self.weights.design.cells))
        self.h = dict(h)

    def keys(self) -> list[tuple]:
        return vector_keys(self.weights.design)

    def sums(self, key: tuple) -> Sums:
        """The sums of a vector: folded epochs plus the open one."""
        open_ = Sums()
        open_.add(self.weights.vector(key), self.epoch, self.h.get(key, 1.0))
        return self.folded.get(key, Sums()).plus(open_)


def vector_keys(design: Design) -> list[tuple]:
    """Every weight vector a Ledger keeps: ("v", i) per variant, ("d", i, j) per pair of
    real variants, i < j (the other order is its negation)."""
    real = design.real()
    return [("v", i) for i in range(len(design.variant_ids))] + \
        [("d", i, j) for i in real for j in real if i < j]


def vector_masses(weights: Weights, probability: list[float]) -> dict[tuple, float]:
    """Return each vector's probability mass (of the cells it weighs) under an allocation."""
    pi = np.asarray(probability)
    return {key: float(pi[weights.vector(key) != 0].sum())
            for key in vector_keys(weights.design)}


def epoch_weights(weights: Weights, probability: list[float],
                  uniform_probability: list[float]) -> dict[tuple, float]:
    """Return h per vector for an epoch drawn with `probability`: its mass there over
    its mass under the uniform allocation."""
    now, base = vector_masses(weights, probability), vector_masses(weights, uniform_probability)
    return {k: (now[k] / base[k] if base[k] > 0 else 1.0) for k in now}
