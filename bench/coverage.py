"""Do the board's intervals hold under a crowd whose voters differ? Coverage, offline.

Campaigns on the default build with the simulated crowd (voters with their own tastes
and leniency, heavy-tailed activity, pair-dependent skips: docs/crowd.md), pairs drawn
by the web app's allocation and refitted every `--check` votes (bench/allocation.py's
`play`, no stop). At every fit, every interval the board reports is checked against
the crowd's truth: each real variant's (ci_low, ci_high) and the leader's margin with
every other variant. A campaign **misses** if any of them ever excludes the truth.
The share of campaigns that miss must be at most alpha (5%).

The board shows the corrected figures: the fit's voter model (webapp.stats.exclusion
.voter_report) excludes or down-weights voters first. Every `--corrected-every` votes
(default 2,000) the corrected standing is computed as the periodic fit does and checked
the same way. At the end of each campaign the honest voters the voter model excluded or
down-weighted below half are counted: the false exclusions.

Two methods:
- `new` (the board's): variance clustered by voter, every reported interval jointly
  at alpha (standings.Alphas.of), the web app's warm-up gold pairs;
- `today` (before issue 17): every judgment independent, alpha / K per variant and
  alpha / (K - 1) per margin (standings.Alphas.per_family), no warm-up.

    python bench/coverage.py --taste tone --seeds 5000-5199 --method new \
        [--votes 20000] [--check 250] [--corrected-every 2000] [--mix honest=1] \
        [--workers 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after ROOT: bench/engine.py must not shadow engine

import allocation as sim  # noqa: E402

from engine.stats import wilson_interval  # noqa: E402
from webapp.stats import estimates, standings  # noqa: E402
from webapp.stats.exclusion import voter_report  # noqa: E402
from webapp.stats.fitting import ledger_of  # noqa: E402


def misses(st, truth: list[float]) -> list[str]:
    """Return what the standing's reported intervals miss (empty: all cover)."""
    out = [f"v{i}" for i, lo, hi in zip(st.positions, st.low, st.high, strict=True)
           if not lo <= truth[i] <= hi]
    if st.leader is not None:
        out += [f"d{st.leader}-{j}" for j, (lo, hi) in st.margins.items()
                if not lo <= truth[st.leader] - truth[j] <= hi]
    return out


def as_votes(log: dict) -> dict:
    """The fit's vote arrays from play's judgment log."""
    return {"cell": np.array(log["cell"], dtype=int), "dope": np.array(log["dope"], dtype=int),
            "voter": np.array(log["voter"], dtype=object),
            "origin": np.array(log["origin"], dtype=object),
            "probability": np.array(log["probability"], dtype=float),
            "id": np.arange(len(log["cell"])), "epoch": np.array(log["epoch"], dtype=int),
            "kind": np.array(log["kind"], dtype=object),
            "gold": np.array(log["gold"], dtype=bool)}


def corrected(design, log: dict, epoch_h: list, alphas) -> standings.Standing:
    """The corrected standing as the periodic fit computes it (webapp.stats.fitting)."""
    votes = as_votes(log)
    weight, _ = voter_report(votes, design)
    weights = estimates.Weights(design)
    ledger = ledger_of(weights, votes, (weight > 0) & ~votes["gold"], dict(enumerate(epoch_h)),
                       weight)
    return standings.standing(design, ledger, weights=weights, alphas=alphas)


def false_exclusions(judgments: dict, design) -> dict:
    """Run the fit's voter model on a campaign's judgments; count by voter type."""
    votes = as_votes({k: list(v) for k, v in judgments.items()})
    weight, _ = voter_report(votes, design)
    out = {}
    for kind in sorted(set(judgments["kind"])):
        people = set(judgments["voter"][judgments["kind"] == kind])
        mine = (judgments["kind"] == kind) & ~votes["gold"]  # the judgments weighed
        dropped = set(judgments["voter"][mine & (weight == 0)])
        lowered = set(judgments["voter"][mine & (weight > 0) & (weight < 0.5)])
        out[kind] = {"voters": len(people), "excluded": len(dropped),
                     "down_weighted": len(lowered), "judgments": int(mine.sum()),
                     "judgments_weight": round(float(weight[mine].sum()), 1)}
    return out


def one(job) -> dict:
    build, taste, mix, seed, votes, check, method, every = job
    judged, _, design = sim.judged_for(build, taste, mix)
    truth = [judged.truth.get(s, float("nan")) for s in design.variant_ids]
    seen: dict = {"first_miss": None, "what": [], "fits": 0}

    k = len(design.real())
    alphas = standings.Alphas.of(standings.ALPHA, k) if method == "new" \
        else standings.Alphas.per_family(standings.ALPHA, k)

    def on_fit(st, cast, log, epoch_h):
        seen["fits"] += 1
        missed = misses(st, truth)
        if cast % every == 0:
            missed += ["corrected:" + m for m in
                       misses(corrected(design, log, epoch_h, alphas), truth)]
        if missed and seen["first_miss"] is None:
            seen["first_miss"], seen["what"] = cast, missed

    played = sim.play(build, taste, mix, 0.65, seed, votes, check, stop=False,
                      cluster=method == "new", alphas=alphas, on_fit=on_fit,
                      gold_first=None if method == "new" else (0, 0.0))
    return {"seed": seed, "missed": seen["first_miss"] is not None, **seen,
            "voters": false_exclusions(played.judgments, design)}


def summarise(runs: list[dict]) -> dict:
    missed = sum(r["missed"] for r in runs)
    low, high = wilson_interval(missed, len(runs))
    kinds = {k for r in runs for k in r["voters"]}
    voters = {}
    for kind in sorted(kinds):
        total = sum(r["voters"].get(kind, {}).get("voters", 0) for r in runs)
        dropped = sum(r["voters"].get(kind, {}).get("excluded", 0) for r in runs)
        lowered = sum(r["voters"].get(kind, {}).get("down_weighted", 0) for r in runs)
        judged = sum(r["voters"].get(kind, {}).get("judgments", 0) for r in runs)
        kept = sum(r["voters"].get(kind, {}).get("judgments_weight", 0) for r in runs)
        voters[kind] = {"voters": total, "excluded": dropped, "down_weighted": lowered,
                        "excluded_share": round(dropped / total, 5) if total else None,
                        "judgments": judged,
                        "judgments_weight_share": round(kept / judged, 4) if judged else None}
    return {"campaigns": len(runs), "missed": missed, "miss_share": round(missed / len(runs), 4),
            "miss_95": [round(low, 4), round(high, 4)],
            "first_miss_median": statistics.median([r["first_miss"] for r in runs
                                                    if r["missed"]] or [0]),
            "voters": voters}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=str(ROOT / "build" / "default"))
    ap.add_argument("--taste", default="tone")
    ap.add_argument("--seeds", default="5000-5199")
    ap.add_argument("--method", choices=("new", "today"), default="new")
    ap.add_argument("--votes", type=int, default=20_000)
    ap.add_argument("--check", type=int, default=250)
    ap.add_argument("--mix", default="honest=1")
    ap.add_argument("--corrected-every", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="bench-coverage.json")
    args = ap.parse_args(argv)
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
    jobs = [(args.build, args.taste, mix, s, args.votes, args.check, args.method,
             args.corrected_every)
            for s in sim.seeds_of(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(one, jobs))
    report = {"taste": args.taste, "method": args.method, "mix": mix, "votes": args.votes,
              "check": args.check, "seeds": args.seeds,
              "seconds": round(time.perf_counter() - t0, 1), **summarise(runs), "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
