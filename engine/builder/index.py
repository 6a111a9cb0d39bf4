"""Each variant's index over the catalog, built from the shards: Annoy, or faiss past a size.

- Annoy (catalogs up to ANNOY_MAX_ITEMS): seeded trees over the full vectors, the index
  the article used; `search_k` is raised until it agrees with exact search.
- faiss past that size (Annoy holds every vector in memory while it builds, and its build
  time grows faster than the catalog): for l1, l2 and cosine an inverted-file index
  (IVF-Flat, faiss' k-means and flat search) whose lists live on disk and are read list by
  list (builder.ivf); `nprobe` is raised until it agrees with exact search. For hamming,
  an exact faiss binary index (one bit per dimension, 1/32 of the float vectors).

Item i of every index is catalog position i (the i-th catalog row); searches map it back
to the row. docs/benchmarks.md ("A real catalog") measures where the switch pays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.builder.exact import Neighbours
from engine.builder.ivf import (
    AssignAll,
    BinarySearch,
    IvfSearch,
    Parts,
    build_binary,
    build_ivf,
)
from engine.builder.variants import METRICS
from engine.formats.state import DEFAULT_TREES

logger = logging.getLogger(__name__)

ANNOY_MAX_ITEMS = 50_000
INDEX_KINDS = ("auto", "annoy", "faiss")


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
                sample: Callable[[], np.ndarray], trees: int, seed: int,
                assign_all: AssignAll | None = None) -> dict:
    """Build one variant's index of `kind` at `path` + its suffix; return its info:
    the file and what a search needs to open it. `assign_all`: see ivf.build_ivf."""
    if kind == "annoy":
        path = path.with_name(f"{path.name}.ann")
        index = build_annoy(parts(), metric, n_trees=trees, seed=seed, dims=dims)
        index.save(str(path))
        index.unload()
        info = {"kind": "annoy", "annoy_metric": METRICS[metric], "trees": trees, "seed": seed}
    else:
        path, info = _build_faiss(path, metric, parts, dims=dims, n_items=n_items, sample=sample,
                                  assign_all=assign_all)
    return {"file": f"{path.parent.name}/{path.name}", "dims": dims, "items": n_items} | info


def _build_faiss(path: Path, metric: str, parts: Parts, *, dims: int, n_items: int,
                 sample: Callable[[], np.ndarray],
                 assign_all: AssignAll | None) -> tuple[Path, dict]:
    if metric == "hamming":
        path = path.with_name(f"{path.name}.faiss")
        return path, build_binary(parts, dims, path)
    path = path.with_name(f"{path.name}.ivf")
    return path, build_ivf(parts, sample(), metric, n_items, path, assign_all)


def open_index(build: Path, info: dict, metric: str, *, search_k: int):
    """Open a variant's saved index (its info from the index stage's report)."""
    path = build / info["file"]
    if info.get("kind", "annoy") == "annoy":
        return AnnoySearch.open(path, info["dims"], metric, search_k)
    return BinarySearch(path) if metric == "hamming" else IvfSearch(path, metric)


def setting(index) -> dict:
    """What the search ran with, for the report."""
    if isinstance(index, AnnoySearch):
        return {"index": "annoy", "search_k": index.search_k}
    return {"index": "faiss", "nprobe": index.nprobe}
