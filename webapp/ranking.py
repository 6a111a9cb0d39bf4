"""Leaderboard statistics: Wilson intervals, rank ranges, votes needed to separate.

Ranks are given to the real variants only; the random control is a reference
row with no rank. For variant i with Wilson 95% interval [low_i, high_i]:

- rank_low  = 1 + #{j != i : low_j > high_i}   (those clearly above it)
- rank_high = #{j : high_j >= low_i}            (itself and those not clearly below it)

so rank_low == rank_high exactly when the variant's place is certain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054
MAX_EXTRA = 10_000_000


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Return the Wilson score interval of successes/n; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Row:
    slug: str
    name: str
    votes: int  # dope + nope; skips are not judgments of the match
    approvals: int
    skips: int
    rate: float | None
    ci_low: float
    ci_high: float
    rank_low: int | None
    rank_high: int | None
    offline_accuracy: float | None
    control: bool
    parent: str | None = None  # retrained variants: the parent's slug and the round
    round: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def make_row(slug, name, dope, nope, skip, offline_accuracy, control, parent=None,
             round=None) -> Row:
    """Return a leaderboard row without ranks."""
    votes = dope + nope
    low, high = wilson_interval(dope, votes)
    return Row(slug, name, votes, dope, skip, dope / votes if votes else None, low, high,
               None, None, offline_accuracy, bool(control), parent, round)


def rank_rows(rows: list[Row]) -> list[Row]:
    """Fill rank ranges for the real variants and sort all rows by lower bound."""
    real = [r for r in rows if not r.control]
    for r in real:
        r.rank_low = 1 + sum(1 for o in real if o is not r and o.ci_low > r.ci_high)
        r.rank_high = sum(1 for o in real if o.ci_high >= r.ci_low)
    # Ties (every row before any vote) put the control below the real variants.
    return sorted(rows, key=lambda r: (-r.ci_low, -(r.rate or 0.0), r.control, r.name))


def separated(k1: float, n1: float, k2: float, n2: float) -> bool:
    """Return True when interval 1 lies wholly above interval 2."""
    return wilson_interval(k1, n1)[0] > wilson_interval(k2, n2)[1]


def votes_to_separate(a: Row, b: Row, limit: int = MAX_EXTRA) -> dict:
    """Estimate the extra votes (split evenly) after which a's interval clears b's.

    Assumes both approval rates stay as they are now; a is the leader.
    """
    out = {"between": [a.slug, b.slug], "additional_votes": None}
    if not a.votes or not b.votes:
        return {**out, "status": "no_data"}
    pa, pb = a.rate, b.rate
    if pb > pa:
        a, b, pa, pb = b, a, pb, pa
    if separated(a.approvals, a.votes, b.approvals, b.votes):
        return {**out, "status": "separated"}

    def ok(m: int) -> bool:
        return separated(pa * (a.votes + m), a.votes + m, pb * (b.votes + m), b.votes + m)

    if pa == pb or not ok(limit):
        return {**out, "status": "too_close"}
    lo, hi = 0, 1
    while not ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return {**out, "status": "estimate", "additional_votes": 2 * hi, "per_variant": hi}
