"""Anytime-valid confidence sequences: intervals that stay valid however often one looks.

The asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences"
(Annals of Statistics, 2024, Theorem 2.2): for the mean of t observations with
sample mean m_t and standard deviation s_t,

    m_t +- s_t * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

covers the mean at every t at once with probability tending to 1 - alpha (Robbins'
normal mixture applied to the standardised sum). It holds for martingale differences
with bounded conditional variances too (their Section 3), which is what the inverse
probability weighted terms of an adaptive design are (docs/statistics.md). rho sets
where the sequence is tightest: `rho_for(t_star, alpha)` makes it tightest at t_star
observations (their eq. 3.5).

In the notation of Howard, Ramdas, McAuliffe and Sekhon ("Time-uniform, nonparametric,
nonasymptotic confidence sequences", Annals of Statistics 2021, Section 3), this is the
normal mixture on the centred sum S with variance process V and r = V / (t rho^2): the
mixture martingale over lambda ~ Normal(0, 1/r),

    M = sqrt(r / (V + r)) * exp(S^2 / (2 (V + r))),

crosses 1/alpha exactly where |S| = sqrt((V + r) log((V + r) / (r alpha^2))), the radius
above times t. The one-sided sequence (`one_sided_radius`, for the stop, which only
needs lower bounds) mixes over lambda >= 0 only (density 2 phi):

    M+ = 2 sqrt(r / (V + r)) * exp(S^2 / (2 (V + r))) * Phi(S / sqrt(V + r)),

and its boundary, where M+ = 1/alpha, is found by bisection: a little over the two-sided
boundary at 2 alpha. Ville's inequality bounds the chance that either martingale ever
reaches 1/alpha; with an estimated variance the sequences are asymptotic, as above.
V may be clustered by voter (webapp.stats.clusters).
"""

from __future__ import annotations

import math

# Judgments at which the sequences are made tightest: about where campaigns on the
# default build stop (bench/allocation.py). Width changes slowly with it: 3% at 25,000
# judgments between 5,000 and 20,000.
T_STAR = 20000


def rho_for(t_star: float, alpha: float) -> float:
    """Return the mixture's rho that minimises the width at t_star observations."""
    return math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / t_star)


def radius(t: float, alpha: float, t_star: float = T_STAR) -> float:
    """Return the half-width per unit standard deviation after t observations."""
    if t <= 0:
        return math.inf
    rho2 = rho_for(t_star, alpha) ** 2
    return math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2)
                     * math.log(math.sqrt(t * rho2 + 1) / alpha))


def weighted_radius(v: float, h1: float, h2: float, alpha: float,
                    t_star: float = T_STAR) -> float:
    """Return the half-width for an h-weighted mean sum(h Z) / sum(h): the same normal
    mixture on the martingale sum h (Z - mean), whose variance process is v =
    sum h^2 (Z - mean)^2, in the intrinsic time h2 = sum h^2 (so that with every h = 1
    this is `radius(t) * sd`):

        sqrt( 2 (rho^2 h2 + 1) v / (rho^2 h2) * log( sqrt(rho^2 h2 + 1) / alpha ) ) / h1
    """
    if h1 <= 0 or h2 <= 0:
        return math.inf
    rho2 = rho_for(t_star, alpha) ** 2
    return math.sqrt(2 * (rho2 * h2 + 1) * v / (rho2 * h2)
                     * math.log(math.sqrt(rho2 * h2 + 1) / alpha)) / h1


def one_sided_radius(v: float, h1: float, h2: float, alpha: float,
                     t_star: float = T_STAR) -> float:
    """Return the one-sided (lower or upper) half-width for an h-weighted mean: where the
    one-sided normal mixture M+ reaches 1/alpha, with the same rho as weighted_radius."""
    if h1 <= 0 or h2 <= 0:
        return math.inf
    rho2 = rho_for(t_star, alpha) ** 2
    spread = math.log(rho2 * h2 + 1) / 2 + math.log(1 / alpha)  # log M+ at S = 0, negated

    def excess(x):  # log M+ - log(1/alpha), in x = S / sqrt(V + r)
        return math.log(math.erfc(-x / math.sqrt(2))) + x * x / 2 - spread

    low, high = 0.0, math.sqrt(2 * spread) + 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return high * math.sqrt(v * (1 + 1 / (rho2 * h2))) / h1
