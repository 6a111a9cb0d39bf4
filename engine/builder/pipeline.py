"""Run the engine's stages and write the build directory (docs/build-format.md).

`build()` runs every stage in `<out>.partial` and renames it into place at the end, so
a stopped build never leaves a directory that looks complete, and the same command
resumes it from its finished feature parts (builder.partial, builder.extract). The
single-stage functions (`extract`, `train`, `index`, `pairs`, `evaluate`) work in
place on a build directory and chain through its files; the
engine's own bookkeeping (options, variant set, pixel hashes, timings) lives in
`engine-state.json`.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from engine.builder.catalog import Catalog, load_catalog
from engine.builder.evaluate import evaluate_variants, tsne_plot, write_reports
from engine.builder.extract import EVERY_PART, WorkerShare, features_stage
from engine.builder.index import build_index, index_kind, open_index
from engine.builder.ivf import ivf_sample
from engine.builder.metric import MetricSpace
from engine.builder.pairs import (
    default_search_k,
    duplicate_exclusions,
    exact_check,
    load_neighbours,
    pair_records,
    random_control,
    save_neighbours,
    search_variant,
    write_pairs,
)
from engine.builder.partial import check_resumable, partial_dir, same_options
from engine.builder.variants import RANDOM, VariantSet, choose_variant_set, variants_of
from engine.formats.builddir import (
    FORMAT_VERSION,
    Table,
    load_features,
    publish_dir,
    read_table,
    shard_dir,
    write_manifest,
    write_table,
    write_thumbnail,
)
from engine.formats.state import (
    STATE_FILE,
    BuildOptions,
    BuildState,
    load_state,
    save_state,
)

logger = logging.getLogger(__name__)

TSNE_ROWS = 10_000  # t-SNE maps draw at most this many catalog rows (a seeded sample)



# --- stage bookkeeping ------------------------------------------------------------

@contextmanager
def timed(state: BuildState, stage: str):
    """Record a stage's wall time in the state."""
    t0 = time.perf_counter()
    yield
    state.timings[stage] = round(time.perf_counter() - t0, 2)
    logger.info("Stage %s took %.1f s", stage, state.timings[stage])


# --- stages -----------------------------------------------------------------------

def init_build(out: Path, opts: BuildOptions) -> tuple[Catalog, BuildState]:
    """Load the catalog, choose the variant set, write catalog.csv and the state."""
    out.mkdir(parents=True, exist_ok=True)
    vset = choose_variant_set(opts.variants, allow_download=opts.allow_download)
    t0 = time.perf_counter()
    catalog = load_catalog(opts.catalog, opts.catalog_path, limit=opts.limit,
                           queries=opts.queries, seed=opts.seed, repeat=opts.repeat)
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
    o = state.build_options
    catalog = load_catalog(o.catalog, o.catalog_path, limit=o.limit, queries=o.queries,
                           seed=o.seed, repeat=o.repeat)
    if catalog.image_id != [r["image_id"] for r in read_table(out)]:
        raise ValueError(f"{out}: the catalog source changed since this build was started; "
                         "start a new build")
    return catalog


def index_stage(out: Path, state: BuildState) -> None:
    """Build one index per variant from the shards (builder.index: Annoy or faiss)."""
    table = Table.read(out, state)
    o = state.build_options
    (out / "indexes").mkdir(exist_ok=True)
    cat = table.catalog_rows
    kind = index_kind(o.index, len(cat))
    info = {}
    for v in variants_of(state):
        t0 = time.perf_counter()
        features = load_features(out, v.feature_key)
        space = MetricSpace.fit(features, v.metric, cat)

        def sample(features=features, space=space):
            return space.vectors(features[cat[ivf_sample(len(cat), o.seed)]])

        info[v.slug] = build_index(out / "indexes" / v.slug, kind, v.metric,
                                   partial(space.parts, features, cat),
                                   dims=features.shape[1], n_items=len(cat), sample=sample,
                                   trees=o.trees, seed=o.seed,
                                   assign_all=_list_assigner(out, o, v, space, cat),
                                   ) | space.report(features, cat)
        info[v.slug]["build_s"] = round(time.perf_counter() - t0, 2)
    state.reports["index"] = info


def _list_assigner(out: Path, o, v, space, cat):
    """`--executor ray`: IVF lists assigned on Ray (builder.ray_index); else None (here)."""
    if o.executor != "ray" or not shard_dir(out, v.feature_key).is_dir():
        return None
    from engine.builder.ray_index import ray_lists

    return ray_lists(shard_dir(out, v.feature_key), space, cat)


def pairs_stage(out: Path, state: BuildState) -> list[dict]:
    """Query every index (checked against exact search), add the control, write pairs."""
    table = Table.read(out, state)
    o = state.build_options
    cat = table.catalog_rows
    exclude = duplicate_exclusions(table.pixel_hash, table.query_rows, cat)
    k = min(o.k, len(cat))
    search_k = o.search_k or default_search_k(len(cat), k, o.trees)
    (out / "neighbours").mkdir(exist_ok=True)
    records, reports = [], {}
    for v in variants_of(state):
        features = load_features(out, v.feature_key)
        space = MetricSpace.fit(features, v.metric, cat)
        queries = space.vectors(features[table.query_rows])
        index = open_index(out, state.reports["index"][v.slug], v.metric, search_k=search_k)
        result = search_variant(v.slug, index, queries, item_rows=cat, exclude=exclude, k=k,
                                seed=o.seed, exact=exact_check(features, space, cat, queries,
                                                               exclude, k, o.device))
        save_neighbours(out / "neighbours" / f"{v.slug}.npz", result)
        records += pair_records(result, table.query_rows, table.image_id, ranks=o.ranks)
        reports[v.slug] = result.report
        logger.info("%s: %s top-1 agreement with exact %.4f", v.slug, result.report["index"],
                    result.report["top1_agreement"])
    control = random_control(table.query_rows, cat, exclude, k=k, seed=o.seed)
    save_neighbours(out / "neighbours" / "random.npz", control)
    records += pair_records(control, table.query_rows, table.image_id, ranks=o.ranks)
    write_pairs(out / "pairs.jsonl", records)
    state.reports["pairs"] = reports
    return records


