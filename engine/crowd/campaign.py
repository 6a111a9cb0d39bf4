"""The game, offline: a simulated crowd (engine.crowd.simulate) votes on a build.

`campaign` plays the game offline with the balanced allocation the web app used
before its adaptive one (docs/statistics.md): the random control first with
probability `control_share`, else the real variants from fewest judgments up (ties
at random), then a random pair the voter has not seen (neither that variant's query
nor that image pair). Its votes carry no served probability. The web app's own
allocation, replayed offline, is in bench/allocation.py (the engine never imports
the web app).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.crowd.simulate import (
    JudgedBuild,
    Population,
    Voter,
    new_ident,
    new_voter,
    resolve_target,
)
from engine.crowd.taste import Taste
from engine.formats.votes import Vote, export_header

SIMULATION_START = datetime(2026, 1, 1, tzinfo=UTC)
RANDOM_TRIES = 16


class GameChooser:
    """Choose pairs in balance (fewest judgments first), counting judgments per variant."""

    def __init__(self, judged: JudgedBuild, control_share: float, rng: random.Random):
        self.judged, self.control_share, self.rng = judged, control_share, rng
        self.judgments = {s: 0 for s in judged.slugs}

    def order(self) -> list[str]:
        real = sorted((self.judgments[s], self.rng.random(), s) for s in self.judged.real_slugs())
        order = [s for _, _, s in real]
        controls = [s for s in self.judged.slugs if s in self.judged.controls]
        if controls and self.rng.random() < self.control_share:
            return controls + order
        return order + controls

    def pick(self, seen_queries: set, seen_images: set) -> tuple[str, str, str] | None:
        """Return (variant, query, match) of a pair the voter has not seen, or None."""
        for slug in self.order():
            rows = self.judged.pairs[slug]
            if not rows:
                continue

            def fresh(row, slug=slug):
                return (slug, row[0]) not in seen_queries and row not in seen_images

            chosen = None
            for _ in range(min(len(rows), RANDOM_TRIES)):
                row = rows[self.rng.randrange(len(rows))]
                if fresh(row):
                    chosen = row
                    break
            else:
                candidates = [row for row in rows if fresh(row)]
                chosen = self.rng.choice(candidates) if candidates else None
            if chosen is not None:
                return slug, chosen[0], chosen[1]
        return None


@dataclass(frozen=True)
class SimVote:
    """One simulated vote: who, what, which verdict, how long, when (ms from the start)."""

    voter: Voter
    ident: str
    variant: str
    query_id: str
    match_id: str
    verdict: str
    decision_ms: int
    at_ms: int


def campaign(judged: JudgedBuild, population: Population, n_votes: int,
             seed: int) -> Iterator[SimVote]:
    """Yield n_votes simulated votes (fewer only if every voter runs out of pairs)."""
    rng = random.Random(seed)
    params = population.params
    chooser = GameChooser(judged, params["game"]["control_share"], rng)
    target_pairs = judged.target_pairs(resolve_target(judged, population)) \
        if "adversary" in population.mix else set()
    cast, clock_ms, idle_voters = 0, 0, 0
    while cast < n_votes and idle_voters < 1000:
        voter = new_voter(population, rng)
        seen_queries, seen_images, ident = set(), set(), voter.ident
        while voter.cast < voter.budget and cast < n_votes:
            if voter.kind == "adversary" and voter.cast and \
                    voter.cast % params["adversary"]["cookie_every"] == 0:
                seen_queries, seen_images, ident = set(), set(), new_ident(rng)
            picked = chooser.pick(seen_queries, seen_images)
            if picked is None:
                break
            slug, q, m = picked
            seen_queries.add((slug, q))
            seen_images.add((q, m))
            verdict = voter.decide(judged.looks[(q, m)], (q, m) in target_pairs, params, rng)
            ms = voter.decision_ms(params, rng)
            clock_ms += ms + 400
            chooser.judgments[slug] += 1
            voter.cast += 1
            cast += 1
            yield SimVote(voter, ident, slug, q, m, verdict, ms, clock_ms)
        idle_voters = idle_voters + 1 if voter.cast == 0 else 0


def export_votes(judged: JudgedBuild, votes: list[SimVote], *, taste: Taste,
                 population: Population, seed: int) -> tuple[dict, list[Vote]]:
    """Return (header, votes) in the vote export format for simulated votes."""
    build_id = judged.build.build_id
    out = []
    for i, v in enumerate(votes, start=1):
        at = SIMULATION_START + timedelta(milliseconds=v.at_ms)
        out.append(Vote(vote_id=i, query_id=v.query_id, match_id=v.match_id, variant=v.variant,
                        verdict=v.verdict, created_at=at.isoformat(timespec="seconds"),
                        decision_ms=v.decision_ms, voter=v.ident, build_id=build_id))
    end = SIMULATION_START + timedelta(milliseconds=votes[-1].at_ms if votes else 0)
    simulated = {"taste": taste.name, "mix": population.mix, "seed": seed,
                 "votes": len(out), "truth": {s: round(t, 6) for s, t in judged.truth.items()}}
    return export_header([build_id], end.isoformat(timespec="seconds"),
                         simulated=simulated), out
