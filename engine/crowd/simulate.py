"""The simulated crowd: voters with a known taste (engine.crowd.taste) who play the game.

A population is a mix of voter types (docs/crowd.md):

- `honest`: the taste with the voter's own weights (spread `taste_sd` around the
  taste's, engine.crowd.taste), plus a personal leniency on the logit scale
  (Normal(0, leniency_sd)), both drawn once per voter; a share `lapse` of votes cast at
  random; hard pairs skipped more: skip * 4 p (1 - p) for a pair it approves with p;
- `yes`: says dope with probability `dope_rate` whatever it is shown;
- `random`: says dope with probability `dope_rate` (0.5), a coin;
- `tiring`: honest (own weights too), but its lapse rate rises from `lapse_start` to `lapse_end`,
  halfway after `half_life` votes, and it decides faster as it tires;
- `adversary`: pushes `target` (a variant slug; empty = the real variant the taste
  likes least): it knows that variant's matches (as anyone who ran the public models
  could), says dope on them and nope on everything else, and takes a new identity
  (drops its cookie) every `cookie_every` votes.

Each voter casts a heavy-tailed number of votes (a discrete Pareto: `min_votes`
times a Pareto(`alpha`) draw, capped at `max_votes`), whatever its type, so the
mix's shares are shares of voters and, in expectation, of votes. Decision times are
log-normal. Everything is drawn from one seeded generator: a seed gives one crowd.

The offline game these voters play is engine.crowd.campaign.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from engine.crowd.taste import SPREAD, PairJudge, Taste, mean_approval, spread_sd
from engine.formats.builddir import BuildDir

VOTER_TYPES = ("honest", "yes", "random", "tiring", "adversary")
# Every parameter a population file may set: (default, low, high).
PARAMETERS: dict[str, dict[str, tuple]] = {
    "honest": {"leniency_sd": (0.5, 0.0, 5.0), "taste_sd": (0.3, 0.0, 3.0),
               "lapse": (0.05, 0.0, 1.0), "skip": (0.04, 0.0, 0.9)},
    "yes": {"dope_rate": (0.9, 0.0, 1.0)},
    "random": {"dope_rate": (0.5, 0.0, 1.0)},
    "tiring": {"leniency_sd": (0.5, 0.0, 5.0), "lapse_start": (0.05, 0.0, 1.0),
               "lapse_end": (0.6, 0.0, 1.0), "half_life": (60, 1, 1_000_000)},
    "adversary": {"target": ("", None, None), "cookie_every": (20, 1, 1_000_000)},
    "activity": {"alpha": (1.2, 0.3, 10.0), "min_votes": (2, 1, 100_000),
                 "max_votes": (500, 1, 1_000_000)},
    "timing": {"median_ms": (1800, 50, 600_000), "sigma": (0.6, 0.0, 3.0),
               "min_ms": (350, 0, 600_000), "fast_median_ms": (600, 50, 600_000)},
    "game": {"control_share": (0.1, 0.0, 1.0)},
}
DEFAULT_MIX = {"honest": 1.0}
DOPE, NOPE, SKIP = "dope", "nope", "skip"


# ---------------------------------------------------------------- the population

def parse_mix(text: str) -> dict[str, float]:
    """Parse "honest=0.8,yes=0.1,random=0.1"; raise ValueError unless shares sum to 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in VOTER_TYPES:
            raise ValueError(f"--mix: {part!r} is not TYPE=SHARE with TYPE one of "
                             f"{', '.join(VOTER_TYPES)}")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"--mix: {value!r} is not a number") from None
        if not 0.0 <= share <= 1.0 or name in mix:
            raise ValueError(f"--mix: {name} must appear once with a share in [0, 1]")
        mix[name] = share
    return check_mix(mix)


def check_mix(mix: dict) -> dict[str, float]:
    """Return the mix if its types are known and its shares sum to 1."""
    unknown = sorted(set(mix) - set(VOTER_TYPES))
    if unknown:
        raise ValueError(f"mix: unknown voter type(s) {', '.join(unknown)}; "
                         f"known: {', '.join(VOTER_TYPES)}")
    if not mix or abs(sum(mix.values()) - 1.0) > 1e-6:
        raise ValueError(f"mix: shares must sum to 1, not {sum(mix.values()):g}")
    return {k: float(v) for k, v in mix.items() if v > 0}


def _parameter(group: str, key: str, value):
    default, low, high = PARAMETERS[group][key]
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"population: {group}.{key} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise ValueError(f"population: {group}.{key} must be a number in [{low}, {high}]")
    return int(value) if isinstance(default, int) else float(value)


