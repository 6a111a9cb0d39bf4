"""Metric spaces: the vectors each variant compares, made part by part.

Every variant compares vectors derived from one feature array:
- `l1`, `l2`: the float features as they are (float32);
- `cosine`: the features scaled to unit length (distance = Annoy's angular distance,
  sqrt(2 - 2 cos));
- `hamming`: one bit per dimension, set when the feature exceeds that dimension's
  median over the catalog rows (features are non-negative after ReLU, so a zero
  threshold would make most bits constant); distance = number of differing bits.
  The median comes from at most MEDIAN_SAMPLE catalog rows (a fixed random sample past
  that), so it costs the same at any catalog size.

A `MetricSpace` holds what a metric needs (the thresholds) and turns any rows into its
vectors, so a catalog of any size is transformed one shard at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.builder.variants import METRICS
from engine.formats.shards import iter_parts
from engine.stats import seeded_sample

# Hamming thresholds: each dimension's median over at most this many catalog rows.
MEDIAN_SAMPLE = 20_000
MEDIAN_SEED = 0


def median_rows(catalog_rows: np.ndarray) -> np.ndarray:
    """Return the catalog rows the Hamming medians come from: all of them up to
    MEDIAN_SAMPLE, else a fixed random MEDIAN_SAMPLE of them (the same for every caller,
    so index, pairs and retraining binarize alike)."""
    return catalog_rows[seeded_sample(len(catalog_rows), MEDIAN_SAMPLE, MEDIAN_SEED)]


def catalog_parts(features, catalog_rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (positions in catalog_rows, their feature rows) shard by shard; catalog_rows
    must be sorted (as a build's are)."""
    for first, part in iter_parts(features):
        positions, rows = catalog_part(first, part, catalog_rows)
        if len(positions):
            yield positions, rows


def catalog_part(first: int, part: np.ndarray, catalog_rows: np.ndarray):
    """Return (positions in catalog_rows, their feature rows) of the part starting at
    row `first`; catalog_rows must be sorted."""
    lo, hi = np.searchsorted(catalog_rows, [first, first + len(part)])
    return np.arange(lo, hi), np.asarray(part[catalog_rows[lo:hi] - first])


@dataclass
class MetricSpace:
    """One metric's transform: thresholds for hamming, none for the others."""

    metric: str
    thresholds: np.ndarray | None = None
    median_rows: int = 0

    @classmethod
    def fit(cls, features, metric: str, catalog_rows: np.ndarray) -> MetricSpace:
        """Return the space for `metric` over a build's features (shards or an array)."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        if metric != "hamming":
            return cls(metric)
        rows = median_rows(catalog_rows)
        thresholds = np.median(np.asarray(features[rows], dtype=np.float32), axis=0)
        return cls(metric, thresholds, len(rows))

    def report(self, features, catalog_rows: np.ndarray) -> dict:
        """Return what the index report says of the space: hamming's bit balance over the
        catalog rows (one more pass over them), nothing for the others."""
        if self.metric != "hamming":
            return {}
        ones = np.zeros(len(self.thresholds))
        for _, vectors in self.parts(features, catalog_rows):
            ones += vectors.sum(axis=0)
        ones /= max(len(catalog_rows), 1)
        return {"bit_balance": {
            "bits": int(len(self.thresholds)),
            "mean_fraction_ones": round(float(ones.mean()), 4),
            "dead_bit_share": round(float(np.mean((ones == 0) | (ones == 1))), 4),
            "threshold": "catalog median per dimension (bit = feature > median)",
            "median_rows": int(self.median_rows)}}

    def vectors(self, rows) -> np.ndarray:
        """Return the float32 vectors the metric compares (bits as 0/1 for hamming)."""
        feats = np.asarray(rows, dtype=np.float32)
        if self.metric == "hamming":
            return (feats > self.thresholds).astype(np.float32)
        if self.metric == "cosine":
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(feats)

    def parts(self, features, catalog_rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (positions in catalog_rows, their vectors) shard by shard."""
        for positions, rows in catalog_parts(features, catalog_rows):
            yield positions, self.vectors(rows)


def binarize(features: np.ndarray, catalog_rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """Threshold every dimension at its catalog median (median_rows); return the bits of
    every row and their balance."""
    space = MetricSpace.fit(features, "hamming", catalog_rows)
    return space.vectors(features) > 0, space.report(features, catalog_rows)["bit_balance"]


def metric_vectors(features, metric: str, catalog_rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """Return every row's float32 vectors for a metric (small sets), plus info."""
    space = MetricSpace.fit(features, metric, catalog_rows)
    return space.vectors(features), space.report(features, catalog_rows)
