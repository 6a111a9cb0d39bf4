"""Voter quality: a two-coin Dawid-Skene model with gold, and who is at chance on gold.

Dawid and Skene (1979), two coins: each image pair (cell) c is truly good (z_c = 1)
or not, with prevalence p; voter v says dope on a good pair with probability s_v
(sensitivity) and nope on a bad one with probability t_v (specificity). Gold cells
have z known: the random control's pairs are bad (negative gold), pairs the engine
marks as near-certain dope good. EM for the maximum a posteriori fit, with Beta(2, 2)
priors on every s_v and t_v (a voter with three votes is not judged perfect or
hopeless) and a flat prior on p. A voter's leniency is 1 - t_v (dope on bad pairs),
its reliability s_v + t_v - 1 (0: at chance, whatever it answers).

Exclusion uses the gold alone, as evidence anyone can check: a voter's dope rate on
the real variants' pairs minus its dope rate on the negative gold is its gold
contrast J (a yes-sayer and a coin both have J = 0; an honest voter says dope far
more often on real matches than on random ones). With Beta(1, 1) posteriors on both
rates, a voter is excluded when P(J > J_MIN) < 5%: confidently at chance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRIOR = 2.0  # Beta(PRIOR, PRIOR) on every sensitivity and specificity
J_MIN = 0.2
Z_EXCLUDE = 1.6448536269514722  # one-sided 95%
MAX_ITERATIONS = 500
TOLERANCE = 1e-8


@dataclass
class DawidSkene:
    """The fit: per voter sensitivity and specificity, the prevalence, and each cell's
    posterior probability of being good."""

    sensitivity: np.ndarray
    specificity: np.ndarray
    prevalence: float
    good: np.ndarray
    iterations: int
    log_posterior: float


def _cell_log_odds(voter, cell, y, s, t, prevalence, cells):
    """Each cell's posterior log-odds of being good under (s, t, prevalence)."""
    good = np.where(y == 1, np.log(s[voter]), np.log1p(-s[voter]))
    bad = np.where(y == 1, np.log1p(-t[voter]), np.log(t[voter]))
    return math.log(prevalence / (1 - prevalence)) + np.bincount(
        cell, weights=good - bad, minlength=cells)


def log_posterior(voter, cell, y, gold, s, t, prevalence) -> float:
    """The objective EM climbs: log P(votes | s, t, p) with z summed out, plus the
    Beta priors' log densities (up to constants)."""
    cells = len(gold)
    good = np.bincount(cell, weights=np.where(y == 1, np.log(s[voter]), np.log1p(-s[voter])),
                       minlength=cells)
    bad = np.bincount(cell, weights=np.where(y == 1, np.log1p(-t[voter]), np.log(t[voter])),
                      minlength=cells)
    # Gold cells' truth is known, not drawn: the prevalence is the other cells'.
    free = np.logaddexp(good + math.log(prevalence), bad + math.log(1 - prevalence))
    per_cell = np.where(gold == 1, good, np.where(gold == 0, bad, free))
    judged = np.bincount(cell, minlength=cells) > 0
    prior = (PRIOR - 1) * (np.log(s) + np.log1p(-s) + np.log(t) + np.log1p(-t)).sum()
    return float(per_cell[judged].sum() + prior)


def dawid_skene(voter: np.ndarray, cell: np.ndarray, y: np.ndarray, gold: np.ndarray,
                voters: int) -> DawidSkene:
    """Fit the two-coin model to votes (voter index, cell index, y in {0, 1}); gold per
    cell: 1 good, 0 bad, -1 unknown."""
    cells = len(gold)
    seen = np.bincount(cell, minlength=cells)
    dopes = np.bincount(cell, weights=y, minlength=cells)
    q = np.where(gold >= 0, gold, (dopes + 1) / (seen + 2)).astype(float)  # majority start
    previous, iterations = -np.inf, 0
    while iterations < MAX_ITERATIONS:
        iterations += 1
        qv = q[cell]
        s = (np.bincount(voter, weights=qv * y, minlength=voters) + PRIOR - 1) / \
            (np.bincount(voter, weights=qv, minlength=voters) + 2 * (PRIOR - 1))
        t = (np.bincount(voter, weights=(1 - qv) * (1 - y), minlength=voters) + PRIOR - 1) / \
            (np.bincount(voter, weights=1 - qv, minlength=voters) + 2 * (PRIOR - 1))
        free = (gold < 0) & (seen > 0)
        prevalence = float(np.clip(q[free].mean() if free.any() else 0.5, 1e-6, 1 - 1e-6))
        odds = _cell_log_odds(voter, cell, y, s, t, prevalence, cells)
        q = np.where(gold >= 0, gold, 1 / (1 + np.exp(-odds)))
        current = log_posterior(voter, cell, y, gold, s, t, prevalence)
        if current - previous < TOLERANCE:
            break
        previous = current
    return DawidSkene(s, t, prevalence, q, iterations, current)


