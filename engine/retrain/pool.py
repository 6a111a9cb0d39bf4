"""A fresh query pool for a build: query images nobody has voted on, ready to search.

Retraining scores its challenger on queries its training votes never touched. The
pool is drawn (seeded, category-stratified, like the build's own queries) from the
catalog source's query images that are neither among the build's queries nor in any
vote. For every pool query it holds the features of every network/layer the build
extracted (pretrained networks and the build's own vgg16-fashion checkpoint, never
retrained), the white-box families (engine.builder.whitebox) and each variant's top-K catalog
candidates from its Annoy index (checked against exact search, as the build does).

A pool is a pure function of the build, the excluded queries, its size and its seed,
so it is cached under the build directory (`pools/<key>/`, engine only) and a second
retrain from the same build reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.builder.catalog import hash_pixels, load_catalog, sample_split
from engine.builder.index import open_index
from engine.builder.metric import MetricSpace
from engine.builder.pairs import (
    default_search_k,
    duplicate_exclusions,
    exact_check,
    search_variant,
)
from engine.builder.variants import variants_of
from engine.builder.whitebox import FAMILIES, KEY_PREFIX, whitebox_features
from engine.formats.builddir import OpenBuild, feature_path

logger = logging.getLogger(__name__)

CANDIDATES = 50
POOL_FORMAT = 2


@dataclass
class Pool:
    """The fresh queries and what retraining needs of them and of the build's rows."""

    key: str
    image_id: list[str]
    category: list[str]
    item_id: list[str]
    pixel_hash: list[str]
    features: dict[str, np.ndarray]  # feature key -> (P, d) rows of the pool queries
    whitebox: dict[str, np.ndarray]  # family -> (N + P, d): the build's rows, then the pool's
    candidates: dict[str, tuple[np.ndarray, np.ndarray]]  # slug -> (P, K) rows, distances
    reports: dict

    def __len__(self) -> int:
        return len(self.image_id)


def source_catalog(build: OpenBuild):
    """Load the build's catalog source with every query image, checking the catalog rows."""
    o = build.options
    catalog = load_catalog(o.catalog, o.catalog_path, limit=o.limit, queries=None, seed=o.seed,
                           repeat=o.repeat)
    built = [build.table.image_id[i] for i in build.table.catalog_rows]
    if [catalog.image_id[i] for i in catalog.catalog_indices] != built:
        raise ValueError(f"{build.path}: the catalog source no longer gives this build's "
                         "catalog; a fresh query pool cannot be drawn")
    return catalog


def pool_key(build_id: str, excluded: set[str], n: int, seed: int) -> str:
    # The white-box families are part of the key: a pool made before a family was added
    # lacks it.
    digest = hashlib.sha256(json.dumps([POOL_FORMAT, build_id, sorted(excluded), n, seed,
                                        FAMILIES]).encode()).hexdigest()
    return digest[:16]


def choose_queries(catalog, excluded: set[str], n: int, seed: int) -> list[int]:
    """Return catalog indices of n fresh query rows (seeded, category-stratified)."""
    rows = [catalog.rows[i] for i in catalog.query_indices
            if catalog.rows[i].image_id not in excluded]
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} query images are left that no build query or vote "
                         f"used; --queries {n} is too many")
    chosen = {r.image_id for r in sample_split(rows, "query", n, seed + 7)}
    return [i for i in catalog.query_indices if catalog.rows[i].image_id in chosen]


