"""engine-state.json: a build's options and the engine's bookkeeping (engine only)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.formats.shards import SHARD_ROWS
from engine.nets import DEFAULT_FASHION_INPUT

STATE_FILE = "engine-state.json"
DEFAULT_TREES = 10
# vgg16-fashion's head trains on at most this many catalog rows (a seeded sample past it):
# training is the build's costliest step per row, and past ~12k rows it no longer gains
# (docs/benchmarks.md, "A real catalog").
FASHION_TRAIN_ROWS = 12_000


@dataclass
class BuildOptions:
    """Everything that decides what a build contains (kept in engine-state.json)."""

    catalog: str = "fashion-mnist"
    catalog_path: str | None = None
    limit: int | None = 6000
    queries: int | None = 500
    variants: str = "auto"
    image_size: int = 64
    device: str = "auto"
    seed: int = 0
    batch_size: int = 64
    workers: int = 0
    allow_download: bool = False
    trees: int = DEFAULT_TREES
    search_k: int | None = None
    k: int = 20
    ranks: int = 1
    fashion_input: str = DEFAULT_FASHION_INPUT
    repeat: int = 1  # > 1: synthetic copies of each catalog item (engine.builder.catalog)
    shard_rows: int = SHARD_ROWS  # rows per feature part (formats.shards)
    train_rows: int = FASHION_TRAIN_ROWS  # vgg16-fashion trains on at most this many rows
    index: str = "auto"  # annoy, faiss, or auto: by catalog size (engine.builder.index)
    executor: str = "plain"  # plain, or ray: extraction on a Ray actor pool


@dataclass
class BuildState:
    """A build directory's bookkeeping, saved as engine-state.json."""

    options: dict
    variant_set: dict
    categories: list[str]
    pixel_hash: list[str]
    skipped: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    reports: dict = field(default_factory=dict)

    @property
    def build_options(self) -> BuildOptions:
        return BuildOptions(**self.options)


def save_state(out: Path, state: BuildState) -> None:
    """Write engine-state.json (renamed into place: workers may share a directory)."""
    tmp = out / f".{STATE_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(asdict(state), indent=1) + "\n")
    tmp.rename(out / STATE_FILE)


def load_state(out: Path) -> BuildState:
    """Read engine-state.json, or explain which stage creates it."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{out} is not an engine build directory (no {STATE_FILE}); "
                         "run `python -m engine extract --build DIR ...` or `build` first")
    return BuildState(**json.loads(path.read_text()))
