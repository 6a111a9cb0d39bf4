"""Load a clothing catalog (catalog items and queries) from one of three sources.

A `Catalog` behaves as a sequence of PIL images (already cropped to their bounding
box) whose rows line up with the metadata arrays: `image_id`, `category`, `label`,
`item_id`, `split` and `pixel_hash`. Unreadable images are found at load time and
dropped (listed in `skipped`), so every later stage sees aligned rows.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from engine.builder.catalog_sources import (
    SPLITS,
    Row,
    read_deepfashion,
    read_fashion_mnist,
    read_folder,
)

logger = logging.getLogger(__name__)

SOURCES = ("fashion-mnist", "folder", "deepfashion")
DEFAULT_PATHS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}


UNREADABLE_ALLOWED = 10  # unreadable images skipped (and listed) before a build refuses
UNREADABLE_SHARE = 0.01


@dataclass
class Catalog:
    """Catalog items and queries as a sequence of PIL images with aligned metadata."""

    rows: list[Row]
    categories: list[str]
    source: dict
    pixel_hash: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Image.Image:
        return _open_row(self.rows[i])

    @property
    def image_id(self) -> list[str]:
        return [r.image_id for r in self.rows]

    @property
    def category(self) -> list[str]:
        return [r.category for r in self.rows]

    @property
    def label(self) -> np.ndarray:
        codes = {c: i for i, c in enumerate(self.categories)}
        return np.array([codes[r.category] for r in self.rows], dtype=np.int64)

    @property
    def item_id(self) -> list[str]:
        return [r.item_id for r in self.rows]

    @property
    def split(self) -> np.ndarray:
        return np.array([r.split for r in self.rows])

    @property
    def catalog_indices(self) -> np.ndarray:
        return np.flatnonzero(self.split == "catalog")

    @property
    def query_indices(self) -> np.ndarray:
        return np.flatnonzero(self.split == "query")

    @property
    def has_item_ids(self) -> bool:
        return any(r.item_id for r in self.rows)


class RowsView:
    """Some rows of a catalog, as a sequence of images."""

    def __init__(self, images, rows: np.ndarray):
        self.images, self.rows = images, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.images[int(self.rows[i])]


def _open_row(row: Row) -> Image.Image:
    if row.pixels is not None:
        img = Image.fromarray(row.pixels)
    else:
        with Image.open(row.path) as im:
            im.load()
            img = im.convert("L") if im.mode in ("L", "I;16", "1") else im.convert("RGB")
        if row.bbox is not None:
            img = _crop(img, row.bbox)
    return synthetic_copy(img, row.copy) if row.copy else img


def synthetic_copy(img: Image.Image, copy: int) -> Image.Image:
    """Return the copy-th synthetic copy of an image: mirrored for odd copies, and from
    copy 2 on shifted by up to 2 px each way on the image's own corner colour (copy 1 is
    the mirror alone; copies 0 to 49 are all different, later ones cycle)."""
    if copy % 2:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    step = copy // 2 % 25
    dx, dy = (step % 5 + 2) % 5 - 2, (step // 5 + 2) % 5 - 2  # step 0: no shift
    out = Image.new(img.mode, img.size, img.getpixel((0, 0)))
    out.paste(img, (dx, dy))
    return out


def repeat_catalog(rows: list[Row], repeat: int) -> list[Row]:
    """Return the rows with repeat - 1 synthetic copies of every catalog item (new ids,
    no item id), for measuring a catalog bigger than the source; queries are not copied."""
    copies = [replace(r, image_id=f"{r.image_id}~{k}", item_id="", copy=k)
              for k in range(1, repeat) for r in rows if r.split == "catalog"]
    return rows + copies


def _crop(img: Image.Image, bbox: tuple[int, int, int, int]) -> Image.Image:
    w, h = img.size
    x1, y1, x2, y2 = bbox
    x1, y1 = max(0, min(x1, w - 1)), max(0, min(y1, h - 1))
    x2, y2 = max(x1 + 1, min(x2, w)), max(y1 + 1, min(y2, h))
    return img.crop((x1, y1, x2, y2))


def hash_pixels(img: Image.Image) -> str:
    """Return the sha256 of an image's decoded pixels (mode and size included)."""
    h = hashlib.sha256(f"{img.mode}{img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


# --- public entry point -------------------------------------------------------------

def load_catalog(source: str = "fashion-mnist", path: str | Path | None = None, *,
                 limit: int | None = None, queries: int | None = None,
                 seed: int = 0, repeat: int = 1) -> Catalog:
    """Load a catalog source, sample it (seeded, category-stratified) and check each image;
    `repeat` > 1 adds synthetic copies of the catalog items (repeat_catalog)."""
    path = _check_arguments(source, path, limit=limit, queries=queries, repeat=repeat)
    reader = {"fashion-mnist": read_fashion_mnist, "folder": read_folder,
              "deepfashion": read_deepfashion}[source]
    rows, categories, kind = reader(path)
    rows = _ensure_queries(rows, queries, seed)
    rows = (repeat_catalog(sample_split(rows, "catalog", limit, seed), repeat)
            + sample_split(rows, "query", queries, seed + 1))
    catalog = Catalog(rows=rows, categories=categories,
                      source={"catalog": source, "path": str(path), "layout": kind,
                              "limit": limit, "queries": queries, "seed": seed,
                              "repeat": repeat})
    _check_images(catalog)
    for split in SPLITS:
        if not np.any(catalog.split == split):
            raise ValueError(f"catalog source {source!r} at {path} gave no {split} images")
    logger.info("Loaded %s: %d catalog items, %d queries, %d skipped", source,
                len(catalog.catalog_indices), len(catalog.query_indices), len(catalog.skipped))
    return catalog


def _check_arguments(source: str, path, *, limit, queries, repeat) -> Path:
    """Return the source's path, or raise ValueError naming the bad argument."""
    if source not in SOURCES:
        raise ValueError(f"unknown catalog source {source!r}; accepted: {', '.join(SOURCES)}")
    if path is None:
        if source not in DEFAULT_PATHS:
            raise ValueError(f"catalog source {source!r} needs a path (--catalog-path)")
        path = DEFAULT_PATHS[source]
    path = Path(path)
    if not path.exists():
        raise ValueError(f"catalog path does not exist: {path}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1, got {repeat!r}")
    for name, n in (("limit", limit), ("queries", queries)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be at least 1, got {n}")
    return path


def _ensure_queries(rows: list[Row], queries: int | None, seed: int) -> list[Row]:
    """Hold out queries from the catalog rows when the source has no query split."""
    if any(r.split == "query" for r in rows):
        return rows
    n = queries or max(1, len(rows) // 10)
    held = {id(r) for r in sample_split(rows, "catalog", min(n, max(len(rows) - 1, 0)), seed + 2)}
    logger.info("Source has no query split: holding out %d catalog rows as queries", len(held))
    for r in rows:
        if id(r) in held:
            r.split = "query"
    return rows


def sample_split(rows: list[Row], split: str, n: int | None, seed: int) -> list[Row]:
    """Return a seeded, category-stratified sample of n rows of a split (all if n is None)."""
    pool = [r for r in rows if r.split == split]
    if n is None or n >= len(pool):
        return pool
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[int]] = {}
    for i, r in enumerate(pool):
        by_cat.setdefault(r.category, []).append(i)
    cats = sorted(by_cat)
    sizes = np.array([len(by_cat[c]) for c in cats], dtype=float)
    quota = sizes * n / sizes.sum()
    take = np.floor(quota).astype(int)
    # Largest remainders get the leftover slots; ties broken by the seeded generator.
    order = np.lexsort((rng.random(len(cats)), -(quota - take)))
    for j in order[: n - take.sum()]:
        take[j] += 1
    chosen = []
    for c, k in zip(cats, take, strict=True):
        idx = np.array(by_cat[c])
        chosen.extend(rng.permutation(idx)[:k].tolist())
    return [pool[i] for i in sorted(chosen)]


def _check_images(catalog: Catalog) -> None:
    """Decode every image once: hash its pixels, drop unreadable ones with a warning."""
    kept, hashes = [], []
    for row in catalog.rows:
        try:
            img = _open_row(row)
        except (OSError, ValueError, SyntaxError) as exc:
            logger.warning("Skipping unreadable image %s (%s): %s", row.image_id, row.path, exc)
            catalog.skipped.append((row.image_id, f"{type(exc).__name__}: {exc}"))
            continue
        kept.append(row)
        hashes.append(hash_pixels(img))
    catalog.rows, catalog.pixel_hash = kept, hashes
    _refuse_many_unreadable(catalog.skipped, len(kept) + len(catalog.skipped))


def _refuse_many_unreadable(skipped: list[tuple[str, str]], rows: int) -> None:
    """A few unreadable images are skipped (and listed); more than UNREADABLE_ALLOWED
    (or UNREADABLE_SHARE of the rows, if larger) means a wrong folder or a broken copy:
    a clear error before anything is written."""
    if len(skipped) <= max(UNREADABLE_ALLOWED, UNREADABLE_SHARE * rows):
        return
    shown = "; ".join(f"{image_id}: {why}" for image_id, why in skipped[:3])
    raise ValueError(f"{len(skipped)} of {rows} catalog images could not be read (first: "
                     f"{shown}); fix or remove them and run the build again (up to "
                     f"{UNREADABLE_ALLOWED} or {UNREADABLE_SHARE:.0%} are skipped and listed)")
