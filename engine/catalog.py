"""Load a clothing catalog (catalog items and queries) from one of three sources.

A `Catalog` behaves as a sequence of PIL images (already cropped to their bounding
box) whose rows line up with the metadata arrays: `image_id`, `category`, `label`,
`item_id`, `split` and `pixel_hash`. Unreadable images are found at load time and
dropped (listed in `skipped`), so every later stage sees aligned rows.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

SOURCES = ("fashion-mnist", "folder", "deepfashion")
DEFAULT_PATHS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_FILES = {
    "catalog": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "fm-train"),
    "query": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "fm-test"),
}
SPLITS = ("catalog", "query")
CONSUMER2SHOP_TYPES = {"1": "upper-body", "2": "lower-body", "3": "full-body"}


@dataclass
class Row:
    """One image before loading: where it is and what it is."""

    image_id: str
    category: str
    split: str
    item_id: str = ""
    path: Path | None = None
    bbox: tuple[int, int, int, int] | None = None
    pixels: np.ndarray | None = None  # in-memory sources (Fashion-MNIST)


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


def _open_row(row: Row) -> Image.Image:
    if row.pixels is not None:
        return Image.fromarray(row.pixels)
    with Image.open(row.path) as im:
        im.load()
        img = im.convert("L") if im.mode in ("L", "I;16", "1") else im.convert("RGB")
    if row.bbox is not None:
        img = _crop(img, row.bbox)
    return img


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
                 seed: int = 0) -> Catalog:
    """Load a catalog source, sample it (seeded, category-stratified) and check each image."""
    if source not in SOURCES:
        raise ValueError(f"unknown catalog source {source!r}; accepted: {', '.join(SOURCES)}")
    if path is None:
        if source not in DEFAULT_PATHS:
            raise ValueError(f"catalog source {source!r} needs a path (--catalog-path)")
        path = DEFAULT_PATHS[source]
    path = Path(path)
    if not path.exists():
        raise ValueError(f"catalog path does not exist: {path}")
    for name, n in (("limit", limit), ("queries", queries)):
        if n is not None and n < 1:
            raise ValueError(f"{name} must be at least 1, got {n}")
    reader = {"fashion-mnist": _read_fashion_mnist, "folder": _read_folder,
              "deepfashion": _read_deepfashion}[source]
    rows, categories, kind = reader(path)
    rows = _ensure_queries(rows, queries, seed)
    rows = (sample_split(rows, "catalog", limit, seed)
            + sample_split(rows, "query", queries, seed + 1))
    catalog = Catalog(rows=rows, categories=categories,
                      source={"catalog": source, "path": str(path), "layout": kind,
                              "limit": limit, "queries": queries, "seed": seed})
    _check_images(catalog)
    for split in SPLITS:
        if not np.any(catalog.split == split):
            raise ValueError(f"catalog source {source!r} at {path} gave no {split} images")
    logger.info("Loaded %s: %d catalog items, %d queries, %d skipped", source,
                len(catalog.catalog_indices), len(catalog.query_indices), len(catalog.skipped))
    return catalog


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


# --- Fashion-MNIST --------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped (or plain) IDX file into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {shape}, got {arr.size} values")
    return arr.reshape(shape)


def _read_fashion_mnist(root: Path) -> tuple[list[Row], list[str], str]:
    rows = []
    for split, (images_name, labels_name, prefix) in FASHION_MNIST_FILES.items():
        images = read_idx(_require(root / images_name))
        labels = read_idx(_require(root / labels_name))
        if len(images) != len(labels):
            raise ValueError(f"{root}: {images_name} has {len(images)} images but "
                             f"{labels_name} has {len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{root / labels_name}: label {labels.max()} is not 0-9")
        # Fashion-MNIST negated Zalando's product photos (white background -> black).
        # Restore the shop's polarity: voters see product shots, and ImageNet networks
        # get what they were trained on (+1 to +3 points of top-1 on the default build).
        rows.extend(Row(image_id=f"{prefix}-{i:06d}", category=FASHION_MNIST_CLASSES[lab],
                        split=split, pixels=255 - img)
                    for i, (img, lab) in enumerate(zip(images, labels, strict=True)))
    return rows, list(FASHION_MNIST_CLASSES), "idx"


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"missing catalog file: {path}")
    return path


# --- folder + catalog.csv ---------------------------------------------------------

def _read_folder(root: Path) -> tuple[list[Row], list[str], str]:
    csv_path = _require(root / "catalog.csv")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        missing = {"path", "category"} - columns
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
                             f"found {', '.join(sorted(columns)) or 'none'}")
        bbox_cols = {"x1", "y1", "x2", "y2"}
        if columns & bbox_cols and not bbox_cols <= columns:
            raise ValueError(f"{csv_path}: bbox needs all of x1,y1,x2,y2; found "
                             f"{', '.join(sorted(columns & bbox_cols))}")
        rows = [_folder_row(root, csv_path, n, rec, bbox_cols <= columns)
                for n, rec in enumerate(reader, start=2)]
    if not rows:
        raise ValueError(f"{csv_path} has no rows")
    return rows, sorted({r.category for r in rows}), "folder"


def _folder_row(root: Path, csv_path: Path, line: int, rec: dict, has_bbox: bool) -> Row:
    where = f"{csv_path}:{line}"
    if not rec.get("path") or not rec.get("category"):
        raise ValueError(f"{where}: empty path or category")
    split = (rec.get("split") or "catalog").strip().lower()
    if split not in SPLITS:
        raise ValueError(f"{where}: bad split {split!r}; accepted: {', '.join(SPLITS)}")
    bbox = None
    if has_bbox and any((rec.get(k) or "").strip() for k in ("x1", "y1", "x2", "y2")):
        try:
            bbox = tuple(int(float(rec[k])) for k in ("x1", "y1", "x2", "y2"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad bbox value ({exc})") from None
    rel = rec["path"].strip()
    return Row(image_id=f"img-{line - 1:06d}", category=rec["category"].strip(), split=split,
               item_id=(rec.get("item_id") or "").strip(), path=root / rel, bbox=bbox)


# --- DeepFashion -----------------------------------------------------------------

def read_deepfashion_list(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a DeepFashion list file: a count line, a header line, then rows."""
    lines = _require(path).read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a header line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}: first line should be a row count, got {lines[0]!r}") from None
    header = lines[1].split()
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if count != len(rows):
        logger.warning("%s: header says %d rows, found %d", path, count, len(rows))
    return header, rows


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / "Anno" / name, root / "Eval" / name):
        if candidate.is_file():
            return candidate
    raise ValueError(f"missing DeepFashion file: {name} (looked in {root}, {root}/Anno, "
                     f"{root}/Eval)")


