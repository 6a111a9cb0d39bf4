"""Voter quality: a two-coin Dawid-Skene model with gold, and who is at chance on gold.

Dawid and Skene (1979), two coins: each image pair (cell) c is truly good (z_c = 1)
or not, with prevalence p; voter v says dope on a good pair with probability s_v
(sensitivity) and nope on a bad one with probability t_v (specificity). Gold cells
have z known: the random control's pairs are bad (negative gold), pairs the engine
marks as near-certain dope good. EM for the maximum a posteriori fit, with Beta(2, 2)
priors on every s_v and t_v (a voter with three votes is not judged perfect or
hopeless) and a flat prior on p. A voter's leniency is 1 - t_v (dope on bad pairs),
its reliability s_v + t_v - 1 (0: at chance, whatever it answers).

Exclusion uses the gold, as evidence anyone can check: a voter's dope rate on the
real variants' pairs minus its dope rate on the negative gold is its gold contrast J
(a yes-sayer and a coin both have J = 0; an honest voter says dope far more often on
real matches than on random ones), with Beta(1, 1) posteriors on both rates. Where the
line lies is the crowd's to say (webapp.stats.quality): strict honest voters have low
J too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRIOR = 2.0  # Beta(PRIOR, PRIOR) on every sensitivity and specificity
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


def leave_out_residuals(group: np.ndarray, cell: np.ndarray,
                        y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return each judgment's residual y - theta, theta the cell's approval among everyone
    but the judgment's group (Beta(1, 1) prior); its variance theta (1 - theta) plus the
    leave-out estimate's own; and whether anyone else judged the cell (else both 0)."""
    cells = int(cell.max()) + 1
    key = group.astype(np.int64) * cells + cell
    _, pair_index, per_pair = np.unique(key, return_inverse=True, return_counts=True)
    pair_dopes = np.bincount(pair_index, weights=y)
    cell_judged = np.bincount(cell, minlength=cells)
    cell_dopes = np.bincount(cell, weights=y, minlength=cells)
    others = cell_judged[cell] - per_pair[pair_index]
    theta = (cell_dopes[cell] - pair_dopes[pair_index] + 1) / (others + 2)
    seen = others > 0  # a pair nobody else judged says nothing about following
    resid = np.where(seen, y - theta, 0.0)
    var = np.where(seen, theta * (1 - theta) * (1 + 1 / (others + 2)), 0.0)
    return resid, var, seen


def targeting_effects(group: np.ndarray, cell: np.ndarray, y: np.ndarray, member: np.ndarray,
                      groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (effect, se, size): per group and variant, how much more the group approves
    the variant's matches than everyone else does on the same pairs, relative to its
    other judgments (webapp.stats.quality decides who "follows" a variant).

    Each judgment's residual is y minus the cell's approval among everyone else (the
    group's own votes left out, Beta(1, 1) prior): leniency moves all of a group's
    residuals alike. effect = mean residual on the variant's cells (`member`: judgments
    x variants) minus mean residual on the others; its variance counts each residual's
    theta (1 - theta) plus the leave-out estimate's own, theta (1 - theta) / (others + 2)."""
    variants = member.shape[1]
    effect, se = np.zeros((groups, variants)), np.zeros((groups, variants))
    size = np.bincount(group, minlength=groups) if len(cell) else np.zeros(groups, dtype=int)
    if len(cell) == 0:
        return effect, se, size
    resid, var, seen = leave_out_residuals(group, cell, y)
    size = np.bincount(group, weights=seen.astype(float), minlength=groups)
    total_r = np.bincount(group, weights=resid, minlength=groups)
    total_v = np.bincount(group, weights=var, minlength=groups)
    for v in range(variants):
        m = member[:, v].astype(float) * seen
        k = np.bincount(group, weights=m, minlength=groups)
        s = np.bincount(group, weights=resid * m, minlength=groups)
        w = np.bincount(group, weights=var * m, minlength=groups)
        rest = size - k
        both = (k > 0) & (rest > 0)
        kk, rr = np.maximum(k, 1), np.maximum(rest, 1)
        effect[:, v] = np.where(both, s / kk - (total_r - s) / rr, 0.0)
        se[:, v] = np.where(both, np.sqrt(w / kk ** 2 + (total_v - w) / rr ** 2), 0.0)
    return effect, se, size
