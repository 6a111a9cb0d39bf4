"""Adaptive against uniform allocation, with the leaderboard's stopping rule, offline.

The simulated crowd (engine.crowd.simulate) votes on the default build; pairs are drawn by the
web app's own allocation (webapp/stats/allocation.py) and every judgment is pooled and
weighted as the leaderboard's fit does (webapp/stats/estimates.py). Every `--check` votes
the standing is recomputed (and, for the adaptive rule, the allocation redrawn from
its probabilities of being best, as the periodic fit does); a campaign stops when
the standing is settled, and is right when the variant it names is within epsilon
(one point) of the true best.

    python bench/allocation.py --taste category --seeds 0-49 --adaptive 0,0.5 \
        [--build build/default] [--max-votes 150000] [--check 250] [--mix honest=1] \
        [--workers 2] [--out bench-allocation.json]

The rule's settings (adaptive share, minimum judgments, t*) were chosen on seeds
1000-1019; the figures in docs/benchmarks.md are from seeds 0-49.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/engine.py would shadow the engine package

from engine.formats.builddir import read_build  # noqa: E402, I001
from engine.crowd.simulate import Population, judge_build, new_ident, new_voter, resolve_target  # noqa: E402
from engine.crowd.taste import load_taste  # noqa: E402
from webapp.config import DEFAULTS  # noqa: E402
from webapp.stats import allocation, estimates, standings  # noqa: E402
from webapp.stats.design import CONTROL, REAL, build_design  # noqa: E402

_JUDGED = {}


def design_of(judged):
    """The web app's design for the simulated build: image ids as strings."""
    slugs = judged.slugs
    variants = [(s, CONTROL if s in judged.controls else REAL) for s in slugs]
    pairs = [(k, s, q, m) for k, (s, (q, m)) in enumerate(
        (s, row) for s in slugs for row in judged.pairs[s])]
    return build_design(variants, pairs)


def judged_for(build: str, taste_name: str, mix: dict):
    key = (build, taste_name, tuple(sorted(mix.items())))
    if key not in _JUDGED:
        taste = load_taste(taste_name)
        population = Population.from_taste(taste, mix)
        judged = judge_build(read_build(build), taste, population)
        _JUDGED[key] = (judged, population, design_of(judged))
    return _JUDGED[key]


@dataclass
class Played:
    """One simulated campaign: its last standing, when it stopped, and every judgment."""

    standing: standings.Standing | None
    votes: int
    judgments: dict  # arrays: cell, voter (identity), dope, probability, kind, epoch
    epoch_h: list  # each epoch's weights h (estimates.Ledger)


def play(build, taste_name, mix, adaptive_share, seed, max_votes, check, *, stop=True,
         control_share=0.1, epochs=True, cluster=True, alphas=None, on_fit=None,
         gold_first=None) -> Played:
    """Play a campaign as the web app allocates and fits; stop when settled (if `stop`).
    `cluster`: the variance clustered by voter (else every judgment independent, as
    before); `alphas`: standings.Alphas (default: the board's); `on_fit(standing, votes,
    log, epoch_h)` is called after every fit (log: the judgments so far, as lists);
    `gold_first`: (pairs, share) of the warm-up gold (None: the web app's defaults), whose
    votes are logged with gold True and never enter the ledger."""
    judged, population, design = judged_for(build, taste_name, mix)
    rng = random.Random(seed)
    params = population.params
    target = set(judged.pairs[resolve_target(judged, population)]) \
        if "adversary" in population.mix else set()

    def allocate(focus):
        return allocation.make_allocation(design, control_share=control_share,
                                          adaptive_share=adaptive_share, focus=focus)

    weights = estimates.Weights(design)
    uniform = allocation.make_allocation(design, control_share=control_share,
                                         adaptive_share=0.0)
    ledger = estimates.Ledger(weights)
    epoch_h = []

    def refresh(focus):
        new = allocate(focus)
        if epochs:
            epoch_h.append(estimates.epoch_weights(weights, new.probability,
                                                   uniform.probability))
            ledger.start_epoch(epoch_h[-1])
        return new

    alloc = refresh(None)
    log = {"cell": [], "voter": [], "dope": [], "probability": [], "kind": [], "epoch": [],
           "origin": [], "gold": []}
    gold = allocation.gold_allocation(design)
    gold_pairs, gold_share = gold_first or (DEFAULTS["DOPE_GOLD_FIRST_PAIRS"],
                                            DEFAULTS["DOPE_GOLD_FIRST_SHARE"])
    cast, settled, st = 0, None, None
    while cast < max_votes and settled is None:
        voter = new_voter(population, rng)
        seen = set()
        while voter.cast < voter.budget and cast < max_votes:
            if voter.kind == "adversary" and voter.cast and \
                    voter.cast % params["adversary"]["cookie_every"] == 0:
                seen, voter.ident = set(), new_ident(rng)
            # The web app's warm-up (webapp.play.pairing.next_pair), outside the mixture.
            warmup = voter.cast < gold_pairs and rng.random() < gold_share
            drawn = gold.draw_fresh(seen, rng) if warmup else None
            warmup = drawn is not None
            drawn = drawn or alloc.draw_fresh(seen, rng)
            if drawn is None:
                break
            _, _, cell = drawn
            q, m = design.cells[cell]
            seen.add((q, m))
            verdict = voter.decide(judged.looks[(q, m)], (q, m) in target, params, rng)
            voter.cast += 1
            cast += 1
            if verdict != "skip":
                if not warmup:
                    ledger.add(cell, verdict == "dope", alloc.probability[cell],
                               voter.ident if cluster else None)
                for key, value in (("cell", cell), ("voter", voter.ident),
                                   ("dope", int(verdict == "dope")),
                                   ("probability", (gold if warmup else alloc)
                                                    .probability[cell]),
                                   ("kind", voter.kind), ("epoch", len(epoch_h) - 1),
                                   # The adversary is one script on one address.
                                   ("origin", "adversary" if voter.kind == "adversary"
                                    else voter.ident), ("gold", warmup)):
                    log[key].append(value)
            if cast % check == 0:
                st = standings.standing(design, ledger if epochs else ledger.total,
                                        weights=weights, seed=cast, alphas=alphas)
                if on_fit is not None:
                    on_fit(st, cast, log, epoch_h)
                if stop and st.settled:
                    settled = st
                    break
                if adaptive_share > 0:
                    alloc = refresh(st.focus())
    arrays = {k: np.array(v, dtype=object if k in ("voter", "kind", "origin") else None)
              for k, v in log.items()}
    return Played(settled if stop else st, cast, arrays, epoch_h)


