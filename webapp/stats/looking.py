"""Who looks at the pictures: each voter's posterior probability of discerning.

Yes-sayers, coins and careless scripts mostly cast a handful of votes, one or two of
them on the negative gold: no evidence against the crowd's floor (webapp.stats.quality),
yet together they shift every approval. A two-kind mixture weighs them by what their
gold votes say, fitted to the crowd by EM (Dempster, Laird and Rubin 1977):

- **discerning**: says dope on the negative gold (random pairs) at its own rate g, g
  drawn from the crowd's Beta(mu, rho) (mean mu, intra-voter correlation rho), fitted
  by moments to the discerning voters with CALIBRATION_GOLD gold votes or more, where
  the two kinds are told apart (with one gold vote each, mu and pi trade off and
  cannot both be fitted); before CALIBRATION_VOTERS such voters, MU_DEFAULT and
  RHO_DEFAULT;
- **indiscriminate**: says dope on the gold as often as on the real pairs: its gold
  votes are Beta-binomial with its real-pair dope rate's Beta(1 + d, 1 + m - d)
  posterior (d dopes in m real votes).

Only the gold votes are evidence; the real votes only say what an indiscriminate voter
would answer on the gold. A voter's weight is P(discerning | its votes), with the prior
share pi of indiscriminate voters fitted by EM. A voter without gold votes gets 1 - pi,
as every such voter does, so its say against the others like it is unchanged. An honest
crowd fits pi near 0 and keeps every weight near 1; a lenient honest voter who says dope
on a random pair loses a little, never all (pi is the crowd's, not a line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_LGAMMA = np.frompyfunc(math.lgamma, 1, 1)  # numpy alone: the web side has no scipy

ITERATIONS = 200
TOLERANCE = 1e-7
PI_START = 0.1
# Most of the crowd looks (the floor and targeting medians assume it too). Without the
# cap, voters whose gold votes favour discerning only weakly (an honest voter's one
# "nope" on a random pair, when it says nope to half the real pairs too) let the
# likelihood run pi up towards 1.
PI_MAX = 0.5
RHO_RANGE = (1e-3, 0.5)
MU_RANGE = (1e-3, 0.5)  # discerning voters say nope on most random pairs
CALIBRATION_GOLD = 5  # gold votes a voter needs to set the crowd's mu and rho
CALIBRATION_VOTERS = 30
MU_DEFAULT, RHO_DEFAULT = 0.1, 0.1  # a random pair passes for a match one time in ten


@dataclass
class Looking:
    """The fit: each voter's weight P(discerning), the share pi, and the crowd's gold
    dope rate (mean mu, intra-voter correlation rho)."""

    weight: np.ndarray
    pi: float
    mu: float
    rho: float
    iterations: int

    def summary(self) -> dict:
        """The team view's figures: the fitted share and how many voters lost half or more."""
        return {"indiscriminate_share": round(self.pi, 4), "gold_dope_rate": round(self.mu, 4),
                "gold_rate_correlation": round(self.rho, 4),
                "below_half": int((self.weight < 0.5).sum()),
                "rule": "each voter weighs P(discerning | its gold votes): "
                        "webapp/stats/looking.py"}


def _lbeta(x, y) -> np.ndarray:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return np.asarray(_LGAMMA(x) + _LGAMMA(y) - _LGAMMA(x + y), dtype=float)


def _beta_binomial_log(k, n, a, b) -> np.ndarray:
    """log P(k | n) of a Beta-binomial, without the binomial coefficient (it cancels)."""
    return _lbeta(a + k, b + n - k) - _lbeta(a, b)


def _discerning_log(k: np.ndarray, n: np.ndarray, mu: float, rho: float) -> np.ndarray:
    """The discerning kind's log-likelihood per voter, computed once per distinct (k, n)."""
    a, b = mu * (1 / rho - 1), (1 - mu) * (1 / rho - 1)
    pairs, where = np.unique(np.stack([k, n]), axis=1, return_inverse=True)
    return _beta_binomial_log(pairs[0], pairs[1], a, b)[where.ravel()]


def _moments(k: np.ndarray, n: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted moment estimates (mu, rho) of a Beta-binomial's rate from the counts of
    voters with CALIBRATION_GOLD gold votes or more (the defaults before enough)."""
    calibrating = n >= CALIBRATION_GOLD
    if calibrating.sum() < CALIBRATION_VOTERS:
        return MU_DEFAULT, RHO_DEFAULT
    k, n, w = k[calibrating], n[calibrating], w[calibrating]
    mu = float(np.clip((w * k).sum() / max((w * n).sum(), 1e-12), *MU_RANGE))
    two = (n >= 2) & (w > 0)
    if not two.any():
        return mu, RHO_RANGE[0]
    # Pairs of one voter's gold votes: P(both dope) = mu^2 + rho mu (1 - mu).
    pairs = n[two] * (n[two] - 1)
    both = (w[two] * k[two] * (k[two] - 1)).sum() / (w[two] * pairs).sum()
    rho = (both - mu * mu) / (mu * (1 - mu))
    return mu, float(np.clip(rho, *RHO_RANGE))


def fit_looking(gold_votes, gold_dopes, other_votes, other_dopes) -> Looking:
    """Fit the mixture to per-voter counts (votes and dopes on the negative gold and on
    the real variants' pairs); return each voter's weight."""
    n, k, m, d = (np.asarray(x, dtype=float) for x in
                  (gold_votes, gold_dopes, other_votes, other_dopes))
    has = n > 0
    indiscriminate = _beta_binomial_log(k, n, 1 + d, 1 + m - d)
    pi, mu, rho, r = PI_START, *_moments(k, n, has.astype(float)), np.ones_like(n)
    iterations = 0
    for iterations in range(1, ITERATIONS + 1):  # noqa: B007 (reported)
        odds = np.log1p(-pi) + _discerning_log(k, n, mu, rho) - np.log(pi) - indiscriminate
        r = np.where(has, 1 / (1 + np.exp(-np.clip(odds, -700, 700))), 1 - pi)
        new_pi = float(np.clip(1 - r[has].mean(), 1e-6, PI_MAX)) if has.any() else 1e-6
        mu, rho = _moments(k, n, r * has)
        done = abs(new_pi - pi) < TOLERANCE
        pi = new_pi
        if done:
            break
    r = np.where(has, r, 1 - pi)
    return Looking(r, pi, mu, rho, iterations)
