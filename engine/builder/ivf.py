"""The index past Annoy's size: inverted lists on disk, read list by list, never mapped.

For l1, l2 and cosine, an IVF-Flat index in a directory (`indexes/<slug>.ivf/`):
- `quantizer.faiss`: the lists' centroids (a faiss flat index, k-means trained on a fixed
  sample with seed 0, as faiss' IndexIVFFlat trains them);
- `vectors.npy`: every catalog item's vector (float32), grouped by list;
- `positions.npy`: the catalog position of each of those rows;
- `offsets.npy`: list l holds rows offsets[l] to offsets[l + 1].
It is built in two passes over the parts (assign each row its list; write each part's rows
at their final place with pwrite), and searched by reading the probed lists with pread.
Nothing is memory-mapped, so a process' resident memory stays the size of the lists it
reads, not of the catalog: the reason this is not faiss' own on-disk index, whose mapped
lists made a 240k build's resident memory grow 7x (docs/benchmarks.md, "A real catalog").
Within the probed lists, distances are exact (faiss' flat search), as in IndexIVFFlat.

For hamming, an exact faiss binary index: one bit per dimension, 1/32 of the float vectors.
"""

from __future__ import annotations

import math
import os
import shutil
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np

from engine.builder.exact import Neighbours
from engine.stats import seeded_sample

IVF_TRAIN_ROWS = 20_000
FIRST_NPROBE = 8

Parts = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # (positions, vectors)
AssignAll = Callable[..., np.ndarray]  # (quantizer, n_items) -> each position's list


def faiss_metric(metric: str):
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


def train_quantizer(sample: np.ndarray, metric: str, n_lists: int):
    """Return a flat faiss index of n_lists centroids trained on `sample` (seed 0)."""
    import faiss

    dims = sample.shape[1]
    quantizer = faiss.IndexFlat(dims, faiss_metric(metric))
    trainer = faiss.IndexIVFFlat(quantizer, dims, n_lists, faiss_metric(metric))
    trainer.cp.seed = 0  # k-means seed: the same lists every build
    trainer.train(np.ascontiguousarray(sample, dtype=np.float32))
    return quantizer


def assign(quantizer, rows: np.ndarray) -> np.ndarray:
    """Return each row's list: its nearest centroid."""
    _, lists = quantizer.search(np.ascontiguousarray(rows, dtype=np.float32), 1)
    return lists[:, 0].astype(np.int32)


def assign_parts(parts: Parts, quantizer, n_items: int) -> np.ndarray:
    """Return every catalog position's list, assigned part by part."""
    listed = np.full(n_items, -1, dtype=np.int32)
    for positions, rows in parts():
        listed[positions] = assign(quantizer, rows)
    return listed


# --- building -------------------------------------------------------------------------

