"""Metric spaces, Annoy indexes and exact blockwise search.

Every variant compares vectors derived from one feature array:
- `l1`, `l2`: the float features as they are (float32);
- `cosine`: the features scaled to unit length (distance = Annoy's angular distance,
  sqrt(2 - 2 cos));
- `hamming`: one bit per dimension, set when the feature exceeds that dimension's
  median over the catalog rows (features are non-negative after ReLU, so a zero
  threshold would make most bits constant); distance = number of differing bits.
  Annoy's hamming index packs the 0/1 vector into 64-bit words itself.

Annoy indexes are built on the full vectors (no dimensionality reduction), so the
exact search below measures Annoy against the very same metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.builder.variants import METRICS
from engine.formats.state import DEFAULT_TREES
from engine.stats import wilson_interval

logger = logging.getLogger(__name__)

# Hamming thresholds: each dimension's median over at most this many catalog rows.
MEDIAN_SAMPLE = 20_000
MEDIAN_SEED = 0


@dataclass
class Neighbours:
    """The k nearest catalog rows of each query: row indices and distances."""

    idx: np.ndarray  # (queries, k) int64, indices into the catalog table
    dist: np.ndarray  # (queries, k) float32


def median_rows(catalog_rows: np.ndarray) -> np.ndarray:
    """Return the catalog rows the Hamming medians come from: all of them up to
    MEDIAN_SAMPLE, else a fixed random MEDIAN_SAMPLE of them (the same for every caller,
    so index, pairs and retraining binarize alike)."""
    if len(catalog_rows) <= MEDIAN_SAMPLE:
        return catalog_rows
    pick = np.random.default_rng(MEDIAN_SEED).choice(len(catalog_rows), MEDIAN_SAMPLE,
                                                      replace=False)
    return catalog_rows[np.sort(pick)]


def binarize(features: np.ndarray, catalog_rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """Threshold every dimension at its catalog median (median_rows); return bits and
    their balance."""
    rows = median_rows(catalog_rows)
    thresholds = np.median(np.asarray(features[rows], dtype=np.float32), axis=0)
    feats = np.asarray(features, dtype=np.float32)
    bits = feats > thresholds
    cat_bits = bits[catalog_rows]
    ones = cat_bits.mean(axis=0)
    balance = {
        "bits": int(bits.shape[1]),
        "mean_fraction_ones": round(float(ones.mean()), 4),
        "dead_bit_share": round(float(np.mean((ones == 0) | (ones == 1))), 4),
        "threshold": "catalog median per dimension (bit = feature > median)",
        "median_rows": int(len(rows)),
    }
    return bits, balance


def metric_vectors(features: np.ndarray, metric: str,
                   catalog_rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """Return the float32 vectors a metric compares (bits as 0/1 for hamming), plus info."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
    if metric == "hamming":
        bits, balance = binarize(features, catalog_rows)
        return bits.astype(np.float32), {"bit_balance": balance}
    vectors = np.asarray(features, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors), {}


def build_annoy(vectors: np.ndarray, metric: str, *, n_trees: int = DEFAULT_TREES,
                seed: int = 0):
    """Build a seeded Annoy index over the rows of vectors (item i = row i)."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(vectors.shape[1], METRICS[metric])
    index.set_seed(seed)
    for i, v in enumerate(vectors):
        index.add_item(i, v)
    index.build(n_trees, n_jobs=1)  # one job: tree building must not depend on threading
    return index


def load_annoy(path: Path, dims: int, metric: str):
    """Memory-map a saved Annoy index."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(dims, METRICS[metric])
    index.load(str(path))
    return index