def run_campaign(build, taste_name, mix, adaptive_share, seed, max_votes, check,
                 epochs=True) -> dict:
    """Play one campaign to its stop; return when it settled, whom it named, if rightly."""
    judged, _, design = judged_for(build, taste_name, mix)
    played = play(build, taste_name, mix, adaptive_share, seed, max_votes, check,
                  epochs=epochs)
    result, slugs = played.standing, design.variant_ids
    best = max(judged.truth[s] for s in judged.real_slugs())
    out = {"taste": taste_name, "adaptive_share": adaptive_share, "seed": seed,
           "votes": played.votes, "settled": result is not None}
    if result is not None:
        named = slugs[result.leader]
        out.update(named=named, correct=judged.truth[named] >= best - standings.EPSILON,
                   tied_with=[slugs[j] for j in result.tied_with])
    return out


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def summarise(runs: list[dict]) -> dict:
    settled = [r for r in runs if r["settled"]]
    votes = sorted(r["votes"] for r in settled)
    return {"campaigns": len(runs), "settled": len(settled),
            "correct": sum(1 for r in settled if r["correct"]),
            "error_rate": round(1 - sum(r["correct"] for r in settled) / len(settled), 4)
            if settled else None,
            "median_votes": statistics.median(votes) if votes else None,
            "quartiles": [votes[len(votes) // 4], votes[(3 * len(votes)) // 4]] if votes else None,
            "mean_votes": round(statistics.mean(votes)) if votes else None}


def votes_to_95(runs: list[dict]) -> float:
    """Votes by which 95% of the campaigns have stopped, rightly: a campaign that did not
    stop, or named a variant more than epsilon below the best, counts as never."""
    votes = sorted(r["votes"] if r["settled"] and r["correct"] else np.inf for r in runs)
    return float(votes[int(np.ceil(0.95 * len(votes))) - 1])


def ratio_95(adaptive: list[dict], uniform: list[dict], draws: int = 2000,
             seed: int = 0) -> dict:
    """adaptive / uniform votes to name an epsilon-best variant at 95% correctness, with a
    percentile bootstrap over campaigns (each arm resampled on its own)."""
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(draws):
        a = [adaptive[i] for i in rng.integers(0, len(adaptive), len(adaptive))]
        u = [uniform[i] for i in rng.integers(0, len(uniform), len(uniform))]
        ratios.append(votes_to_95(a) / votes_to_95(u))
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {"adaptive_votes_95": votes_to_95(adaptive), "uniform_votes_95": votes_to_95(uniform),
            "ratio": round(votes_to_95(adaptive) / votes_to_95(uniform), 3),
            "ratio_95_bootstrap": [round(float(low), 3), round(float(high), 3)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=str(ROOT / "build" / "default"))
    ap.add_argument("--taste", default="category")
    ap.add_argument("--seeds", default="0-49")
    ap.add_argument("--adaptive", default="0,0.5", help="adaptive shares to compare")
    ap.add_argument("--max-votes", type=int, default=150_000)
    ap.add_argument("--check", type=int, default=250)
    ap.add_argument("--mix", default="honest=1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-epochs", action="store_true",
                    help="weight every judgment alike (no epoch weights)")
    ap.add_argument("--out", default="bench-allocation.json")
    args = ap.parse_args(argv)
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
    jobs = [(args.build, args.taste, mix, float(a), s, args.max_votes, args.check,
             not args.no_epochs) for a in args.adaptive.split(",") for s in seeds_of(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(_run, jobs))
    report = {"taste": args.taste, "mix": mix, "max_votes": args.max_votes,
              "check": args.check, "seeds": args.seeds, "epochs": not args.no_epochs,
              "seconds": round(time.perf_counter() - t0, 1), "by_share": {}}
    shares = args.adaptive.split(",")
    for a in shares:
        report["by_share"][a] = summarise([r for r in runs if r["adaptive_share"] == float(a)])
        report["by_share"][a]["votes_95"] = votes_to_95(
            [r for r in runs if r["adaptive_share"] == float(a)])
    if "0" in shares and len(shares) == 2:
        other = next(a for a in shares if a != "0")
        report["adaptive_vs_uniform"] = ratio_95(
            [r for r in runs if r["adaptive_share"] == float(other)],
            [r for r in runs if r["adaptive_share"] == 0.0])
    report["runs"] = runs
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    return 0


def _run(job):
    return run_campaign(*job)


if __name__ == "__main__":
    raise SystemExit(main())
