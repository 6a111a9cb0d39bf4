"""Annoy or faiss: each index kind built from a finished build's shards, at several sizes.

For each variant and each catalog size (the first N catalog rows of the build), builds
the index both ways in a fresh child process (engine.builder.index.build_index, as the
index stage does), answers the build's queries (raising search_k / nprobe as the pairs
stage does until top-1 agreement with exact search reaches 0.99, at most 4 times), and
reports build seconds, query milliseconds, the agreement reached and the child's peak
RSS. This is what chose ANNOY_MAX_ITEMS.

    python bench/index_choice.py --build /tmp/growth/build-0x1 --sizes 12000,24000,60000 \
        [--variants vgg16-fashion.fc6.l1,mobilenet_v2-imagenet.gap.l2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one(build: Path, slug: str, kind: str, n: int) -> dict:
    """Build and query one index; return its figures (runs in a child)."""
    from engine.builder.exact import agreement
    from engine.builder.index import build_index, open_index, setting
    from engine.builder.metric import MetricSpace
    from engine.builder.pairs import default_search_k, exact_check
    from engine.builder.variants import variants_of
    from engine.formats.builddir import load_features, open_build

    b = open_build(build)
    v = next(v for v in variants_of(b.state) if v.slug == slug)
    cat, qry = b.table.catalog_rows[:n], b.table.query_rows
    feats = load_features(build, v.feature_key)
    space = MetricSpace.fit(feats, v.metric, cat)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = build_index(Path(tmp) / "v", kind, v.metric,
                           lambda: space.parts(feats, cat),
                           dims=feats.shape[1], n_items=len(cat), trees=10, seed=0,
                           sample=lambda: space.vectors(feats[cat[:20_000]]))
        build_s = time.perf_counter() - t0
        index = open_index(Path(tmp).parent, info, v.metric,  # info["file"]: "<tmp>/v.*"
                           search_k=default_search_k(len(cat), 20, 10))
        queries = space.vectors(feats[qry])
        none = [set()] * len(qry)
        exact = exact_check(feats, space, cat, queries, none, 20, "cpu")(np.arange(len(qry)))
        for _ in range(5):
            t0 = time.perf_counter()
            found = index.search(queries, 20, item_rows=cat, exclude=none)
            query_ms = 1000 * (time.perf_counter() - t0) / len(qry)
            agree = agreement(found, exact)
            if agree["top1_agreement"] >= 0.99 or not index.escalate():
                break
    return {"variant": slug, "kind": kind, "items": n, "build_s": round(build_s, 1),
            "query_ms": round(query_ms, 2), "top1_agreement": agree["top1_agreement"],
            "setting": setting(index),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, required=True)
    p.add_argument("--sizes", default="12000,24000,60000")
    p.add_argument("--variants", default="vgg16-fashion.fc6.l1,mobilenet_v2-imagenet.gap.l2")
    p.add_argument("--out", type=Path, default=Path("bench-index-choice.json"))
    p.add_argument("--one", nargs=3, metavar=("SLUG", "KIND", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.build, args.one[0], args.one[1], int(args.one[2]))))
        return
    rows = []
    print("| variant | items | index | build | query | top-1 agreement | setting | peak RSS |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for slug in args.variants.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            for kind in ("annoy", "faiss"):
                out = subprocess.run([sys.executable, __file__, "--build", str(args.build),
                                      "--one", slug, kind, str(n)], check=True,
                                     capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows.append(r)
                print(f"| `{slug}` | {n:,} | {kind} | {r['build_s']} s | {r['query_ms']} ms | "
                      f"{r['top1_agreement']:.3f} | {r['setting']} | {r['peak_rss_mib']:,} MiB |",
                      flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
