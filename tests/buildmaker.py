"""Write small but real build directories (docs/build-format.md) for web-app tests.

The web app must never import the engine, so its tests get builds from here:
real PNG thumbnails, a manifest, catalog.csv, pairs.jsonl and eval.json.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

DEFAULT_VARIANTS = [
    ("vgg16-imagenet.pool5.l1", "VGG16 ImageNet, pool5, L1", "vgg16-imagenet", "pool5", "l1"),
    ("vgg16-imagenet.pool5.hamming", "VGG16 ImageNet, pool5, Hamming",
     "vgg16-imagenet", "pool5", "hamming"),
    ("mobilenet_v2-imagenet.gap.l2", "MobileNetV2 ImageNet, GAP, L2",
     "mobilenet_v2-imagenet", "gap", "l2"),
    ("vgg16-fashion.fc6.l1", "VGG16 fine-tuned on clothing, FC6, L1", "vgg16-fashion", "fc6", "l1"),
]


def _png(seed: int) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (256, 256), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(200), rng.randrange(200)
        draw.rectangle([x0, y0, x0 + 40, y0 + 40], fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_build(out: Path, *, n_queries: int = 12, n_catalog: int = 40,
                variants=DEFAULT_VARIANTS, seed: int = 0, build_tag: str = "a") -> Path:
    """Write a build with every variant plus the random control; return its path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows, thumbs = [], {}
    for split, n in (("catalog", n_catalog), ("query", n_queries)):
        for i in range(n):
            image_id = f"t-{split}-{i:05d}"
            data = _png(zlib.crc32(f"{seed}-{split}-{i}".encode()))
            name = hashlib.sha256(data).hexdigest() + ".png"
            (out / "images" / name).write_bytes(data)
            thumbs[image_id] = name
            rows.append({"image_id": image_id, "category": CATEGORIES[i % len(CATEGORIES)],
                         "item_id": "", "split": split, "thumbnail": name})
    with open(out / "catalog.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image_id", "category", "item_id", "split", "thumbnail"])
        w.writeheader()
        w.writerows(rows)
    catalog_ids = [r["image_id"] for r in rows if r["split"] == "catalog"]
    query_ids = [r["image_id"] for r in rows if r["split"] == "query"]
    manifest_variants = [
        {"slug": s, "name": n, "network": net, "layer": layer, "metric": m, "control": False}
        for s, n, net, layer, m in variants
    ] + [{"slug": "random", "name": "Random catalog item (control)", "network": None,
          "layer": None, "metric": None, "control": True}]
    pairs = []
    for v in manifest_variants:
        for q in query_ids:
            pairs.append({"query_id": q, "match_id": rng.choice(catalog_ids), "variant": v["slug"],
                          "rank": 1, "distance": None if v["control"] else round(rng.random(), 4)})
    with open(out / "pairs.jsonl", "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    eval_ = {"variants": {v["slug"]: {"top1_accuracy": 0.1 if v["control"] else
                                      round(0.5 + 0.1 * k, 3)}
                          for k, v in enumerate(manifest_variants)}}
    (out / "eval.json").write_text(json.dumps(eval_, indent=2))
    manifest = {
        "format_version": 1, "engine_version": "test",
        "created_at": "2026-11-23T00:00:00+00:00",
        "build_id": hashlib.sha256(f"{build_tag}-{seed}-{len(pairs)}".encode()).hexdigest()[:16],
        "source": {"catalog": "synthetic", "limit": n_catalog, "queries": n_queries, "seed": seed},
        "counts": {"catalog": n_catalog, "queries": n_queries, "skipped_images": 0,
                   "pairs": len(pairs)},
        "categories": CATEGORIES,
        "variants": manifest_variants,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