def build_ivf(parts: Parts, sample: np.ndarray, metric: str, n_items: int, path: Path,
              assign_all: AssignAll | None = None) -> dict:
    """Build a variant's IVF directory at `path` from its parts; `sample` holds the vectors
    the lists are trained on; `assign_all` gives every item its list (default: here, part
    by part; builder.ray_index: on Ray). Return what the manifest says of it."""
    import faiss

    n_lists = min(ivf_lists(n_items), len(sample))
    quantizer = train_quantizer(sample, metric, n_lists)
    listed = (assign_all or partial(assign_parts, parts))(quantizer, n_items)
    if (listed < 0).any():
        raise ValueError(f"{path}: the parts do not cover all {n_items} catalog items")
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    order = np.argsort(listed, kind="stable")  # by list, then by catalog position
    slot = np.empty(n_items, dtype=np.int64)
    slot[order] = np.arange(n_items)
    _write_vectors(path / "vectors.npy", parts, slot, n_items, sample.shape[1])
    np.save(path / "positions.npy", order.astype(np.int64))
    counts = np.bincount(listed, minlength=n_lists)
    np.save(path / "offsets.npy", np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    faiss.write_index(quantizer, str(path / "quantizer.faiss"))
    return {"kind": "ivf-flat", "lists": n_lists, "train_rows": len(sample),
            "largest_list": int(counts.max())}


def _write_vectors(path: Path, parts: Parts, slot: np.ndarray, n_items: int, dims: int):
    """Write each part's rows at their slots of an (n_items, dims) float32 .npy file."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n_items, dims)})
        start = f.tell()
        f.truncate(start + n_items * dims * 4)
        for positions, rows in parts():
            slots = slot[positions]
            order = np.argsort(slots)
            slots, rows = slots[order], np.ascontiguousarray(rows, np.float32)[order]
            runs = np.flatnonzero(np.diff(slots) != 1) + 1  # consecutive slots: one write
            for a, b in zip(np.r_[0, runs], np.r_[runs, len(slots)], strict=True):
                os.pwrite(f.fileno(), rows[a:b].tobytes(), start + int(slots[a]) * dims * 4)


def build_binary(parts: Parts, dims: int, path: Path) -> dict:
    """Build hamming's exact binary index at `path`."""
    import faiss

    index = faiss.IndexBinaryFlat(8 * math.ceil(dims / 8))
    for _, rows in parts():
        index.add(np.packbits(np.asarray(rows) > 0, axis=1))
    faiss.write_index_binary(index, str(path))
    return {"kind": "faiss-binary-flat", "exact": True}


# --- searching ------------------------------------------------------------------------

class ListFile:
    """vectors.npy read a list at a time with pread (thread- and fork-safe, never mapped)."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, dtype = read_header[np.lib.format.read_magic(f)](f)
            self.start = f.tell()
        self.dims, self.dtype = shape[1], np.dtype(dtype)
        self.fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)  # closed when the search is let go

    def rows(self, a: int, b: int) -> np.ndarray:
        width = self.dims * self.dtype.itemsize
        data = os.pread(self.fd, (b - a) * width, self.start + a * width)
        return np.frombuffer(data, dtype=self.dtype).reshape(b - a, self.dims)


class IvfSearch:
    """A saved IVF directory searched with exclusions; nprobe starts at FIRST_NPROBE."""

    def __init__(self, path: Path, metric: str):
        import faiss

        self.metric = metric
        self.quantizer = faiss.read_index(str(path / "quantizer.faiss"))
        self.offsets = np.load(path / "offsets.npy")
        self.positions = np.load(path / "positions.npy")
        self.vectors = ListFile(path / "vectors.npy")
        self.n_lists = len(self.offsets) - 1
        self.nprobe = min(FIRST_NPROBE, self.n_lists)

    def escalate(self) -> bool:
        """Double nprobe (up to every list); say whether it changed."""
        if self.nprobe >= self.n_lists:
            return False
        self.nprobe = min(2 * self.nprobe, self.n_lists)
        return True

    def nearest(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (distances as reported, catalog positions) of each query's n nearest
        items in its nprobe nearest lists; position -1 where fewer were found."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        _, probes = self.quantizer.search(q, self.nprobe)
        larger_is_nearer = self.metric == "cosine"
        dist = np.full((len(q), self.nprobe * n), -np.inf if larger_is_nearer else np.inf)
        pos = np.full((len(q), self.nprobe * n), -1, dtype=np.int64)
        for lst in np.unique(probes[probes >= 0]):
            asking, probe = np.nonzero(probes == lst)
            d, p = self._search_list(int(lst), q[asking], n)
            cols = probe[:, None] * n + np.arange(d.shape[1])
            dist[asking[:, None], cols], pos[asking[:, None], cols] = d, p
        order = np.argsort(-dist if larger_is_nearer else dist, axis=1, kind="stable")[:, :n]
        raw = np.take_along_axis(dist, order, axis=1)
        return reported_distance(raw, self.metric), np.take_along_axis(pos, order, axis=1)

    def _search_list(self, lst: int, queries: np.ndarray, n: int):
        import faiss

        a, b = int(self.offsets[lst]), int(self.offsets[lst + 1])
        if a == b:
            return np.empty((len(queries), 0)), np.empty((len(queries), 0), dtype=np.int64)
        flat = faiss.IndexFlat(self.vectors.dims, faiss_metric(self.metric))
        flat.add(np.ascontiguousarray(self.vectors.rows(a, b), dtype=np.float32))
        d, i = flat.search(queries, min(n, b - a))
        return d, self.positions[a + i]

    def search(self, queries: np.ndarray, k: int, *, item_rows: np.ndarray,
               exclude: list[set[int]]) -> Neighbours:
        dist, pos = self.nearest(queries, wanted(k, item_rows, exclude))
        return allowed(dist, pos, k, item_rows, exclude)


class BinarySearch:
    """Hamming's exact binary index, searched with exclusions."""

    nprobe = None

    def __init__(self, path: Path):
        import faiss

        self.index = faiss.read_index_binary(str(path))

    def escalate(self) -> bool:
        return False  # exact already

    def search(self, queries: np.ndarray, k: int, *, item_rows: np.ndarray,
               exclude: list[set[int]]) -> Neighbours:
        dist, pos = self.index.search(np.packbits(queries > 0, axis=1),
                                      wanted(k, item_rows, exclude))
        return allowed(dist.astype(np.float64), pos, k, item_rows, exclude)


def reported_distance(raw: np.ndarray, metric: str) -> np.ndarray:
    """faiss' raw scores as Annoy reports distances: l2 unsquared, cosine as angular."""
    with np.errstate(invalid="ignore"):
        if metric == "l2":
            return np.sqrt(np.maximum(raw, 0))
        if metric == "cosine":  # inner products of unit vectors
            return np.where(np.isfinite(raw), np.sqrt(np.maximum(2 - 2 * raw, 0)), np.inf)
    return raw


def wanted(k: int, item_rows: np.ndarray, exclude: list[set[int]]) -> int:
    """How many neighbours to ask for so that k remain after the exclusions."""
    return min(k + max((len(e) for e in exclude), default=0), len(item_rows))


def allowed(dist: np.ndarray, pos: np.ndarray, k: int, item_rows: np.ndarray,
            exclude: list[set[int]]) -> Neighbours:
    """Keep each query's first k found positions whose catalog rows are not excluded."""
    idx = np.full((len(pos), k), -1, dtype=np.int64)
    out = np.full((len(pos), k), np.inf, dtype=np.float32)
    for qi in range(len(pos)):
        kept = [(item_rows[p], d) for p, d in zip(pos[qi], dist[qi], strict=True)
                if p >= 0 and item_rows[p] not in exclude[qi]][:k]
        for j, (row, d) in enumerate(kept):
            idx[qi, j], out[qi, j] = row, d
    return Neighbours(idx, out)
