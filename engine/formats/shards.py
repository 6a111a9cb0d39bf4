"""Feature shards: one network.layer's rows as float16 parts, written as they are made.

    features/<key>/part-00000.npy    rows [0, shard_rows), float16 (rows, dims)
    features/<key>/part-00000.json   {"part", "first_row", "rows", "dims", "fingerprint"}
    features/<key>/index.json        written last: the key, rows, dims, shard_rows, parts

Part p always holds rows [p * shard_rows, (p + 1) * shard_rows), whoever made it, so
workers (`engine extract --shard i/N`) and a resumed build share one layout. A part is
finished when its .json exists and agrees with its .npy; both are written under a
temporary name and renamed, so a killed writer never leaves a half part under a final
name. The fingerprint names the catalog and settings the rows come from: a part with
another fingerprint is refused, never overwritten. Numpy only (no torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_ROWS = 8192
INDEX_FILE = "index.json"


class ShardError(ValueError):
    """A shard directory that cannot be used as asked (another build's, damaged, partial)."""


@dataclass(frozen=True)
class ShardPlan:
    """How `rows` rows split into parts of `shard_rows`."""

    rows: int
    shard_rows: int = SHARD_ROWS

    @property
    def parts(self) -> int:
        return -(-self.rows // self.shard_rows)

    def span(self, part: int) -> tuple[int, int]:
        first = part * self.shard_rows
        return first, min(first + self.shard_rows, self.rows)


def part_name(part: int) -> str:
    return f"part-{part:05d}"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """Return an .npy file's shape and dtype from its header, None if it is not whole."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return arr.shape, arr.dtype


class ShardWriter:
    """Writes one key's parts; refuses a directory that holds another catalog's rows."""

    def __init__(self, directory: Path, plan: ShardPlan, fingerprint: str):
        self.dir, self.plan, self.fingerprint = Path(directory), plan, fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_index()

    def _check_index(self) -> None:
        path = self.dir / INDEX_FILE
        if path.is_file():
            index = json.loads(path.read_text())
            self._same_source(index, path)

    def _same_source(self, meta: dict, path: Path) -> None:
        theirs = (meta.get("fingerprint"), meta.get("shard_rows", self.plan.shard_rows))
        if theirs != (self.fingerprint, self.plan.shard_rows):
            raise ShardError(f"{path} belongs to another build (other catalog, settings or "
                             "shard size); nothing was overwritten: remove "
                             f"{self.dir} or use another build directory")

    def done(self, part: int) -> bool:
        """Say whether part is finished; raise ShardError for a foreign or damaged one."""
        meta_path = self.dir / f"{part_name(part)}.json"
        if not meta_path.is_file():
            return False  # never finished (a .npy alone is redone)
        meta = json.loads(meta_path.read_text())
        self._same_source(meta, meta_path)
        first, stop = self.plan.span(part)
        found = _npy_shape(self.dir / f"{part_name(part)}.npy")
        if meta.get("first_row") != first or meta.get("rows") != stop - first or \
                found is None or found[0] != (stop - first, meta.get("dims")):
            raise ShardError(f"{self.dir / part_name(part)}.npy is damaged or half-written "
                             f"(expected {stop - first} rows as its .json says); delete the "
                             "part's two files to have it made again")
        return True

    def missing(self) -> list[int]:
        return [p for p in range(self.plan.parts) if not self.done(p)]

    def write(self, part: int, rows: np.ndarray) -> None:
        first, stop = self.plan.span(part)
        rows = np.ascontiguousarray(rows, dtype=np.float16)
        if rows.ndim != 2 or len(rows) != stop - first:
            raise ValueError(f"part {part} needs {stop - first} rows, got {rows.shape}")
        name = part_name(part)
        _atomic_write(self.dir / f"{name}.npy", lambda f: np.save(f, rows))
        meta = {"part": part, "first_row": first, "rows": stop - first,
                "dims": int(rows.shape[1]), "fingerprint": self.fingerprint,
                "shard_rows": self.plan.shard_rows}
        _atomic_write(self.dir / f"{name}.json", lambda f: f.write(json.dumps(meta).encode()))

    def finish(self) -> bool:
        """Write index.json once every part is finished; say whether it was."""
        if self.missing():
            return False
        dims = json.loads((self.dir / f"{part_name(0)}.json").read_text())["dims"] \
            if self.plan.parts else 0
        index = {"rows": self.plan.rows, "dims": dims, "shard_rows": self.plan.shard_rows,
                 "parts": self.plan.parts, "dtype": "float16", "fingerprint": self.fingerprint}
        _atomic_write(self.dir / INDEX_FILE, lambda f: f.write(json.dumps(index).encode()))
        return True


class PartFiller:
    """Collects batches in row order over a list of parts; writes each part when full."""

    def __init__(self, writer: ShardWriter, parts: list[int]):
        self.writer, self.parts = writer, list(parts)
        self._chunks: list[np.ndarray] = []
        self._have = 0

    def add(self, batch: np.ndarray) -> None:
        while len(batch):
            first, stop = self.writer.plan.span(self.parts[0])
            take = min(len(batch), stop - first - self._have)
            self._chunks.append(batch[:take])
            self._have += take
            batch = batch[take:]
            if self._have == stop - first:
                self.writer.write(self.parts.pop(0), np.concatenate(self._chunks))
                self._chunks, self._have = [], 0

    def close(self) -> None:
        if self.parts or self._have:
            raise RuntimeError(f"{self.writer.dir}: the batches ended before parts "
                               f"{self.parts} were full")


class FeatureShards:
    """A finished key's rows, read part by part; reads like a 2-D array.

    No part stays mapped: each read opens what it needs and lets it go, so reading a
    whole catalog leaves none of it resident in this process (the page cache keeps what
    the kernel can spare)."""

    dtype = np.dtype(np.float16)
    ndim = 2

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        path = self.dir / INDEX_FILE
        if not path.is_file():
            what = "is not finished (no index.json): some parts are missing" \
                if self.dir.is_dir() else "does not exist"
            raise ShardError(f"{self.dir} {what}; run `python -m engine extract` on the "
                             "build again")
        self.meta = json.loads(path.read_text())
        self.plan = ShardPlan(self.meta["rows"], self.meta["shard_rows"])
        for p in range(self.plan.parts):
            self._open(p)  # every part checked once, up front

    def _open(self, part: int, mmap: bool = True) -> np.ndarray:
        path = self.dir / f"{part_name(part)}.npy"
        first, stop = self.plan.span(part)
        found = _npy_shape(path)
        if found is None or found[0] != (stop - first, self.meta["dims"]):
            raise ShardError(f"{path} is missing, damaged or half-written (expected "
                             f"{stop - first} rows of {self.meta['dims']})")
        return np.load(path, mmap_mode="r" if mmap else None)

    @property
    def shape(self) -> tuple[int, int]:
        return self.plan.rows, self.meta["dims"]

    def __len__(self) -> int:
        return self.plan.rows

    def parts(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, rows) per part, each read whole and then let go."""
        for p in range(self.plan.parts):
            yield self.part(p)

    def part(self, part: int) -> tuple[int, np.ndarray]:
        """Return (first row, rows) of one part, read whole."""
        return self.plan.span(part)[0], self._open(part, mmap=False)

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(self.plan.rows)[rows]
        rows = np.asarray(rows)
        if rows.ndim == 0:
            return self[rows[None]][0]
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        out = np.empty((len(rows), self.meta["dims"]), np.float16)
        part = rows // self.plan.shard_rows
        for p in np.unique(part):
            sel = part == p
            mapped = self._open(int(p))
            out[sel] = mapped[rows[sel] - p * self.plan.shard_rows]
            del mapped  # unmapped here: gathered rows stay, the part does not
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate([rows for _, rows in self.parts()]) if self.plan.parts else \
            np.zeros((0, self.meta["dims"]), np.float16)
        return whole if dtype is None else whole.astype(dtype)


def iter_parts(features, shard_rows: int = SHARD_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, rows) of shards, or of an in-memory array in shard-sized chunks."""
    if isinstance(features, FeatureShards):
        yield from features.parts()
        return
    for first in range(0, len(features), shard_rows):
        yield first, features[first:first + shard_rows]
