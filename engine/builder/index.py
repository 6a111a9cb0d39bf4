"""Each variant's index over the catalog, built from the shards: Annoy, or faiss past a size.

- Annoy (catalogs up to ANNOY_MAX_ITEMS): seeded trees over the full vectors, the index
  the article used; `search_k` is raised until it agrees with exact search.
- faiss past that size (Annoy holds every vector in memory while it builds, and its build
  time grows faster than the catalog): for l1, l2 and cosine an inverted-file index
  (IVF-Flat) trained on a fixed sample, filled one shard at a time into per-shard files,
  merged into one on-disk list file and memory-mapped when searched; `nprobe` is raised
  until it agrees with exact search. For hamming, an exact binary index (one bit per
  dimension, 1/32 of the float vectors), filled shard by shard.

Item i of every index is catalog position i (the i-th catalog row); searches map it back
to the row. docs/benchmarks.md ("A real catalog") measures where the switch pays.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from engine.builder.exact import Neighbours
from engine.builder.variants import METRICS
from engine.formats.state import DEFAULT_TREES
from engine.stats import seeded_sample

logger = logging.getLogger(__name__)

ANNOY_MAX_ITEMS = 50_000
INDEX_KINDS = ("auto", "annoy", "faiss")
IVF_TRAIN_ROWS = 20_000
FIRST_NPROBE = 8

Parts = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # (positions, vectors)


def index_kind(asked: str, n_items: int) -> str:
    """Return the index a variant gets: annoy up to ANNOY_MAX_ITEMS items, else faiss."""
    if asked not in INDEX_KINDS:
        raise ValueError(f"unknown index {asked!r}; accepted: {', '.join(INDEX_KINDS)}")
    if asked != "auto":
        return asked
    return "annoy" if n_items <= ANNOY_MAX_ITEMS else "faiss"


# --- Annoy ---------------------------------------------------------------------------

def build_annoy(vectors, metric: str, *, n_trees: int = DEFAULT_TREES, seed: int = 0, dims=None):
    """Build a seeded Annoy index: item i = row i of `vectors` (an array), or the given
    positions of (positions, vectors) parts."""
    from annoy import AnnoyIndex

    parts = [(np.arange(len(vectors)), vectors)] if isinstance(vectors, np.ndarray) else vectors
    index = None
    for positions, rows in parts:
        if index is None:
            index = AnnoyIndex(dims or rows.shape[1], METRICS[metric])
            index.set_seed(seed)
        for i, v in zip(positions, rows, strict=True):
            index.add_item(int(i), v)
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


# --- faiss -----------------------------------------------------------------------------

def _faiss_metric(metric: str):
    import faiss

    return {"l1": faiss.METRIC_L1, "l2": faiss.METRIC_L2,
            "cosine": faiss.METRIC_INNER_PRODUCT}[metric]


def ivf_sample(n_items: int, seed: int) -> np.ndarray:
    """Return the catalog positions IVF trains on: all up to IVF_TRAIN_ROWS, else a
    seeded random IVF_TRAIN_ROWS of them, in order."""
    return seeded_sample(n_items, IVF_TRAIN_ROWS, seed)


def ivf_lists(n_items: int) -> int:
    """Inverted lists for n items: about sqrt(n), between 16 and 4,096."""
    return int(min(4096, max(16, round(math.sqrt(n_items)))))


def build_faiss(parts: Parts, sample: np.ndarray, metric: str, n_items: int,
                path: Path) -> dict:
    """Build a variant's faiss index at `path` from its parts; `sample` holds the metric
    vectors IVF trains on. Return what the manifest says of it."""
    import faiss

    if metric == "hamming":
        return _build_binary(parts, sample.shape[1], path)
    nlist = min(ivf_lists(n_items), len(sample))
    index = faiss.IndexIVFFlat(faiss.IndexFlat(sample.shape[1], _faiss_metric(metric)),
                               sample.shape[1], nlist, _faiss_metric(metric))
    index.cp.seed = 0  # k-means seed: the same lists every build
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    part_dir = path.with_suffix(".parts")
    part_dir.mkdir(exist_ok=True)
    files = []
    for n, (positions, rows) in enumerate(parts()):
        shard = faiss.clone_index(index)
        shard.add_with_ids(np.ascontiguousarray(rows, dtype=np.float32), positions)
        files.append(str(part_dir / f"part-{n:05d}.ivf"))
        faiss.write_index(shard, files[-1])
    from faiss.contrib.ondisk import merge_ondisk

    merge_ondisk(index, files, str(path.with_suffix(".ivfdata")))
    faiss.write_index(index, str(path))
    shutil.rmtree(part_dir)
    return {"kind": "faiss-ivf-flat", "lists": nlist, "train_rows": len(sample),
            "data": path.with_suffix(".ivfdata").name}


def _build_binary(parts: Parts, dims: int, path: Path) -> dict:
    import faiss

    index = faiss.IndexBinaryFlat(8 * math.ceil(dims / 8))
    for _, rows in parts():
        index.add(np.packbits(np.asarray(rows) > 0, axis=1))
    faiss.write_index_binary(index, str(path))
    return {"kind": "faiss-binary-flat", "exact": True}


class FaissSearch:
    """A saved faiss index, memory-mapped, searched with exclusions."""

    def __init__(self, path: Path, metric: str):
        import faiss

        self.metric = metric
        if metric == "hamming":
            self.index = faiss.read_index_binary(str(path))
            self.nprobe = None
        else:
            self.index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
            self.nprobe = min(FIRST_NPROBE, self.index.nlist)
            self.index.nprobe = self.nprobe

    def escalate(self) -> bool:
        """Double nprobe (up to every list); say whether it changed."""
        if self.nprobe is None or self.nprobe >= self.index.nlist:
            return False
        self.nprobe = min(2 * self.nprobe, self.index.nlist)
        self.index.nprobe = self.nprobe
        return True

    def search(self, queries: np.ndarray, k: int, *, item_rows: np.ndarray,
               exclude: list[set[int]]) -> Neighbours:
        extra = max((len(e) for e in exclude), default=0)
        n = min(k + extra, len(item_rows))
        if self.metric == "hamming":
            dist, pos = self.index.search(np.packbits(queries > 0, axis=1), n)
        else:
            dist, pos = self.index.search(np.ascontiguousarray(queries, np.float32), n)
        dist = self._distances(dist.astype(np.float64))
        idx = np.full((len(queries), k), -1, dtype=np.int64)
        out = np.full((len(queries), k), np.inf, dtype=np.float32)
        for qi in range(len(queries)):
            kept = [(item_rows[p], d) for p, d in zip(pos[qi], dist[qi], strict=True)
                    if p >= 0 and item_rows[p] not in exclude[qi]][:k]
            for j, (row, d) in enumerate(kept):
                idx[qi, j], out[qi, j] = row, d
        return Neighbours(idx, out)

    def _distances(self, raw: np.ndarray) -> np.ndarray:
        if self.metric == "l2":
            return np.sqrt(np.maximum(raw, 0))
        if self.metric == "cosine":  # inner products of unit vectors -> Annoy's angular
            return np.sqrt(np.maximum(2 - 2 * raw, 0))
        return raw


class AnnoySearch:
    """An Annoy index (built, or saved and memory-mapped) searched with exclusions."""

    def __init__(self, index, search_k: int):
        self.index, self.search_k = index, search_k

    @classmethod
    def open(cls, path: Path, dims: int, metric: str, search_k: int) -> AnnoySearch:
        return cls(load_annoy(path, dims, metric), search_k)

    def escalate(self) -> bool:
        self.search_k *= 2
        return True

    def search(self, queries: np.ndarray, k: int, *, item_rows: np.ndarray,
               exclude: list[set[int]]) -> Neighbours:
        return annoy_search(self.index, queries, k, search_k=self.search_k,
                            item_rows=item_rows, exclude=exclude)


# --- one variant's index, either kind ----------------------------------------------------

def build_index(path: Path, kind: str, metric: str, parts: Parts, *, dims: int, n_items: int,
                sample: Callable[[], np.ndarray], trees: int, seed: int) -> dict:
    """Build one variant's index of `kind` at `path` + its suffix; return its info:
    the file and what a search needs to open it."""
    if kind == "annoy":
        path = path.with_name(f"{path.name}.ann")
        index = build_annoy(parts(), metric, n_trees=trees, seed=seed, dims=dims)
        index.save(str(path))
        index.unload()
        info = {"kind": "annoy", "annoy_metric": METRICS[metric], "trees": trees, "seed": seed}
    else:
        path = path.with_name(f"{path.name}.faiss")
        info = build_faiss(parts, sample(), metric, n_items, path)
    return {"file": f"{path.parent.name}/{path.name}", "dims": dims, "items": n_items} | info


def open_index(build: Path, info: dict, metric: str, *, search_k: int):
    """Open a variant's saved index (its info from the index stage's report)."""
    path = build / info["file"]
    if info.get("kind", "annoy") == "annoy":
        return AnnoySearch.open(path, info["dims"], metric, search_k)
    return FaissSearch(path, metric)


def setting(index) -> dict:
    """What the search ran with, for the report."""
    if isinstance(index, AnnoySearch):
        return {"index": "annoy", "search_k": index.search_k}
    return {"index": "faiss", "nprobe": index.nprobe}
