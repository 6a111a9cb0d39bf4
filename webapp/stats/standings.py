"""Where the variants stand: per-variant anytime-valid intervals, rank ranges, the
probability of being best, and the stop (settled, epsilon-best ties), from the
weighted estimates of webapp.stats.estimates (docs/statistics.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from webapp.stats.design import Design
from webapp.stats.estimates import (
    Ledger,
    Sums,
    Tally,
    Weights,
    plain_rate,
    sums_interval,
    sums_lower,
)

ALPHA = 0.05
EPSILON = 0.01  # variants within one point of the best count as best (epsilon-best)
MIN_JUDGMENTS = 200  # before this many, nothing is settled (the sequences are asymptotic)
POSTERIOR_DRAWS = 4000


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
    try:
        draws = rng.multivariate_normal(mu, cov, size=POSTERIOR_DRAWS, method="cholesky")
    except np.linalg.LinAlgError:  # variants showing the very same pairs (a small category)
        draws = np.random.default_rng(seed).multivariate_normal(mu, cov, size=POSTERIOR_DRAWS,
                                                                method="eigh")
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
    tied_with: list[int]  # design positions whose margin lies inside (-epsilon, +epsilon)
    margins: dict[int, tuple[float, float]]  # other -> (low, high) of leader - other
    gaps: dict[int, float]  # other -> estimate of leader - other

    def open_comparisons(self, epsilon: float = EPSILON) -> list[int]:
        """Return the variants the leader has not yet shown to be at most epsilon
        better than: lower bound of (leader - other) not above -epsilon."""
        return [j for j, (low, _) in self.margins.items() if not low > -epsilon]

    def focus(self, epsilon: float = EPSILON) -> dict[tuple[int, int], float] | None:
        """Return the adaptive rule's (leader, challenger) weights: the leader against
        each variant it has not yet settled with (a challenger leaves when its
        comparison settles, as in successive elimination), each in proportion to how
        hard the comparison is, 1 / (estimated gap + epsilon)^2, floored at a quarter of
        its interval's width (the optimal proportions of best-arm identification, with
        the gap as the data say it); None before a leader."""
        if self.leader is None or not self.margins:
            return None
        still = self.open_comparisons(epsilon) or list(self.margins)
        hard = {}
        for j in still:
            low, high = self.margins[j]
            scale = (high - low) / 4 if np.isfinite(high - low) else 1.0
            hard[j] = 1.0 / max(self.gaps.get(j, 0.0) + epsilon, scale, 1e-6) ** 2
        total = sum(hard.values())
        return {(self.leader, j): h / total for j, h in hard.items()}


def _tally(source) -> Tally:
    return source.total if isinstance(source, Ledger) else source


def _vector_sums(source, weights: Weights, key: tuple):
    """Return (sums, w, b, variance) of a vector ("v", i) or ("d", i, j), any order, from a
    Tally (every h = 1, judgments independent) or a Ledger (epoch weights; the variance
    clustered by voter when it was given voters)."""
    flip = key[0] == "d" and key[1] > key[2]
    canonical = ("d", key[2], key[1]) if flip else key
    w = weights.vector(canonical)
    if isinstance(source, Ledger):
        sums = source.sums(canonical)
    else:
        sums = Sums()
        sums.add(w, source)
    if flip:
        sums, w = sums.negated(), -w
    b = plain_rate(w, _tally(source))
    variance = source.variance(canonical, -1.0 if flip else 1.0, b, float(w.sum())) \
        if isinstance(source, Ledger) else None
    return sums, w, b, variance


def vector_interval(source, weights: Weights, key: tuple,
                    alpha: float) -> tuple[float, float, float]:
    """Return (estimate, low, high) of a vector's two-sided sequence at alpha."""
    sums, w, b, variance = _vector_sums(source, weights, key)
    return sums_interval(sums, b, float(w.sum()), alpha, variance)


def margin_bounds(source, weights: Weights, key: tuple, alpha: float,
                  alpha_lower: float) -> tuple[float, float, float, float]:
    """Return (estimate, low, high) of a difference's two-sided sequence at alpha and its
    one-sided lower sequence at alpha_lower, from one reading of its sums."""
    sums, w, b, variance = _vector_sums(source, weights, key)
    mean, low, high = sums_interval(sums, b, float(w.sum()), alpha, variance)
    return mean, low, high, sums_lower(sums, b, float(w.sum()), alpha_lower, variance)