def _image_root(root: Path) -> Path:
    return root / "Img" if (root / "Img").is_dir() and not (root / "img").is_dir() else root


def _read_deepfashion(root: Path) -> tuple[list[Row], list[str], str]:
    if (root / "Anno" / "list_category_img.txt").is_file() or \
            (root / "list_category_img.txt").is_file():
        return _read_deepfashion_category(root)
    try:
        _find(root, "list_bbox_consumer2shop.txt")
    except ValueError:
        raise ValueError(f"{root} is neither a DeepFashion Category and Attribute Prediction "
                         "layout (Anno/list_category_img.txt) nor a Consumer-to-shop layout "
                         "(list_bbox_consumer2shop.txt)") from None
    return _read_deepfashion_consumer2shop(root)


def _read_deepfashion_category(root: Path) -> tuple[list[Row], list[str], str]:
    _, cloth = read_deepfashion_list(_find(root, "list_category_cloth.txt"))
    names = [r[0] for r in cloth]
    _, cat_rows = read_deepfashion_list(_find(root, "list_category_img.txt"))
    _, bbox_rows = read_deepfashion_list(_find(root, "list_bbox.txt"))
    _, part_rows = read_deepfashion_list(_find(root, "list_eval_partition.txt"))
    bboxes = {r[0]: tuple(int(v) for v in r[1:5]) for r in bbox_rows}
    status = {r[0]: r[1] for r in part_rows}
    img_root = _image_root(root)
    rows = []
    for name, label in ((r[0], int(r[1])) for r in cat_rows):
        if not 1 <= label <= len(names):
            raise ValueError(f"list_category_img.txt: {name} has category {label}, "
                             f"outside 1..{len(names)}")
        if name not in status:
            continue
        # train and val build the catalog; test photos are the queries.
        split = "query" if status[name] == "test" else "catalog"
        rows.append(Row(image_id=f"df-{Path(name).with_suffix('').as_posix()}",
                        category=names[label - 1], split=split, path=img_root / name,
                        bbox=bboxes.get(name)))
    used = {r.category for r in rows}
    return rows, [n for n in names if n in used], "category-attribute"


def _read_deepfashion_consumer2shop(root: Path) -> tuple[list[Row], list[str], str]:
    header, bbox_rows = read_deepfashion_list(_find(root, "list_bbox_consumer2shop.txt"))
    _, part_rows = read_deepfashion_list(_find(root, "list_eval_partition.txt"))
    info = {r[0]: (r[1], r[2], tuple(int(v) for v in r[3:7])) for r in bbox_rows}
    img_root = _image_root(root)
    rows, seen = [], set()
    for consumer, shop, item, status in (r[:4] for r in part_rows):
        for name, want in ((shop, "1"), (consumer, "2")):
            if name in seen or name not in info:
                continue
            clothes_type, source_type, bbox = info[name]
            # Shop photos form the catalog; consumer photos from the test split are queries.
            if source_type != want or (want == "2" and status != "test"):
                continue
            seen.add(name)
            rows.append(Row(image_id=f"c2s-{Path(name).with_suffix('').as_posix()}",
                            category=_c2s_category(name, clothes_type),
                            split="catalog" if want == "1" else "query", item_id=item,
                            path=img_root / name, bbox=bbox))
    return rows, sorted({r.category for r in rows}), "consumer-to-shop"


def _c2s_category(name: str, clothes_type: str) -> str:
    """Name a consumer-to-shop category by its folder (img/TOPS/Summer_Wear/id_x/...)."""
    parts = Path(name).parts
    if len(parts) >= 5 and parts[0] == "img":
        return f"{parts[1]}/{parts[2]}"
    return CONSUMER2SHOP_TYPES.get(clothes_type, f"type-{clothes_type}")
