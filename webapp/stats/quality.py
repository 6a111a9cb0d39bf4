"""Voter quality relative to the crowd: who is confidently worse than honest people differ.

People differ: a strict voter says dope on few real matches, so its gold contrast J
(dope rate on real pairs minus dope rate on the negative gold, webapp.stats.voters) is
low without being dishonest; someone with a taste of their own approves some variant's
matches more than the rest of the crowd does. So neither test uses a fixed line. Each
is calibrated on the crowd itself, robustly (the median, and the spread read on the side
of it where dishonest voters are not, so a minority of them does not move it), with
each voter's own sampling noise taken out:

- **gold**: the crowd's honest floor is median(J) - FLOOR_SPREADS * (the spread of true
  J between voters, at least SPREAD_MIN), never below FLOOR_MIN (nor above it before
  MIN_CALIBRATION_VOTERS voters have 20 votes each); a voter is excluded when its J is
  below that floor with z > Z_GOLD (one-sided 0.5%) and it has MIN_GOLD_VOTES votes on
  gold. Below the floor without that evidence, its judgments count with weight
  2 P(J > floor) (down-weighted, not dropped). An origin shared by several voters is
  held to chance (FLOOR_MIN) only: honest people behind one address with a script
  among them are not all dropped;
- **targeting** (one-sided): for each group and variant, d = how much more the group
  approves that variant's matches than everyone else does on the same pairs, relative
  to its other judgments (webapp.stats.voters.targeting_effects, with the leave-out
  noise in its standard error). The crowd's honest margin for variant v is
  FLOOR_SPREADS times the spread of true d between groups (at least SPREAD_MIN;
  DEFAULT_MARGIN before MIN_CALIBRATION_VOTERS groups); a group follows v when d exceeds
  that margin with z > Z_TARGETING. Approving a variant less is never "following" it.

A group of many honest cookies behind one address is judged like one voter with many
votes: on how far it is from the crowd, not on how many it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLOOR_SPREADS = 3.0  # honest people's true J (or d) rarely lie beyond 3 spreads
FLOOR_MIN = 0.1  # J below this is chance (or nearly), whatever the crowd
SPREAD_MIN = 0.05  # the least spread of true J assumed between honest voters
MIN_CALIBRATION_VOTERS = 30  # fewer calibrating voters: the floor is FLOOR_MIN
Z_GOLD = 2.5758293035489004  # one-sided 0.5%
MIN_GOLD_VOTES = 5
MIN_CALIBRATION_VOTES = 20  # voters with fewer judgments do not set the crowd's spread
DEFAULT_MARGIN = 0.15  # approval a group may exceed the rest by before the crowd says
Z_TARGETING = 4.5  # per variant and group: thousands of tests stay below it by chance
MIN_TARGETING_VOTES = 30


def robust_spread(values: np.ndarray, noise_var: np.ndarray,
                  side: str) -> tuple[float, float]:
    """Return (median, sd of the true values) of noisy estimates, read from the clean
    side of the median only (dishonest voters sit on the other: low J, high following):
    the distance from the median to the 84th (side "upper") or 16th ("lower")
    percentile, a normal's sd, with the typical sampling variance taken out."""
    if len(values) == 0:
        return 0.0, 0.0
    median = float(np.median(values))
    one_sd = abs(float(np.percentile(values, 84.13 if side == "upper" else 15.87)) - median)
    return median, float(np.sqrt(max(one_sd ** 2 - float(np.median(noise_var)), 0.0)))


@dataclass
class GoldFloor:
    """The crowd's honest floor of the gold contrast J."""

    floor: float
    median: float
    spread: float
    calibrated_on: int

    @classmethod
    def of(cls, records: list) -> GoldFloor:
        """From every voter's GoldRecord (those with enough votes set it)."""
        rows = [r.contrast() for r in records
                if r.gold_votes + r.other_votes >= MIN_CALIBRATION_VOTES and r.gold_votes]
        if len(rows) < MIN_CALIBRATION_VOTERS:
            return cls.chance(len(rows))
        j, sd = np.array(rows).T
        median, spread = robust_spread(j, sd * sd, "upper")
        spread = max(spread, SPREAD_MIN)
        return cls(max(median - FLOOR_SPREADS * spread, FLOOR_MIN), median, spread, len(rows))

    @classmethod
    def chance(cls, calibrated_on: int = 0) -> GoldFloor:
        """The floor of chance alone: for origins, and crowds too small to calibrate."""
        return cls(FLOOR_MIN, float("nan"), float("nan"), calibrated_on)

    def below(self, record) -> bool:
        """True when the record is confidently below the floor."""
        if record.gold_votes < MIN_GOLD_VOTES:
            return False
        mean, sd = record.contrast()
        return (self.floor - mean) / sd > Z_GOLD

    def weight(self, record) -> float:
        """A kept voter's weight omega: 1 when its J is more likely above the floor than
        below, else 2 P(J > floor): weak evidence of being worse than the crowd lowers
        its say without dropping it (below() drops it once the evidence is strong).
        Fewer than MIN_GOLD_VOTES gold votes are no evidence: weight 1."""
        if record.gold_votes < MIN_GOLD_VOTES:
            return 1.0
        mean, sd = record.contrast()
        above = 0.5 * math.erfc((self.floor - mean) / (sd * math.sqrt(2)))
        return min(1.0, 2.0 * above)

    def describe(self) -> str:
        return (f"excluded when the gold contrast is below the crowd's honest floor "
                f"{self.floor:.3f} (median {self.median:.3f} - {FLOOR_SPREADS:g} x spread "
                f"{self.spread:.3f}, at least {FLOOR_MIN}) with z > {Z_GOLD:.2f}")


def follows(effect: np.ndarray, se: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (one-sided z beyond the crowd's honest margin, variant column) per group,
    from targeting_effects' (groups x variants) effects and standard errors; groups
    with fewer than MIN_TARGETING_VOTES judgments get 0."""
    groups, variants = effect.shape
    if not variants:
        return np.zeros(groups), np.zeros(groups, dtype=int)
    enough = size >= MIN_TARGETING_VOTES  # at least MIN_CALIBRATION_VOTES too
    z = np.zeros((groups, variants))
    for v in range(variants):
        known = enough & (se[:, v] > 0)  # the groups judged, and calibrating, on v
        _, spread = robust_spread(effect[known, v], se[known, v] ** 2, "lower")
        margin = FLOOR_SPREADS * max(spread, SPREAD_MIN) \
            if known.sum() >= MIN_CALIBRATION_VOTERS else DEFAULT_MARGIN
        z[known, v] = (effect[known, v] - margin) / se[known, v]
    z = np.maximum(z, 0.0)
    return z.max(axis=1), z.argmax(axis=1)
