"""Run the engine's stages and write the build directory (docs/build-format.md).

`build()` runs every stage into a temporary directory next to the output and renames
it into place at the end, so a crashed build never leaves a directory that looks
complete. The single-stage functions (`extract`, `train`, `index`, `pairs`,
`evaluate`) work in place on a build directory and chain through its files; the
engine's own bookkeeping (options, variant set, pixel hashes, timings) lives in
`engine-state.json`.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from engine import __version__
from engine.catalog import Catalog, load_catalog
from engine.evaluate import evaluate_variants, tsne_plot, write_reports
from engine.index import DEFAULT_TREES, build_annoy, load_annoy, metric_vectors
from engine.pairs import (
    default_search_k,
    duplicate_exclusions,
    load_neighbours,
    pair_records,
    random_control,
    save_neighbours,
    search_variant,
    write_pairs,
)
from engine.variants import DEFAULT_FASHION_INPUT, RANDOM, Variant, VariantSet, choose_variant_set

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_FILE = "engine-state.json"
CATALOG_COLUMNS = ["image_id", "category", "item_id", "split", "thumbnail"]
FASHION_NETWORKS = ("vgg16-fashion",)
THUMB_MIN, THUMB_MAX = 256, 512


@dataclass
class BuildOptions:
    """Everything that decides what a build contains."""

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

    def variants(self) -> list[Variant]:
        return [Variant(v["network"], v["layer"], v["metric"], label=v.get("label"))
                for v in self.variant_set["variants"]]


# --- state and files --------------------------------------------------------------

def save_state(out: Path, state: BuildState) -> None:
    """Write engine-state.json."""
    (out / STATE_FILE).write_text(json.dumps(asdict(state), indent=1) + "\n")


def load_state(out: Path) -> BuildState:
    """Read engine-state.json, or explain which stage creates it."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{out} is not an engine build directory (no {STATE_FILE}); "
                         "run `python -m engine extract --build DIR ...` or `build` first")
    return BuildState(**json.loads(path.read_text()))


@contextmanager
def timed(state: BuildState, stage: str):
    """Record a stage's wall time in the state."""
    t0 = time.perf_counter()
    yield
    state.timings[stage] = round(time.perf_counter() - t0, 2)
    logger.info("Stage %s took %.1f s", stage, state.timings[stage])


def read_table(out: Path) -> list[dict]:
    """Read catalog.csv."""
    with open(out / "catalog.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_table(out: Path, rows: list[dict]) -> None:
    """Write catalog.csv with the documented columns."""
    with open(out / "catalog.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CATALOG_COLUMNS)
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in CATALOG_COLUMNS} for r in rows)


def feature_path(out: Path, key: str) -> Path:
    return out / "features" / f"{key}.npy"


class Table:
    """The catalog as later stages see it: catalog.csv plus the state."""

    def __init__(self, out: Path, state: BuildState):
        self.rows = read_table(out)
        codes = {c: i for i, c in enumerate(state.categories)}
        self.image_id = [r["image_id"] for r in self.rows]
        self.item_id = [r["item_id"] for r in self.rows]
        self.labels = np.array([codes[r["category"]] for r in self.rows], dtype=np.int64)
        split = np.array([r["split"] for r in self.rows])
        self.catalog_rows = np.flatnonzero(split == "catalog")
        self.query_rows = np.flatnonzero(split == "query")
        self.pixel_hash = state.pixel_hash


# --- stages -----------------------------------------------------------------------

def init_build(out: Path, opts: BuildOptions) -> tuple[Catalog, BuildState]:
    """Load the catalog, choose the variant set, write catalog.csv and the state."""
    out.mkdir(parents=True, exist_ok=True)
    vset = choose_variant_set(opts.variants, allow_download=opts.allow_download)
    t0 = time.perf_counter()
    catalog = load_catalog(opts.catalog, opts.catalog_path, limit=opts.limit,
                           queries=opts.queries, seed=opts.seed)
    state = BuildState(options=asdict(opts), variant_set=_variant_set_dict(vset),
                       categories=list(catalog.categories), pixel_hash=catalog.pixel_hash,
                       skipped=[list(s) for s in catalog.skipped])
    state.timings["catalog"] = round(time.perf_counter() - t0, 2)
    state.reports["catalog"] = catalog.source | {"skipped_images": len(catalog.skipped)}
    write_table(out, [{"image_id": r.image_id, "category": r.category, "item_id": r.item_id,
                       "split": r.split} for r in catalog.rows])
    save_state(out, state)
    return catalog, state