def _needed(keys: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in keys:
        network, layer = key.split(".", 1)
        out.setdefault(network, []).append(layer)
    return out


def _embed(build: OpenBuild, images, keys: list[str]) -> dict[str, np.ndarray]:
    from engine.builder.variant_features import embed_with_checkpoint

    o = build.options
    feats = embed_with_checkpoint(images, _needed(keys), checkpoint_dir=build.path / "checkpoints",
                                  image_size=o.image_size, device=o.device,
                                  batch_size=o.batch_size, allow_download=o.allow_download)
    return {f"{n}.{layer}": np.asarray(v, np.float16) for (n, layer), v in feats.items()}


def combined_features(build: OpenBuild, key: str, pool_rows: np.ndarray) -> np.ndarray:
    """Return the build's rows of one feature key followed by the pool's."""
    return np.concatenate([np.asarray(build.features(key)), pool_rows])


def search_pool(build: OpenBuild, features: dict[str, np.ndarray], pixel_hash: list[str]
                ) -> tuple[dict, dict]:
    """Return each indexed variant's top-K candidates for the pool queries, and reports."""
    table, o = build.table, build.options
    n_build, n_pool = len(table.rows), len(pixel_hash)
    pool_rows = np.arange(n_build, n_build + n_pool)
    exclude = duplicate_exclusions(table.pixel_hash + pixel_hash, pool_rows, table.catalog_rows)
    k = min(CANDIDATES, len(table.catalog_rows))
    search_k = o.search_k or default_search_k(len(table.catalog_rows), k, o.trees)
    candidates, reports = {}, {}
    cat = table.catalog_rows
    for v in variants_of(build.state):
        catalog = build.features(v.feature_key)
        space = MetricSpace.fit(catalog, v.metric, cat)
        queries = space.vectors(features[v.feature_key])
        index = open_index(build.path, build.state.reports["index"][v.slug], v.metric,
                           search_k=search_k)
        result = search_variant(v.slug, index, queries, item_rows=cat, exclude=exclude, k=k,
                                seed=o.seed, exact=exact_check(catalog, space, cat, queries,
                                                               exclude, k, o.device))
        candidates[v.slug] = (result.found.idx, result.found.dist)
        reports[v.slug] = result.report
    return candidates, reports


def _save(path: Path, pool: Pool) -> None:
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format": POOL_FORMAT, "key": pool.key, "image_id": pool.image_id,
            "category": pool.category, "item_id": pool.item_id,
            "pixel_hash": pool.pixel_hash, "reports": pool.reports}
    np.savez(path / "arrays.npz",
             **{f"features/{k}": v for k, v in pool.features.items()},
             **{f"whitebox/{k}": v for k, v in pool.whitebox.items()},
             **{f"idx/{k}": v[0] for k, v in pool.candidates.items()},
             **{f"dist/{k}": v[1] for k, v in pool.candidates.items()})
    (path / "pool.json").write_text(json.dumps(meta) + "\n")  # last: marks the pool complete


def _load(path: Path) -> Pool | None:
    if not (path / "pool.json").is_file():
        return None
    meta = json.loads((path / "pool.json").read_text())
    arrays = np.load(path / "arrays.npz")

    def group(prefix):
        return {k.split("/", 1)[1]: arrays[k] for k in arrays.files if k.startswith(prefix)}

    idx, dist = group("idx/"), group("dist/")
    return Pool(meta["key"], meta["image_id"], meta["category"], meta["item_id"],
                meta["pixel_hash"], group("features/"), group("whitebox/"),
                {s: (idx[s], dist[s]) for s in idx}, meta["reports"])


def build_whitebox(build: OpenBuild, catalog, pool_indices: list[int]) -> dict[str, np.ndarray]:
    """Return white-box families for the build's rows then the pool's (cached per build)."""
    cache = {f: feature_path(build.path, KEY_PREFIX + f) for f in FAMILIES}
    if all(p.is_file() for p in cache.values()):
        own = {f: np.load(p) for f, p in cache.items()}
    else:
        by_id = {image_id: i for i, image_id in enumerate(catalog.image_id)}
        rows = [by_id[image_id] for image_id in build.table.image_id]
        own = whitebox_features(catalog[i] for i in rows)
        for f, p in cache.items():
            tmp = p.with_suffix(".tmp.npy")
            np.save(tmp, own[f])
            tmp.replace(p)
    pool = whitebox_features(catalog[i] for i in pool_indices)
    return {f: np.concatenate([own[f], pool[f]]).astype(np.float32) for f in FAMILIES}


def fresh_pool(build: OpenBuild, excluded: set[str], n: int, seed: int) -> Pool:
    """Return the build's fresh query pool (made once, then read from its cache)."""
    queries = {build.table.image_id[i] for i in build.table.query_rows}
    excluded = set(excluded) | queries
    key = pool_key(build.build_id, excluded, n, seed)
    cache = build.path / "pools" / key
    pool = _load(cache)
    if pool is not None:
        return pool
    catalog = source_catalog(build)
    chosen = choose_queries(catalog, excluded, n, seed)
    images = [catalog[i] for i in chosen]
    logger.info("Fresh pool %s: %d queries; embedding them", key, len(chosen))
    features = _embed(build, images, build.feature_keys)
    pixel_hash = [hash_pixels(img) for img in images]
    candidates, reports = search_pool(build, features, pixel_hash)
    pool = Pool(key, [catalog.rows[i].image_id for i in chosen],
                [catalog.rows[i].category for i in chosen],
                [catalog.rows[i].item_id for i in chosen], pixel_hash, features,
                build_whitebox(build, catalog, chosen), candidates, {"search": reports})
    _save(cache, pool)
    return pool