def thumbnails_stage(out: Path, catalog: Catalog, records: list[dict]) -> int:
    """Write thumbnails of the images that appear in pairs; fill catalog.csv's column."""
    shown = {r["query_id"] for r in records} | {r["match_id"] for r in records}
    (out / "images").mkdir(exist_ok=True)
    rows = read_table(out)
    for i, row in enumerate(rows):
        row["thumbnail"] = ""
        if row["image_id"] not in shown:
            continue
        row["thumbnail"] = write_thumbnail(out, catalog[i])
    write_table(out, rows)
    return len(shown)


def evaluate_stage(out: Path, state: BuildState, *, tsne: bool = True) -> dict:
    """Evaluate every variant and the control; write eval.json, eval.md and tsne/."""
    table = Table.read(out, state)
    variants = variants_of(state) + [RANDOM]
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
    o = state.build_options
    rows = table.catalog_rows
    if len(rows) > TSNE_ROWS:
        rows = np.sort(np.random.default_rng(o.seed).choice(rows, TSNE_ROWS, replace=False))
    for key in dict.fromkeys(v.feature_key for v in variants_of(state)):
        feats = load_features(out, key)[rows]
        tsne_plot(feats, table.labels[rows], state.categories,
                  out / "tsne" / f"{key}.png", title=f"{key} (catalog, t-SNE)", seed=o.seed)


def write_build_manifest(out: Path, state: BuildState) -> dict:
    """Write manifest.json for a build the pipeline made (formats.builddir.write_manifest)."""
    table = Table.read(out, state)
    o = state.build_options
    variants = [v.manifest_entry() for v in variants_of(state)] + [RANDOM.manifest_entry()]
    return write_manifest(out, {
        "source": {"catalog": o.catalog, "path": state.reports.get("catalog", {}).get("path"),
                   "limit": o.limit, "queries": o.queries, "seed": o.seed, "repeat": o.repeat,
                   "image_size": o.image_size, "variant_set": state.variant_set["name"],
                   "variant_set_reason": state.variant_set["reason"]},
        "counts": {"catalog": len(table.catalog_rows), "queries": len(table.query_rows),
                   "skipped_images": len(state.skipped)},
        "categories": state.categories,
        "variants": variants,
        "indexes": {slug: {k: info[k] for k in ("kind", "file", "items") if k in info}
                    for slug, info in state.reports.get("index", {}).items()},
    })


# --- the whole build ----------------------------------------------------------------

def build(out: str | Path, opts: BuildOptions, *, force: bool = False,
          tsne: bool = True) -> dict:
    """Run every stage in `<out>.partial`, then rename it to `out`; return the manifest.
    A build that stops keeps its finished feature parts there, and the same command
    resumes from them."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"output directory {out} exists and is not empty; "
                         "pass --force to replace it")
    partial = partial_dir(out)
    check_resumable(partial, opts, force=force)
    try:
        manifest = _build_into(partial, opts, tsne=tsne)
    except BaseException:
        if (partial / "features").is_dir():
            logger.error("Build stopped; %s keeps its finished feature parts: run the same "
                         "command again to resume", partial)
        else:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    publish_dir(partial, out)
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
    return write_build_manifest(tmp, state)


# --- single stages, in place on a build directory --------------------------------------

def run_stage(stage: str, build_dir: str | Path, opts: BuildOptions | None = None, *,
              share: WorkerShare = EVERY_PART, **runtime) -> BuildState:
    """Run one stage in place on a build directory; extract starts one from opts (or goes
    on with one started with the same options: workers, resumed runs)."""
    out = Path(build_dir)
    if stage == "extract":
        opts = opts or BuildOptions()
        if (out / STATE_FILE).is_file() and not same_options(load_state(out).options, opts):
            raise ValueError(f"{out} holds a build started with other options; nothing was "
                             "overwritten: use a new --build directory")
        catalog, state = init_build(out, opts)
    else:
        state = load_state(out)
        state.options |= {k: v for k, v in runtime.items() if v is not None}
        catalog = reopen_catalog(out, state) if stage in ("train", "pairs") else None
    with timed(state, stage):
        if stage == "extract":
            _extract(out, catalog, state, share)
        else:
            _STAGES[stage](out, catalog, state)
    save_state(out, state)
    if (out / "pairs.jsonl").is_file():
        write_build_manifest(out, state)
    return state


def _extract(out, catalog, state, share=EVERY_PART):
    features_stage(out, catalog, state, fashion=False, share=share)


def _train(out, catalog, state):
    features_stage(out, catalog, state, pretrained=False)


def _pairs(out, catalog, state):
    thumbnails_stage(out, catalog, pairs_stage(out, state))


_STAGES = {
    "train": _train,
    "index": lambda out, catalog, state: index_stage(out, state),
    "pairs": _pairs,
    "evaluate": lambda out, catalog, state: evaluate_stage(out, state),
}
