"""How many votes will a campaign need? Simulated campaigns with a fixed-sample rule.

The leaderboard used to show a Wilson 95% interval per variant, and the team read
the top as settled when the leader's interval lay wholly above the runner-up's
(watched after every vote, that rule stops early too often: docs/crowd.md). The
board's anytime-valid rule and adaptive allocation are simulated by
bench/allocation.py instead. Here, an honest crowd with a known taste plays seeded campaigns offline
(engine.crowd.campaign) and we note, per campaign, the first vote after which the
true best variant's interval clears the true second's. The engine never imports the
web app, so the interval is written again (engine.stats); a test checks the two agree.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from engine.crowd.campaign import campaign
from engine.crowd.simulate import JudgedBuild, Population
from engine.stats import wilson_interval


@dataclass
class CampaignPlan:
    """Votes to separate the true best from the true second, per seeded campaign."""

    best: str
    second: str
    gap: float
    max_votes: int
    separated_at: list[int | None]  # None: not within max_votes

    @property
    def median(self) -> int | None:
        """Return the median over campaigns, None when half or more never separated."""
        values = sorted(v if v is not None else math.inf for v in self.separated_at)
        median = statistics.median(values)
        return None if math.isinf(median) else int(median)

    def to_dict(self) -> dict:
        return {"best": self.best, "second": self.second, "gap": round(self.gap, 5),
                "max_votes": self.max_votes, "campaigns": len(self.separated_at),
                "median_votes": self.median, "separated_at": self.separated_at}


def votes_to_separate(judged: JudgedBuild, population: Population, *, seed: int,
                      max_votes: int, best: str, second: str) -> int | None:
    """Return the first vote count at which best's Wilson interval clears second's."""
    dope = {best: 0, second: 0}
    judged_n = {best: 0, second: 0}
    for n, vote in enumerate(campaign(judged, population, max_votes, seed), start=1):
        if vote.variant not in dope or vote.verdict == "skip":
            continue
        dope[vote.variant] += vote.verdict == "dope"
        judged_n[vote.variant] += 1
        if wilson_interval(dope[best], judged_n[best])[0] > \
                wilson_interval(dope[second], judged_n[second])[1]:
            return n
    return None


def plan_campaign(judged: JudgedBuild, population: Population, *, campaigns: int = 20,
                  max_votes: int = 20_000, first_seed: int = 0) -> CampaignPlan:
    """Run seeded campaigns; return when each separated the true best from the second."""
    ranking = judged.ranking()
    if len(ranking) < 2:
        raise ValueError("a campaign plan needs at least two real variants")
    best, second = ranking[0], ranking[1]
    results = [votes_to_separate(judged, population, seed=first_seed + i, max_votes=max_votes,
                                 best=best, second=second) for i in range(campaigns)]
    return CampaignPlan(best, second, judged.truth[best] - judged.truth[second], max_votes,
                        results)
