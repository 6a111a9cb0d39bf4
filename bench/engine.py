"""Benchmark the engine: extraction images/s per network and size; exact vs Annoy search.

    .venv/bin/python bench/engine.py --images 2000 --sizes 64,128,224 --device auto \
        --out bench-engine.json

Images are the first N of Fashion-MNIST's test split. Extraction time excludes loading the
weights and one warm-up batch. The search part uses the vgg16-imagenet pool5 features of
those images at the smallest size: the first --queries rows query the rest.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.nets import networks  # noqa: E402
from engine.nets.features import (  # noqa: E402
    bf16_autocast,
    build_model,
    image_loader,
    prepare,
    resolve_device,
    run_model,
)

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
LAYERS = {"vgg16-imagenet": ["pool5"], "mobilenet_v2-imagenet": ["gap"]}


def fashion_images(n: int, root: Path) -> list[Image.Image]:
    """Return the first n Fashion-MNIST test images."""
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    if n > len(pixels):
        raise SystemExit(f"--images {n}: the test split has only {len(pixels)} images")
    return [Image.fromarray(p, "L") for p in pixels[:n]]


def bench_extraction(images, network: str, size: int, device: torch.device,
                     batch_size: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Time one network at one input size; return the row and the features."""
    start = time.perf_counter()
    model, source = build_model(network, LAYERS[network])
    model = prepare(model, device)
    load_s = time.perf_counter() - start
    warm = image_loader(images[:batch_size], size, batch_size, 0, device)
    run_model(model, warm, device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = run_model(model, image_loader(images, size, batch_size, 0, device), device,
                    progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {"network": network, "layer": LAYERS[network][0], "image_size": size,
           "images": len(images), "seconds": round(seconds, 3),
           "images_per_second": round(len(images) / seconds, 1),
           "load_seconds": round(load_s, 2), "weights": source.origin}
    return row, out


def bench_search(features: np.ndarray, n_queries: int, device: str, n_trees: int,
                 seed: int) -> list[dict]:
    """Time exact vs Annoy top-10 search per metric and measure their agreement."""
    from engine.builder.exact import agreement, exact_search
    from engine.builder.index import annoy_search, build_annoy
    from engine.builder.metric import metric_vectors
    from engine.builder.pairs import default_search_k

    query_rows = np.arange(n_queries)
    catalog_rows = np.arange(n_queries, len(features))
    exclude = [set() for _ in query_rows]
    rows = []
    for metric in ("l1", "l2", "cosine", "hamming"):
        vectors, _ = metric_vectors(features, metric, catalog_rows)
        start = time.perf_counter()
        index = build_annoy(vectors[catalog_rows], metric, n_trees=n_trees, seed=seed)
        build_s = time.perf_counter() - start
        search_k = default_search_k(len(catalog_rows), 10, n_trees)
        start = time.perf_counter()
        approx = annoy_search(index, vectors[query_rows], 10, search_k=search_k,
                              item_rows=catalog_rows, exclude=exclude)
        annoy_s = time.perf_counter() - start
        start = time.perf_counter()
        exact = exact_search(vectors[query_rows], vectors[catalog_rows], metric, 10,
                             item_rows=catalog_rows, exclude=exclude, device=device)
        exact_s = time.perf_counter() - start
        rows.append({"metric": metric, "catalog": len(catalog_rows), "queries": n_queries,
                     "dims": vectors.shape[1], "n_trees": n_trees, "search_k": search_k,
                     "annoy_build_s": round(build_s, 3),
                     "annoy_ms_per_query": round(1000 * annoy_s / n_queries, 3),
                     "exact_ms_per_query": round(1000 * exact_s / n_queries, 3),
                     **agreement(approx, exact)})
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    """Return rows as a markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sizes", default="64,128,224")
    parser.add_argument("--networks", default=",".join(LAYERS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-search", action="store_true")
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
        args.networks = args.networks.split(",")
        resolve_device(args.device)
        for network in args.networks:
            if network not in LAYERS:
                raise ValueError(f"unknown network {network!r}; accepted: {', '.join(LAYERS)}")
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 < args.queries < args.images:
        parser.error("--queries must be between 1 and --images - 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    images = fashion_images(args.images, args.fashion_mnist)
    env = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "bf16_autocast": bf16_autocast(device)}
    extraction, search_features = [], None
    for network in args.networks:
        for size in args.sizes:
            row, out = bench_extraction(images, network, size, device, args.batch_size)
            extraction.append(row)
            print(f"{network} @ {size}px: {row['images_per_second']} images/s", flush=True)
            if network == "vgg16-imagenet" and size == min(args.sizes):
                search_features = out["pool5"]
    search = []
    if not args.no_search and search_features is not None:
        search = bench_search(search_features, args.queries, args.device, args.trees, 0)
    print("\n## Extraction\n")
    print(markdown(extraction, ["network", "layer", "image_size", "images",
                                "images_per_second", "weights"]))
    if search:
        print(f"\n## Exact vs Annoy (vgg16-imagenet pool5 @ {min(args.sizes)}px)\n")
        print(markdown(search, ["metric", "catalog", "queries", "dims", "annoy_ms_per_query",
                                "exact_ms_per_query", "top1_agreement", "recall_at_10"]))
    print(f"\n{json.dumps(env)}")
    if args.out:
        args.out.write_text(json.dumps({"env": env, "extraction": extraction, "search": search,
                                        "vgg16_weights": networks.resolve_weights(
                                            "vgg16-imagenet").origin}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