@dataclass
class Population:
    """The mix of voter types and every type's parameters."""

    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    params: dict[str, dict] = field(default_factory=lambda: {
        g: {k: spec[0] for k, spec in keys.items()} for g, keys in PARAMETERS.items()})

    @classmethod
    def from_taste(cls, taste: Taste, mix: dict[str, float] | None = None) -> Population:
        """Return the defaults overridden by the taste file's [population] and then mix."""
        pop = cls()
        for group, table in taste.population.items():
            if group == "mix":
                pop.mix = check_mix(table)
                continue
            if group not in PARAMETERS or not isinstance(table, dict):
                raise ValueError(f"population: unknown table [population.{group}]; known: "
                                 f"mix, {', '.join(PARAMETERS)}")
            for key, value in table.items():
                if key not in PARAMETERS[group]:
                    raise ValueError(f"population: unknown parameter {group}.{key}; known: "
                                     f"{', '.join(PARAMETERS[group])}")
                pop.params[group][key] = _parameter(group, key, value)
        if mix is not None:
            pop.mix = check_mix(mix)
        return pop

    def honest_truth(self, logits: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
        """Return the honest crowd's mean dope probability (skips aside) for each pair:
        its logit, and its PairJudge.basis row (how voters' weights move it)."""
        h = self.params["honest"]
        spread = np.zeros((len(logits), len(SPREAD))) if basis is None else basis
        return mean_approval(logits, spread_sd(spread, h["taste_sd"], h["leniency_sd"]),
                             h["lapse"])


# ---------------------------------------------------------------- voters

@dataclass
class Voter:
    """One simulated person: type, parameters drawn for it, identity, votes cast."""

    kind: str
    budget: int
    leniency: float
    ident: str
    cast: int = 0
    taste: np.ndarray | None = None  # taste_sd * z_u: its weights' spread (honest, tiring)

    def lapse(self, params: dict) -> float:
        if self.kind == "tiring":
            t = params["tiring"]
            grown = 1.0 - 0.5 ** (self.cast / t["half_life"])
            return t["lapse_start"] + (t["lapse_end"] - t["lapse_start"]) * grown
        return params["honest"]["lapse"]

    def decide(self, look: Look, is_target: bool, params: dict, rng: random.Random) -> str:
        """Return this voter's verdict on a pair (`look`: the taste's logit and basis)."""
        kind = self.kind
        if kind in ("yes", "random"):
            return DOPE if rng.random() < params[kind]["dope_rate"] else NOPE
        if kind == "adversary":
            return DOPE if is_target else NOPE
        p = self.approval(look)
        if kind == "honest" and rng.random() < params["honest"]["skip"] * 4 * p * (1 - p):
            return SKIP
        if rng.random() < self.lapse(params):
            return DOPE if rng.random() < 0.5 else NOPE
        return DOPE if rng.random() < p else NOPE

    def approval(self, look: Look) -> float:
        """Return the chance this voter approves the pair, lapses aside."""
        own = look.logit + self.leniency
        if self.taste is not None:
            own += float(self.taste @ look.basis)
        return 1.0 / (1.0 + math.exp(-own))

    def decision_ms(self, params: dict, rng: random.Random) -> int:
        """Return how long this voter looks at a pair before swiping."""
        t = params["timing"]
        median = t["median_ms"] if self.kind in ("honest", "tiring") else t["fast_median_ms"]
        if self.kind == "tiring":
            median *= 0.5 + 0.5 * 0.5 ** (self.cast / params["tiring"]["half_life"])
        return max(int(t["min_ms"]), int(median * math.exp(t["sigma"] * rng.gauss(0, 1))))


def new_ident(rng: random.Random) -> str:
    return f"{rng.getrandbits(48):012x}"


def new_voter(population: Population, rng: random.Random) -> Voter:
    """Draw a voter: its type from the mix, its activity, its leniency."""
    kinds, shares = zip(*population.mix.items(), strict=True)
    kind = rng.choices(kinds, weights=shares)[0]
    a = population.params["activity"]
    draw = a["min_votes"] * (1.0 - rng.random()) ** (-1.0 / a["alpha"])
    budget = int(min(a["max_votes"], max(a["min_votes"], draw)))
    sd = population.params.get(kind, {}).get("leniency_sd", 0.0)
    voter = Voter(kind, budget, rng.gauss(0, sd) if sd else 0.0, new_ident(rng))
    taste_sd = population.params["honest"]["taste_sd"]
    if kind in ("honest", "tiring") and taste_sd:
        voter.taste = taste_sd * np.array([rng.gauss(0, 1) for _ in SPREAD])
    return voter


# ---------------------------------------------------------------- a build, judged

@dataclass
class Look:
    """What a voter sees in a pair, as the taste reads it: its logit, and its
    PairJudge.basis row (how a voter's own weights move that logit)."""

    logit: float
    basis: np.ndarray


@dataclass
class JudgedBuild:
    """A build's rank-1 pairs per variant, each variant's truth, each pair's logit."""

    build: BuildDir
    slugs: list[str]
    controls: set[str]
    pairs: dict[str, list[tuple[str, str]]]
    truth: dict[str, float]  # honest crowd's mean approval per variant
    looks: dict[tuple[str, str], Look]
    judge: PairJudge

    def real_slugs(self) -> list[str]:
        return [s for s in self.slugs if s not in self.controls]

    def ranking(self) -> list[str]:
        """Return the real variants from the best true approval down."""
        return sorted(self.real_slugs(), key=lambda s: -self.truth[s])

    def target_pairs(self, target: str) -> set[tuple[str, str]]:
        return set(self.pairs[target])

    def look(self, query_id: str, match_id: str) -> Look:
        """Return the taste's look at any two images with thumbnails in the build."""
        pair = (query_id, match_id)
        if pair not in self.looks:
            self.looks[pair] = Look(float(self.judge.logits([query_id], [match_id])[0]),
                                    self.judge.basis([query_id], [match_id])[0])
        return self.looks[pair]


def judge_build(build: BuildDir, taste: Taste, population: Population) -> JudgedBuild:
    """Apply the taste to every pair of the build and compute each variant's truth."""
    judge = PairJudge(taste, build)
    slugs = [v["slug"] for v in build.variants]
    pairs = {s: [] for s in slugs}
    for p in build.pairs:
        pairs[p.variant].append((p.query_id, p.match_id))
    every = [pair for rows in pairs.values() for pair in rows]
    judge.centre([q for q, _ in every], [m for _, m in every])
    truth, looks = {}, {}
    for slug, rows in pairs.items():
        if not rows:
            truth[slug] = float("nan")
            continue
        queries, matches = [q for q, _ in rows], [m for _, m in rows]
        logits, basis = judge.logits(queries, matches), judge.basis(queries, matches)
        truth[slug] = float(population.honest_truth(logits, basis).mean())
        looks.update((pair, Look(float(lg), b))
                     for pair, lg, b in zip(rows, logits, basis, strict=True))
    return JudgedBuild(build, slugs, build.control_slugs, pairs, truth, looks, judge)


def resolve_target(judged: JudgedBuild, population: Population) -> str:
    """Return the adversary's target: the configured slug, or the least-liked real variant."""
    target = population.params["adversary"]["target"]
    if not target:
        return judged.ranking()[-1]
    if target not in judged.real_slugs():
        raise ValueError(f"population: adversary.target {target!r} is not a real variant of "
                         f"this build; known: {', '.join(judged.real_slugs())}")
    return target


def truth_report(judged: JudgedBuild, taste: Taste, population: Population) -> dict:
    """Return each variant's true approval, the true ranking and its neighbours' gaps."""
    names = {v["slug"]: v["name"] for v in judged.build.variants}
    ranking = judged.ranking()
    rows = [{"slug": s, "name": names[s], "true_approval": round(judged.truth[s], 5),
             "pairs": len(judged.pairs[s]), "control": s in judged.controls,
             "rank": ranking.index(s) + 1 if s in ranking else None}
            for s in sorted(judged.slugs, key=lambda s: -judged.truth[s])]
    gaps = [{"between": [a, b], "gap": round(judged.truth[a] - judged.truth[b], 5)}
            for a, b in zip(ranking, ranking[1:], strict=False)]
    h = population.params["honest"]
    basis = np.array([look.basis for look in judged.looks.values()])
    sd = spread_sd(basis, h["taste_sd"], 0.0) if len(basis) else np.zeros(1)
    truth_is = (f"The truth is the honest crowd's mean approval of each pair: voters differ in "
                f"leniency (sd {h['leniency_sd']:g} logit) and in their own weights (taste_sd "
                f"{h['taste_sd']:g}: their logits spread {np.median(sd):.2f} logit around the "
                f"taste's on the median pair, {np.percentile(sd, 90):.2f} at the 90th "
                f"percentile); lapses {h['lapse']:g}.")
    return {"taste": taste.name, "build_id": judged.build.build_id, "truth_is": truth_is,
            "honest": dict(h), "taste_logit_sd": {"median": round(float(np.median(sd)), 4),
                                                  "p90": round(float(np.percentile(sd, 90)), 4)},
            "variants": rows, "ranking": ranking, "gaps": gaps}