def compare_leader(weights: Weights, source, leader: int, others: list[int],
                   alphas: Alphas, epsilon: float) -> tuple[bool, list[int], dict, dict]:
    """Return (settled, tied, margins, gaps) of the leader against each other variant:
    margins, the differences' two-sided sequences (alphas.margin each); settled when every
    difference's one-sided lower sequence (alphas.stop each) is above -epsilon; tied:
    those whose margin lies inside (-epsilon, +epsilon), both ends; gaps: the estimates."""
    margins, gaps, settled, tied = {}, {}, _tally(source).n >= MIN_JUDGMENTS, []
    for j in others:
        if weights.design.shared(leader, j) == 0:
            margins[j] = (-np.inf, np.inf)
            settled = False
            continue
        mean, low, high, lower = margin_bounds(source, weights, ("d", leader, j),
                                               alphas.margin, alphas.stop)
        margins[j] = (low, high)
        gaps[j] = mean
        settled = settled and lower > -epsilon
        if -epsilon < low and high < epsilon:
            tied.append(j)
    return settled, tied, margins, gaps


@dataclass
class Alphas:
    """How alpha is shared (docs/statistics.md, "The confidence sequences"). Everything
    the board reports holds together with probability 1 - alpha: the K per-variant
    intervals share alpha / 2, and the K (K - 1) / 2 differences any leader may be
    compared on share the other alpha / 2. The stop is one-sided: it errs only if the
    lower sequence of (leader - true best) misses, one of K - 1 comparisons, so each
    lower sequence gets alpha / (K - 1)."""

    variant: float
    margin: float
    stop: float

    @classmethod
    def of(cls, alpha: float, k: int) -> Alphas:
        k = max(k, 1)
        pairs = max(k * (k - 1) // 2, 1)
        return cls(alpha / (2 * k), alpha / (2 * pairs), alpha / max(k - 1, 1))

    @classmethod
    def per_family(cls, alpha: float, k: int) -> Alphas:
        """The split before joint coverage (alpha / K per variant, alpha / (K - 1) per
        margin): each family held alone. Kept for bench/coverage.py's comparison."""
        k = max(k, 1)
        return cls(alpha / k, alpha / max(k - 1, 1), alpha / max(k - 1, 1))


def standing(design: Design, source, *, alpha: float = ALPHA, epsilon: float = EPSILON,
             seed: int = 0, weights: Weights | None = None,
             alphas: Alphas | None = None) -> Standing:
    """Return every real variant's estimate, simultaneous interval and rank range, its
    probability of being best, and whether the best is settled (epsilon-best), from a
    Tally or a Ledger.

    Every reported interval (per variant, and the leader's margins) holds at once with
    probability 1 - alpha (Alphas); the stop names a variant more than epsilon below the
    best with probability at most alpha, however often it is checked.
    """
    real = design.real()
    weights = weights or (source.weights if isinstance(source, Ledger) else Weights(design))
    t = _tally(source)
    k = max(len(real), 1)
    alphas = alphas or Alphas.of(alpha, k)
    rows = [vector_interval(source, weights, ("v", i), alphas.variant) for i in real]
    estimate = [r[0] for r in rows]
    low, high = [r[1] for r in rows], [r[2] for r in rows]
    p_best = posterior_best(weights, t, real, seed) if t.n else [1.0 / k] * len(real)
    # The leader is the best weighted estimate. Not the likeliest best: the posterior
    # shrinks thinly judged cells towards the overall rate, so a variant the adaptive
    # rule has neglected looks worse than it is, and stays neglected (on the tuning
    # seeds the estimate's leader stopped sooner). Any choice keeps the rule valid:
    # its error needs a miss of an interval that contains the true best.
    leader = real[int(np.nanargmax(estimate))] if t.n and real else None
    settled, tied, margins, gaps = False, [], {}, {}
    if leader is not None and len(real) > 1:
        others = [i for i in real if i != leader]
        settled, tied, margins, gaps = compare_leader(weights, source, leader, others,
                                                      alphas, epsilon)
    return Standing(real, estimate, low, high, rank_ranges(low, high), p_best, leader,
                    settled, tied if settled else [], margins, gaps)
