"""Exact nearest neighbours, streamed over the catalog's shards, and agreement with them.

The exact check compares each variant's index with brute force on a fixed sample of
queries (builder.pairs.exact_sample). Brute force runs in torch, block by block, one
shard of the catalog at a time; each shard's best k are merged into the running best
k, so memory holds the sample and one shard, whatever the catalog size. L2 runs in
float64 so near-ties are ordered as the metric says; ties keep catalog order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from engine.stats import wilson_interval


@dataclass
class Neighbours:
    """The k nearest catalog rows of each query: row indices and distances."""

    idx: np.ndarray  # (queries, k) int64, indices into the catalog table
    dist: np.ndarray  # (queries, k) float32


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


def _part_best(queries, positions, vectors, metric, k, item_rows, exclude, dev, block):
    """Return the k best (distance, position) of one catalog part for every query."""
    import torch

    c = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(dev)
    c_sq = c.sum(1) if metric == "hamming" else (c.double() ** 2).sum(1)
    column = {int(item_rows[p]): j for j, p in enumerate(positions)}
    pos = torch.from_numpy(np.asarray(positions, dtype=np.int64))
    dists, poses = [], []
    for start in range(0, len(queries), block):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + block],
                                                  dtype=np.float32)).to(dev)
        d = _block_distances(q, c, metric, c_sq)
        for qi in range(len(q)):
            for row in exclude[start + qi]:
                if row in column:
                    d[qi, column[row]] = float("inf")
        vals, order = torch.sort(d, dim=1, stable=True)
        dists.append(vals[:, :k].cpu())
        poses.append(pos[order[:, :k].cpu()])
    return torch.cat(dists), torch.cat(poses)


def exact_search(queries: np.ndarray, catalog, metric: str, k: int, *,
                 item_rows: np.ndarray, exclude: list[set[int]], device: str = "auto",
                 block: int = 256) -> Neighbours:
    """Return each query's exact k nearest catalog rows. `catalog` is the metric vectors
    of item_rows (an array), or an iterable of (positions in item_rows, vectors) parts
    in position order (metric.MetricSpace.parts)."""
    import torch

    from engine.nets.features import resolve_device

    dev = resolve_device(device)
    parts: Iterable = [(np.arange(len(catalog)), catalog)] \
        if isinstance(catalog, np.ndarray) else catalog
    best_d = torch.zeros((len(queries), 0))
    best_p = torch.zeros((len(queries), 0), dtype=torch.int64)
    with torch.inference_mode():
        for positions, vectors in parts:
            d, p = _part_best(queries, positions, vectors, metric, k, item_rows, exclude,
                              dev, block)
            # Earlier parts hold smaller positions: a stable sort keeps ties in catalog order.
            vals, order = torch.sort(torch.cat([best_d, d], 1), dim=1, stable=True)
            best_d = vals[:, :k]
            best_p = torch.gather(torch.cat([best_p, p], 1), 1, order[:, :k])
    return Neighbours(np.asarray(item_rows)[best_p.numpy()].astype(np.int64),
                      best_d.numpy().astype(np.float32))


def agreement(found: Neighbours, exact: Neighbours, *, rtol: float = 1e-4) -> dict:
    """Compare an index with exact search on the same queries: top-1 agreement (ties
    count) with its Wilson 95% interval, and recall@10."""
    same = found.idx[:, 0] == exact.idx[:, 0]
    tie = found.dist[:, 0] <= exact.dist[:, 0] * (1 + rtol) + 1e-6
    k = min(10, found.idx.shape[1], exact.idx.shape[1])
    recall = np.mean([len(set(a[:k]) & set(e[:k])) / k
                      for a, e in zip(found.idx, exact.idx, strict=True)]) if k else 0.0
    low, high = wilson_interval(int(np.sum(same | tie)), len(same))
    return {"top1_agreement": round(float(np.mean(same | tie)), 4),
            "top1_agreement_95": [round(low, 4), round(high, 4)],
            "top1_same_item": round(float(np.mean(same)), 4),
            "recall_at_10": round(float(recall), 4), "exact_queries": len(same)}
