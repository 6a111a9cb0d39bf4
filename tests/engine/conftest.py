"""Fixtures for engine tests: tiny catalogs written in each source's exact format.

Fixtures from the catalog/index/pairs side are prefixed `engine_`.
"""

from __future__ import annotations

import csv
import gzip
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FM_CLASSES = 10


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def engine_class_image(label: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """Return a grey image whose bright band depends on its class, plus noise."""
    img = rng.integers(0, 40, (size, size)).astype(np.uint8)
    row = (label * size) // FM_CLASSES
    img[row: row + max(2, size // FM_CLASSES), :] = 200 + label * 5
    return img


@pytest.fixture
def engine_fmnist_dir(tmp_path: Path) -> Path:
    """Write Fashion-MNIST-format gzipped IDX files: 60 train (6/class), 20 test images.

    Test image 0 is a byte-identical copy of train image 0, as in the real set.
    """
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    first = None
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % FM_CLASSES
        images = np.stack([engine_class_image(int(lab), rng) for lab in labels])
        if first is None:
            first = images[0].copy()
        else:
            images[0] = first  # label 0 in both splits
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
    return root


def _save_rgb(path: Path, color: tuple[int, int, int], size=(60, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (250, 250, 250))
    img.paste(color, (10, 5, 50, 35))
    img.save(path)


@pytest.fixture
def engine_folder_dir(tmp_path: Path) -> Path:
    """Write a folder source: 12 images, catalog.csv with bbox, item ids, splits, one bad file."""
    root = tmp_path / "folder"
    colors = {"shirt": (200, 30, 30), "shoe": (30, 200, 30), "bag": (30, 30, 200)}
    rows = []
    for i in range(12):
        cat = list(colors)[i % 3]
        path = f"imgs/{cat}_{i}.png"
        _save_rgb(root / path, colors[cat])
        rows.append({"path": path, "category": cat, "item_id": f"item{i % 6}",
                     "x1": 10, "y1": 5, "x2": 50, "y2": 35,
                     "split": "query" if i >= 9 else "catalog"})
    (root / "imgs" / "broken.png").write_bytes(b"this is not an image")
    rows.append({"path": "imgs/broken.png", "category": "bag", "item_id": "", "x1": "",
                 "y1": "", "x2": "", "y2": "", "split": "catalog"})
    with open(root / "catalog.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _deepfashion_list(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{len(rows)}\n{header}\n" + "".join(f"{r}\n" for r in rows))


@pytest.fixture
def engine_deepfashion_category_dir(tmp_path: Path) -> Path:
    """Write a DeepFashion Category and Attribute Prediction layout with 9 images."""
    root = tmp_path / "deepfashion"
    _deepfashion_list(root / "Anno" / "list_category_cloth.txt", "category_name  category_type",
                      ["Anorak                       1", "Blazer                       1",
                       "Jeans                        2", "Dress                        3"])
    names, cats, bboxes, parts = [], [], [], []
    for i in range(9):
        label = (i % 3) + 1 if i % 3 != 2 else 4  # Anorak, Blazer, Dress (Jeans unused)
        name = f"img/Folder_{label}/img_{i:08d}.jpg"
        _save_rgb(root / "Img" / name, (40 * label, 80, 120), size=(300, 200))
        names.append(name)
        cats.append(f"{name}                        {label}")
        bboxes.append(f"{name}                        072 019 232 173")
        parts.append(f"{name}                        {('train', 'val', 'test')[i // 3]}")
    _deepfashion_list(root / "Anno" / "list_category_img.txt", "image_name  category_label", cats)
    _deepfashion_list(root / "Anno" / "list_bbox.txt", "image_name  x_1  y_1  x_2  y_2", bboxes)
    _deepfashion_list(root / "Eval" / "list_eval_partition.txt",
                      "image_name  evaluation_status", parts)
    return root


@pytest.fixture
def engine_deepfashion_c2s_dir(tmp_path: Path) -> Path:
    """Write a DeepFashion Consumer-to-shop layout: 4 items, shop and consumer photos."""
    root = tmp_path / "c2s"
    bbox_rows, part_rows = [], []
    folders = ["TOPS/Summer_Wear", "TROUSERS/Leggings", "TOPS/Summer_Wear", "CLOTHING/Dress"]
    for item in range(4):
        base = f"img/{folders[item]}/id_{item:08d}"
        shop, consumer = f"{base}/shop_01.jpg", f"{base}/comsumer_01.jpg"
        for name in (shop, consumer):
            _save_rgb(root / "Img" / name, (50 * item, 100, 100), size=(300, 300))
        clothes_type = 2 if "TROUSERS" in base else 1
        bbox_rows.append(f"{shop}  {clothes_type}  1  010 020 210 260")
        bbox_rows.append(f"{consumer}  {clothes_type}  2  030 040 230 280")
        status = "train" if item == 0 else "test"
        part_rows.append(f"{consumer} {shop} id_{item:08d} {status}")
    _deepfashion_list(root / "Anno" / "list_bbox_consumer2shop.txt",
                      "image_name  clothes_type  source_type  x_1  y_1  x_2  y_2", bbox_rows)
    _deepfashion_list(root / "Eval" / "list_eval_partition.txt",
                      "image_pair_name_1  image_pair_name_2  item_id  evaluation_status",
                      part_rows)
    return root


DIMS = {"pool5": 512, "gap": 1280, "fc6": 4096, "fc7": 4096, "conv4": 256, "conv": 128}


def _projection(pixels: np.ndarray, seed: int, dims: int) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((pixels.shape[1], dims)).astype(np.float32)
    return np.maximum(pixels @ (w / np.sqrt(pixels.shape[1])) - 0.5, 0).astype(np.float16)


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(images[i].convert("L").resize((28, 28)), np.float32).ravel()
                     for i in range(len(images))]) / 255


def engine_fake_module(calls: list) -> types.ModuleType:
    """Stand in for engine.builder.variant_features (the torch side of the features stage):
    ReLU random projections of pixels, and a "head" that projects the conv maps."""
    fake = types.ModuleType("engine.builder.variant_features")

    def weights_origin(network, allow_download=False):
        return {"origin": "fake", "preprocessing": "fake", "reason": "test projections"}

    def pass_batches(images, network, taps, *, batch_size, **kwargs):
        calls.append(("pass", network, sorted(taps), len(images)))
        for start in range(0, len(images), batch_size):
            pixels = _pixels([images[i] for i in range(start, min(start + batch_size,
                                                                    len(images)))])
            yield {tap: _projection(pixels, len(network) * 100 + DIMS[tap], DIMS[tap])
                   for tap in taps}

    def load_fashion(checkpoint, fingerprint):
        return None

    def train_fashion(conv, labels, categories, *, fashion_input, checkpoint, **kwargs):
        calls.append(("train", fashion_input, len(conv)))
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"fake head")
        return "head", {"fake": True, "n_train": len(conv), "input": fashion_input}

    def fashion_batches(head, conv_parts, layers, *, device):
        for _, conv in conv_parts:
            conv = np.asarray(conv, np.float32)
            yield {layer: _projection(conv, DIMS[layer], DIMS[layer]) for layer in layers}

    for f in (weights_origin, pass_batches, load_fashion, train_fashion, fashion_batches):
        setattr(fake, f.__name__, f)
    fake.calls = calls
    return fake


@pytest.fixture
def engine_fake_features(monkeypatch):
    """Replace feature extraction and training with fast projections (pipeline tests only);
    `.calls` records each network pass and each training."""
    fake = engine_fake_module([])
    monkeypatch.setitem(sys.modules, "engine.builder.variant_features", fake)
    monkeypatch.setattr("engine.builder.variant_features", fake, raising=False)
    return fake