def _variant_set_dict(vset: VariantSet) -> dict:
    return {"name": vset.name, "source": vset.source, "reason": vset.reason,
            "variants": [{"network": v.network, "layer": v.layer, "metric": v.metric,
                          "label": v.label} for v in vset.variants]}


def reopen_catalog(out: Path, state: BuildState) -> Catalog:
    """Load the build's catalog again from its recorded options; check the rows match."""
    o = BuildOptions(**state.options)
    catalog = load_catalog(o.catalog, o.catalog_path, limit=o.limit, queries=o.queries,
                           seed=o.seed)
    if catalog.image_id != [r["image_id"] for r in read_table(out)]:
        raise ValueError(f"{out}: the catalog source changed since this build was started; "
                         "start a new build")
    return catalog


def features_stage(out: Path, catalog: Catalog, state: BuildState, *,
                   networks: set[str] | None = None) -> None:
    """Compute the features the variants need (optionally only some networks); save them."""
    from engine.train import compute_variant_features

    needed = _needed(state.variants())
    if networks is not None:
        needed = {n: layers for n, layers in needed.items() if n in networks}
    if not needed:
        return
    o = BuildOptions(**state.options)
    (out / "features").mkdir(exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    extra = {}
    if "num_workers" in inspect.signature(compute_variant_features).parameters:
        extra["num_workers"] = o.workers
    elif o.workers:
        logger.warning("--workers %d ignored: feature extraction here runs in-process", o.workers)
    feats, report = compute_variant_features(
        catalog, catalog.label, catalog.categories, needed, image_size=o.image_size,
        device=o.device, batch_size=o.batch_size, seed=o.seed,
        checkpoint_dir=out / "checkpoints", is_train_mask=catalog.split == "catalog",
        fashion_input=o.fashion_input, allow_download=o.allow_download, **extra)
    for (network, layer), arr in feats.items():
        np.save(feature_path(out, f"{network}.{layer}"), np.asarray(arr, dtype=np.float16))
    # Paths inside the (temporary) build directory are recorded relative to it.
    report = json.loads(json.dumps(report, default=str).replace(f"{out}/", ""))
    state.reports.setdefault("features", {}).update(report)


def _needed(variants: list[Variant]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in variants:
        layers = out.setdefault(v.network, [])
        if v.layer not in layers:
            layers.append(v.layer)
    return out


def _load_features(out: Path, key: str) -> np.ndarray:
    path = feature_path(out, key)
    if not path.is_file():
        raise ValueError(f"missing features {path}; run the extract/train stage first")
    return np.load(path, mmap_mode="r")


def index_stage(out: Path, state: BuildState) -> None:
    """Build and save one seeded Annoy index per variant."""
    table = Table(out, state)
    o = BuildOptions(**state.options)
    (out / "indexes").mkdir(exist_ok=True)
    info = {}
    for v in state.variants():
        t0 = time.perf_counter()
        vectors, extra = metric_vectors(_load_features(out, v.feature_key), v.metric,
                                        table.catalog_rows)
        index = build_annoy(vectors[table.catalog_rows], v.metric, n_trees=o.trees, seed=o.seed)
        index.save(str(out / "indexes" / f"{v.slug}.ann"))
        index.unload()
        info[v.slug] = {"file": f"indexes/{v.slug}.ann", "dims": int(vectors.shape[1]),
                        "annoy_metric": _annoy_metric(v.metric), "trees": o.trees,
                        "seed": o.seed, "items": len(table.catalog_rows),
                        "build_s": round(time.perf_counter() - t0, 2)} | extra
    state.reports["index"] = info


def _annoy_metric(metric: str) -> str:
    from engine.variants import METRICS

    return METRICS[metric]


def pairs_stage(out: Path, state: BuildState) -> list[dict]:
    """Query every index (checked against exact search), add the control, write pairs."""
    table = Table(out, state)
    o = BuildOptions(**state.options)
    exclude = duplicate_exclusions(table.pixel_hash, table.query_rows, table.catalog_rows)
    k = min(o.k, len(table.catalog_rows))
    search_k = o.search_k or default_search_k(len(table.catalog_rows), k, o.trees)
    (out / "neighbours").mkdir(exist_ok=True)
    records, reports = [], {}
    for v in state.variants():
        vectors, _ = metric_vectors(_load_features(out, v.feature_key), v.metric,
                                    table.catalog_rows)
        index = load_annoy(out / "indexes" / f"{v.slug}.ann", vectors.shape[1], v.metric)
        result = search_variant(v.slug, vectors, v.metric, index, catalog_rows=table.catalog_rows,
                                query_rows=table.query_rows, exclude=exclude, k=k,
                                search_k=search_k, device=o.device)
        index.unload()
        save_neighbours(out / "neighbours" / f"{v.slug}.npz", result)
        records += pair_records(result, table.query_rows, table.image_id, ranks=o.ranks)
        reports[v.slug] = result.report
        logger.info("%s: Annoy top-1 agreement with exact %.4f", v.slug,
                    result.report["top1_agreement"])
    control = random_control(table.query_rows, table.catalog_rows, exclude, k=k, seed=o.seed)
    save_neighbours(out / "neighbours" / "random.npz", control)
    records += pair_records(control, table.query_rows, table.image_id, ranks=o.ranks)
    write_pairs(out / "pairs.jsonl", records)
    state.reports["pairs"] = reports
    return records


def thumbnail_bytes(img: Image.Image) -> tuple[bytes, str]:
    """Return a display thumbnail (long side 256..512 px) encoded as PNG (grey) or JPEG."""
    long_side = max(img.size)
    target = min(max(long_side, THUMB_MIN), THUMB_MAX)
    if target != long_side:
        scale = target / long_side
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if img.mode == "L":
        img.save(buf, format="PNG", compress_level=1)  # 3x faster than the default, ~20% larger
        return buf.getvalue(), "png"
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "jpg"


def thumbnails_stage(out: Path, catalog: Catalog, records: list[dict]) -> int:
    """Write thumbnails of the images that appear in pairs; fill catalog.csv's column."""
    shown = {r["query_id"] for r in records} | {r["match_id"] for r in records}
    (out / "images").mkdir(exist_ok=True)
    rows = read_table(out)
    for i, row in enumerate(rows):
        row["thumbnail"] = ""
        if row["image_id"] not in shown:
            continue
        data, ext = thumbnail_bytes(catalog[i])
        name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        if not (out / "images" / name).exists():
            (out / "images" / name).write_bytes(data)
        row["thumbnail"] = name
    write_table(out, rows)
    return len(shown)


def evaluate_stage(out: Path, state: BuildState, *, tsne: bool = True) -> dict:
    """Evaluate every variant and the control; write eval.json, eval.md and tsne/."""
    table = Table(out, state)
    variants = state.variants() + [RANDOM]
    results = {v.slug: load_neighbours(out / "neighbours" / f"{v.slug}.npz", v.slug)
               for v in variants}
    t0 = time.perf_counter()
    item_ids = table.item_id if any(table.item_id) else None
    report = {"format_version": FORMAT_VERSION, "variant_set": state.variant_set["name"],
              "variant_set_reason": state.variant_set["reason"],
              "counts": {"catalog": len(table.catalog_rows), "queries": len(table.query_rows)},
              "variants": evaluate_variants(
                  results, variants, labels=table.labels, categories=state.categories,
                  query_rows=table.query_rows, catalog_rows=table.catalog_rows,
                  item_ids=item_ids, index_info=state.reports.get("index"))}
    if tsne:
        tsne_maps(out, state, table)
    state.timings["evaluate"] = round(time.perf_counter() - t0, 2)
    report["training"] = state.reports.get("features", {})
    report["timings"] = dict(state.timings)
    write_reports(out, report)
    return report


def tsne_maps(out: Path, state: BuildState, table: Table) -> None:
    """Draw one t-SNE PNG per network/layer the variants use."""
    (out / "tsne").mkdir(exist_ok=True)
    o = BuildOptions(**state.options)
    for key in dict.fromkeys(v.feature_key for v in state.variants()):
        feats = _load_features(out, key)[table.catalog_rows]
        tsne_plot(feats, table.labels[table.catalog_rows], state.categories,
                  out / "tsne" / f"{key}.png", title=f"{key} (catalog, t-SNE)", seed=o.seed)


def write_manifest(out: Path, state: BuildState) -> dict:
    """Write manifest.json; build_id hashes what the web app shows (not timings)."""
    table = Table(out, state)
    o = BuildOptions(**state.options)
    variants = [v.manifest_entry() for v in state.variants()] + [RANDOM.manifest_entry()]
    n_pairs = sum(1 for _ in open(out / "pairs.jsonl"))
    digest = hashlib.sha256()
    for name in ("catalog.csv", "pairs.jsonl"):
        digest.update((out / name).read_bytes())
    digest.update(json.dumps(variants, sort_keys=True).encode())
    if (out / "eval.json").is_file():
        scores = json.loads((out / "eval.json").read_text())["variants"]
        digest.update(json.dumps({s: e["top1_accuracy"] for s, e in scores.items()},
                                 sort_keys=True).encode())
    manifest = {
        "format_version": FORMAT_VERSION, "engine_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_id": digest.hexdigest()[:16],
        "source": {"catalog": o.catalog, "path": state.reports.get("catalog", {}).get("path"),
                   "limit": o.limit, "queries": o.queries, "seed": o.seed,
                   "image_size": o.image_size, "variant_set": state.variant_set["name"],
                   "variant_set_reason": state.variant_set["reason"]},
        "counts": {"catalog": len(table.catalog_rows), "queries": len(table.query_rows),
                   "skipped_images": len(state.skipped), "pairs": n_pairs},
        "categories": state.categories,
        "variants": variants,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# --- the whole build ----------------------------------------------------------------

def build(out: str | Path, opts: BuildOptions, *, force: bool = False,
          tsne: bool = True) -> dict:
    """Run every stage into a temporary directory, then move it to `out`; return the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"output directory {out} exists and is not empty; "
                         "pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _build_into(tmp, opts, tsne=tsne)
        _replace_dir(tmp, out)
    except BaseException:
        logger.error("Build failed; removing the partial directory %s", tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Build written to %s", out)
    return manifest


def _build_into(tmp: Path, opts: BuildOptions, *, tsne: bool) -> dict:
    t_total = time.perf_counter()
    catalog, state = init_build(tmp, opts)
    with timed(state, "features"):
        features_stage(tmp, catalog, state)
    with timed(state, "index"):
        index_stage(tmp, state)
    with timed(state, "pairs"):
        records = pairs_stage(tmp, state)
    with timed(state, "thumbnails"):
        thumbnails_stage(tmp, catalog, records)
    state.timings["total_before_evaluate"] = round(time.perf_counter() - t_total, 2)
    evaluate_stage(tmp, state, tsne=tsne)
    state.timings["total"] = round(time.perf_counter() - t_total, 2)
    save_state(tmp, state)
    return write_manifest(tmp, state)


def _replace_dir(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- single stages, in place on a build directory --------------------------------------

def run_stage(stage: str, build_dir: str | Path, opts: BuildOptions | None = None,
              **runtime) -> BuildState:
    """Run one stage in place on a build directory; extract starts one from opts."""
    out = Path(build_dir)
    if stage == "extract":
        catalog, state = init_build(out, opts or BuildOptions())
    else:
        state = load_state(out)
        state.options |= {k: v for k, v in runtime.items() if v is not None}
        catalog = reopen_catalog(out, state) if stage in ("train", "pairs") else None
    with timed(state, stage):
        _STAGES[stage](out, catalog, state)
    save_state(out, state)
    if (out / "pairs.jsonl").is_file():
        write_manifest(out, state)
    return state


def _extract(out, catalog, state):
    networks = set(_needed(state.variants())) - set(FASHION_NETWORKS)
    features_stage(out, catalog, state, networks=networks)


def _train(out, catalog, state):
    features_stage(out, catalog, state, networks=set(FASHION_NETWORKS))


def _pairs(out, catalog, state):
    thumbnails_stage(out, catalog, pairs_stage(out, state))


_STAGES = {
    "extract": _extract,
    "train": _train,
    "index": lambda out, catalog, state: index_stage(out, state),
    "pairs": _pairs,
    "evaluate": lambda out, catalog, state: evaluate_stage(out, state),
}
