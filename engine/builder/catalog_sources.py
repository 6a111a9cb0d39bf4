"""The catalog sources' readers: Fashion-MNIST's IDX files, a folder with a CSV, and
DeepFashion's list files. Each returns (rows, categories, layout); engine.builder.catalog
samples and checks them."""

from __future__ import annotations

import csv
import gzip
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

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
    copy: int = 0  # > 0: the copy-th synthetic copy of the image (engine.builder.catalog)


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


def read_fashion_mnist(root: Path) -> tuple[list[Row], list[str], str]:
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

def read_folder(root: Path) -> tuple[list[Row], list[str], str]:
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


def read_deepfashion(root: Path) -> tuple[list[Row], list[str], str]:
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
