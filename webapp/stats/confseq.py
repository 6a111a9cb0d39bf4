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