def annoy_search(index, queries: np.ndarray, k: int, *, search_k: int,
                 item_rows: np.ndarray, exclude: list[set[int]]) -> Neighbours:
    """Return each query's k nearest index items, skipping excluded catalog rows."""
    idx = np.full((len(queries), k), -1, dtype=np.int64)
    dist = np.full((len(queries), k), np.inf, dtype=np.float32)
    for qi, vector in enumerate(queries):
        n = k + len(exclude[qi])
        items, dists = index.get_nns_by_vector(vector, n, search_k=search_k,
                                               include_distances=True)
        kept = [(item_rows[i], d) for i, d in zip(items, dists, strict=True)
                if item_rows[i] not in exclude[qi]][:k]
        for j, (row, d) in enumerate(kept):
            idx[qi, j], dist[qi, j] = row, d
    return Neighbours(idx, dist)


def _block_distances(q, c, metric: str, c_sq=None):
    import torch

    if metric == "l1":
        return torch.cdist(q, c, p=1)
    if metric == "hamming":  # bits as 0/1: |a| + |b| - 2 a.b, exact in float32
        return q.sum(1, keepdim=True) + c_sq[None, :] - 2 * q @ c.T
    # l2 and cosine (unit vectors): sqrt(|a|^2 + |b|^2 - 2 a.b), float64 for accuracy
    q64 = q.double()
    d2 = (q64 * q64).sum(1, keepdim=True) + c_sq[None, :] - 2 * q64 @ c.double().T
    return d2.clamp_min(0).sqrt().float()


def exact_search(queries: np.ndarray, catalog: np.ndarray, metric: str, k: int, *,
                 item_rows: np.ndarray, exclude: list[set[int]], device: str = "auto",
                 block: int = 256) -> Neighbours:
    """Return each query's exact k nearest catalog rows by blockwise search in torch."""
    import torch

    from engine.nets.features import resolve_device

    dev = resolve_device(device)
    c = torch.from_numpy(np.ascontiguousarray(catalog, dtype=np.float32)).to(dev)
    if metric == "hamming":
        c_sq = c.sum(1)
    else:
        c_sq = (c.double() ** 2).sum(1)
    position = {int(row): i for i, row in enumerate(item_rows)}
    idx_out, dist_out = [], []
    with torch.inference_mode():
        for start in range(0, len(queries), block):
            q = torch.from_numpy(np.ascontiguousarray(queries[start:start + block],
                                                      dtype=np.float32)).to(dev)
            d = _block_distances(q, c, metric, c_sq)
            for qi in range(len(q)):
                for row in exclude[start + qi]:
                    d[qi, position[row]] = float("inf")
            kk = min(k, c.shape[0])
            # Stable order on ties: sort by distance, then by catalog position.
            vals, pos = torch.sort(d, dim=1, stable=True)
            idx_out.append(pos[:, :kk].cpu().numpy())
            dist_out.append(vals[:, :kk].cpu().numpy())
    pos = np.concatenate(idx_out)
    return Neighbours(np.asarray(item_rows)[pos].astype(np.int64),
                      np.concatenate(dist_out).astype(np.float32))


def agreement(annoy: Neighbours, exact: Neighbours, *, rtol: float = 1e-4) -> dict:
    """Compare Annoy with exact search on the same queries: top-1 agreement (ties count)
    with its Wilson 95% interval, and recall@10."""
    same = annoy.idx[:, 0] == exact.idx[:, 0]
    tie = annoy.dist[:, 0] <= exact.dist[:, 0] * (1 + rtol) + 1e-6
    k = min(10, annoy.idx.shape[1], exact.idx.shape[1])
    recall = np.mean([len(set(a[:k]) & set(e[:k])) / k
                      for a, e in zip(annoy.idx, exact.idx, strict=True)]) if k else 0.0
    low, high = wilson_interval(int(np.sum(same | tie)), len(same))
    return {"top1_agreement": round(float(np.mean(same | tie)), 4),
            "top1_agreement_95": [round(low, 4), round(high, 4)],
            "top1_same_item": round(float(np.mean(same)), 4),
            "recall_at_10": round(float(recall), 4), "exact_queries": len(same)}