@dataclass
class GoldRecord:
    """One voter's votes on the negative gold and on the real variants' pairs."""

    gold_votes: int
    gold_dopes: int
    other_votes: int
    other_dopes: int

    def _rate(self, dopes, votes):
        a, b = dopes + 1, votes - dopes + 1
        mean = a / (a + b)
        return mean, mean * (1 - mean) / (a + b + 1)

    def contrast(self) -> tuple[float, float]:
        """Return the gold contrast J's posterior mean and standard deviation."""
        other, other_var = self._rate(self.other_dopes, self.other_votes)
        gold, gold_var = self._rate(self.gold_dopes, self.gold_votes)
        return other - gold, math.sqrt(other_var + gold_var)

    def at_chance(self) -> bool:
        """True when P(J > J_MIN) < 5%."""
        mean, sd = self.contrast()
        return (mean - J_MIN) / sd < -Z_EXCLUDE


def gold_records(voter: np.ndarray, y: np.ndarray, on_gold: np.ndarray,
                 voters: int) -> list[GoldRecord]:
    """Return each voter's GoldRecord from votes (voter index, y, on negative gold)."""
    gold = on_gold.astype(bool)

    def count(mask, weights=None):
        return np.bincount(voter[mask], weights=None if weights is None else weights[mask],
                           minlength=voters).astype(int)

    yf = y.astype(float)
    return [GoldRecord(*(int(x) for x in values)) for values in zip(
        count(gold), count(gold, yf), count(~gold), count(~gold, yf), strict=True)]


Z_TARGETING = 4.5  # per variant; many voters times seven variants stay below it by chance
MIN_TARGETING_VOTES = 30


def targeting(group: np.ndarray, cell: np.ndarray, y: np.ndarray, member: np.ndarray,
              groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (the largest |z| per group, the variant column where it is) of a test
    for voting that follows one variant rather than the pictures.

    Each judgment's residual is y minus the cell's approval among everyone else (the
    group's own votes left out, Beta(1, 1) prior). A voter's leniency moves all its
    residuals alike; an adversary pushing one variant has positive residuals on that
    variant's cells and negative ones elsewhere. z for group g and variant v compares
    g's mean residual on v's cells (`member`: judgments x variants, whether the cell
    is the variant's) with g's mean residual overall. Groups with fewer than
    MIN_TARGETING_VOTES judgments get 0."""
    n = len(cell)
    if n == 0:
        return np.zeros(groups), np.zeros(groups, dtype=int)
    cells = int(cell.max()) + 1
    key = group.astype(np.int64) * cells + cell
    _, pair_index, per_pair = np.unique(key, return_inverse=True, return_counts=True)
    pair_dopes = np.bincount(pair_index, weights=y)
    cell_judged = np.bincount(cell, minlength=cells)
    cell_dopes = np.bincount(cell, weights=y, minlength=cells)
    others = cell_judged[cell] - per_pair[pair_index]
    theta = (cell_dopes[cell] - pair_dopes[pair_index] + 1) / (others + 2)
    resid, var = y - theta, theta * (1 - theta)
    size = np.bincount(group, minlength=groups)
    mean = np.bincount(group, weights=resid, minlength=groups) / np.maximum(size, 1)
    best, where = np.zeros(groups), np.zeros(groups, dtype=int)
    for v in range(member.shape[1]):
        m = member[:, v].astype(float)
        s = np.bincount(group, weights=resid * m, minlength=groups)
        k = np.bincount(group, weights=m, minlength=groups)
        w = np.bincount(group, weights=var * m, minlength=groups)
        z = np.where(w > 0, (s - mean * k) / np.sqrt(np.maximum(w, 1e-12)), 0.0)
        z = np.where(size >= MIN_TARGETING_VOTES, np.abs(z), 0.0)
        better = z > best
        best, where = np.where(better, z, best), np.where(better, v, where)
    return best, where
