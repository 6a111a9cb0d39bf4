"""Raw against corrected figures when the crowd is not all honest, offline.

Campaigns of a fixed number of votes on the default build, pairs drawn and refitted as
the web app does (bench/allocation.py's `play`), then scored against the crowd's
truth (the honest voters' approval):

- raw: each real variant's pooled dope rate, every voter counted (the counts);
- corrected: the leaderboard's estimate: inverse-probability weighted, without the
  voters at chance on the negative gold (webapp/jobs/fit.py's voter model).

    python bench/crowd_quality.py mixed --taste category --mix honest=0.7,yes=0.2,random=0.1 \
        --seeds 0-19 --votes 20000 [--out bench-mixed.json]
    python bench/crowd_quality.py adversary --taste category --mix honest=0.9,adversary=0.1 \
        --seeds 0-19 --votes 20000 [--out bench-adversary.json]

`mixed` reports each ranking's Spearman correlation with the truth and how often it
names the true best (and an epsilon-best one); `adversary` the target's rank and
estimate with and without the defences (the adversary's target: the variant the
taste likes least, unless the taste file names one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/engine.py would shadow the engine package
sys.path.append(str(ROOT / "bench"))

import allocation as sim  # noqa: E402  (bench/allocation.py)

from engine.crowd.simulate import resolve_target  # noqa: E402
from webapp.stats import estimates, standings  # noqa: E402
from webapp.stats.exclusion import voter_report  # noqa: E402
from webapp.stats.fitting import ledger_of  # noqa: E402


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def figures(design, judgments, epoch_h) -> tuple[list[float], list[float], int]:
    """Return (raw pooled rate, corrected estimate) per real variant, and how many
    voters and origins were excluded;
    corrected as webapp/jobs/fit.py computes it (voter model, epochs, weights)."""
    real = design.real()
    cells = judgments["cell"].astype(int)
    dope = judgments["dope"].astype(int)
    raw = []
    for i in real:
        mine = np.isin(cells, list(design.by_variant[i].values()))
        raw.append(float(dope[mine].mean()) if mine.any() else float("nan"))
    votes = {"cell": cells, "dope": dope, "voter": judgments["voter"],
             "origin": judgments["origin"],
             "probability": judgments["probability"].astype(float),
             "id": np.arange(len(cells)), "epoch": judgments["epoch"].astype(int)}
    omega, report = voter_report(votes, design)
    weights = estimates.Weights(design)
    live = (omega > 0) & ~judgments["gold"].astype(bool)  # warm-up gold weighs voters only
    ledger = ledger_of(weights, votes, live, dict(enumerate(epoch_h)), omega)
    st = standings.standing(design, ledger, weights=weights, seed=len(cells))
    return raw, st.estimate, report["excluded"] + report["excluded_origins"]


def one(job) -> dict:
    experiment, build, taste, mix, seed, n, adaptive, check = job
    judged, population, design = sim.judged_for(build, taste, mix)
    played = sim.play(build, taste, mix, adaptive, seed, n, check, stop=False)
    real = design.real()
    slugs = [design.variant_ids[i] for i in real]
    truth = [judged.truth[s] for s in slugs]
    raw, corrected, excluded = figures(design, played.judgments, played.epoch_h)
    best = max(truth)
    out = {"seed": seed, "excluded_voters": excluded}
    for name, values in (("raw", raw), ("corrected", corrected)):
        named = slugs[int(np.nanargmax(values))]
        out[name] = {"spearman": round(spearman(values, truth), 4),
                     "names_best": judged.truth[named] == best,
                     "names_epsilon_best": judged.truth[named] >= best - standings.EPSILON}
    if experiment == "adversary":
        target = resolve_target(judged, population)
        k = slugs.index(target)
        for name, values in (("raw", raw), ("corrected", corrected)):
            order = sorted(range(len(values)), key=lambda i: -values[i])
            out[name].update(target_rank=order.index(k) + 1,
                             target_estimate=round(values[k], 4))
        adversarial = [k for k in played.judgments["kind"] if k == "adversary"]
        out["adversary_share"] = round(len(adversarial) / max(len(played.judgments["kind"]), 1), 4)
        out["target"] = target
        out["target_truth"] = round(judged.truth[target], 4)
        out["target_true_rank"] = sorted(truth, reverse=True).index(judged.truth[target]) + 1
    return out


def summarise(runs: list[dict], experiment: str) -> dict:
    out = {}
    for name in ("raw", "corrected"):
        rho = [r[name]["spearman"] for r in runs]
        out[name] = {"spearman_median": round(statistics.median(rho), 3),
                     "spearman_range": [min(rho), max(rho)],
                     "names_best": sum(r[name]["names_best"] for r in runs),
                     "names_epsilon_best": sum(r[name]["names_epsilon_best"] for r in runs)}
        if experiment == "adversary":
            ranks = [r[name]["target_rank"] for r in runs]
            est = [r[name]["target_estimate"] for r in runs]
            out[name].update(target_rank_median=statistics.median(ranks),
                             target_rank_range=[min(ranks), max(ranks)],
                             target_estimate_median=round(statistics.median(est), 4))
    out["excluded_voters_median"] = statistics.median(r["excluded_voters"] for r in runs)
    if experiment == "adversary":
        out["target"], out["target_truth"] = runs[0]["target"], runs[0]["target_truth"]
        out["target_true_rank"] = runs[0]["target_true_rank"]
        out["adversary_share_median"] = statistics.median(r["adversary_share"] for r in runs)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment", choices=("mixed", "adversary"))
    ap.add_argument("--build", default=str(ROOT / "build" / "default"))
    ap.add_argument("--taste", default="category")
    ap.add_argument("--mix", default=None)
    ap.add_argument("--seeds", default="0-19")
    ap.add_argument("--votes", type=int, default=20000)
    ap.add_argument("--adaptive", type=float, default=0.65)
    ap.add_argument("--check", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    default_mix = {"mixed": "honest=0.7,yes=0.2,random=0.1",
                   "adversary": "honest=0.9,adversary=0.1"}[args.experiment]
    mix = {k: float(v) for k, v in (kv.split("=") for kv in (args.mix or default_mix).split(","))}
    jobs = [(args.experiment, args.build, args.taste, mix, s, args.votes, args.adaptive,
             args.check) for s in sim.seeds_of(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(one, jobs))
    report = {"experiment": args.experiment, "taste": args.taste, "mix": mix,
              "votes": args.votes, "seeds": args.seeds, "adaptive_share": args.adaptive,
              "summary": summarise(runs, args.experiment), "runs": runs}
    out = args.out or f"bench-{args.experiment}.json"
    Path(out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
