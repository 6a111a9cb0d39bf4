"""How far a sampled median is from the exact one, for the Hamming variants' bits.

Each Hamming variant thresholds every dimension at its catalog median. Past
engine.builder.metric.MEDIAN_SAMPLE catalog rows the median comes from a fixed random
sample of that many rows. On a build's own features this script draws samples of
--sizes rows (seeded, as the engine does) and reports, over the dimensions:

- the quantile error: how far the sampled median is from the exact one in the full
  catalog's distribution, |F(sampled median) - F(exact median)| with F the share of
  catalog values at or below (ReLU features tie many values at the median, so F of the
  exact median is itself often far from 0.5);
- the share of catalog bits that differ from the exact median's bits.

    python bench/hamming_median.py [--build build/default] [--sizes 500,1000,2000,5000] \
        [--seeds 0,1,2] [--out bench-hamming-median.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.builder.variants import variants_of  # noqa: E402
from engine.formats.builddir import open_build  # noqa: E402


def quantile_error(values: np.ndarray, sampled: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per dimension, |F(sampled) - F(exact)|, F the share of values at or below."""
    return np.abs((values <= sampled).mean(axis=0) - (values <= exact).mean(axis=0))


def measure(feats: np.ndarray, sizes: list[int], seeds: list[int]) -> list[dict]:
    """Return one row per sample size: quantile error and bit flips, over seeds."""
    exact = np.median(feats, axis=0)
    exact_bits = feats > exact
    rows = []
    for size in sizes:
        errors, flips = [], []
        for seed in seeds:
            pick = np.random.default_rng(seed).choice(len(feats), size, replace=False)
            sampled = np.median(feats[np.sort(pick)], axis=0)
            errors.append(quantile_error(feats, sampled, exact))
            flips.append(float(((feats > sampled) != exact_bits).mean()))
        errors = np.concatenate(errors)
        rows.append({"sample": size, "catalog": len(feats), "seeds": len(seeds),
                     "quantile_error_mean": round(float(errors.mean()), 5),
                     "quantile_error_p99": round(float(np.quantile(errors, 0.99)), 5),
                     "bits_flipped_mean": round(float(np.mean(flips)), 5),
                     "bits_flipped_max": round(float(np.max(flips)), 5)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=Path("build/default"))
    p.add_argument("--sizes", default="500,1000,2000,5000")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=Path("bench-hamming-median.json"))
    args = p.parse_args()
    build = open_build(args.build)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    keys = sorted({v.feature_key for v in variants_of(build.state) if v.metric == "hamming"})
    report = {}
    print("| features | sample | quantile error mean | p99 | bits flipped mean | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in keys:
        feats = np.asarray(build.features(key)[build.table.catalog_rows], np.float32)
        report[key] = measure(feats, [s for s in sizes if s < len(feats)], seeds)
        for r in report[key]:
            print(f"| {key} | {r['sample']:,} of {r['catalog']:,} | {r['quantile_error_mean']} | "
                  f"{r['quantile_error_p99']} | {r['bits_flipped_mean']} | "
                  f"{r['bits_flipped_max']} |")
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
