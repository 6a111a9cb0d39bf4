"""Write a challenger's build directory (docs/build-format.md), through the one writer
of build directories (engine.formats.builddir).

The fresh pool's queries join the parent's catalog rows; every variant, the parent's,
the control and the challenger, gets its rank-1 match on them (indexed variants from
their Annoy candidates, retrained ones by re-ranking their base's candidates with their
learned distance); the parent's thumbnails are linked, the pool's written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.builder.pairs import duplicate_exclusions, random_control, write_pairs
from engine.builder.whitebox import KEY_PREFIX
from engine.formats.builddir import (
    Table,
    atomic_dir,
    feature_path,
    link_or_copy,
    write_manifest,
    write_table,
    write_thumbnail,
)
from engine.formats.state import save_state
from engine.retrain.families import FamilySpace
from engine.retrain.model import Model
from engine.retrain.pool import Pool, combined_features, source_catalog

if TYPE_CHECKING:  # types only: engine.retrain.challenger calls this module
    from engine.retrain.challenger import RetrainResult, Training

MODELS_DIR = "retrained"


def rerank(space: FamilySpace, model: Model, pool: Pool) -> np.ndarray:
    """Return (P, K) candidate rows of the base, re-ordered by the model's distance."""
    idx = pool.candidates[model.base][0]
    n_pool, k = idx.shape
    q = np.repeat(np.arange(space.n_build, space.n_build + n_pool), k)
    valid = idx.ravel() >= 0
    m = np.where(valid, idx.ravel(), 0)
    scales = np.array([model.scales[f] for f in model.families])
    distance = (space.raw(model.base, q, m) / scales) @ model.vector()
    distance = np.where(valid, distance, np.inf).reshape(n_pool, k)
    order = np.argsort(distance, axis=1, kind="stable")  # ties keep the base's order
    return np.take_along_axis(idx, order, axis=1)


def pool_matches(space, pool, models: dict[str, Model], variants: list[dict], seed: int) -> dict:
    """Return {slug: (P, K) ranked candidate rows} for every variant on the fresh pool."""
    table = space.table
    out = {}
    for v in variants:
        slug = v["slug"]
        if v.get("control"):
            pool_rows = np.arange(space.n_build, space.n_build + len(pool))
            exclude = duplicate_exclusions(table.pixel_hash + pool.pixel_hash, pool_rows,
                                           table.catalog_rows)
            out[slug] = random_control(pool_rows, table.catalog_rows, exclude, k=1,
                                       seed=seed).found.idx
        elif slug in models:
            out[slug] = rerank(space, models[slug], pool)
        else:
            out[slug] = pool.candidates[slug][0]
    return out


def _evaluate(matches: dict, pool: Pool, table: Table) -> dict:
    """Return same-category top-1 and precision@5 on the fresh pool per variant."""
    out = {}
    for slug, idx in matches.items():
        top = idx[:, :5]
        same = np.array([[c >= 0 and table.rows[c]["category"] == pool.category[j]
                          for c in row] for j, row in enumerate(top)])
        out[slug] = {"top1_accuracy": round(float(same[:, 0].mean()), 4),
                     "precision_at_5": round(float(same.mean()), 4) if top.shape[1] >= 5
                     else None, "queries": len(pool)}
    return out


def write_challenger(t: Training, model: Model, result: RetrainResult, out: Path, *,
                     seed: int) -> dict:
    """Write the challenger build into a temporary directory, then rename it to `out`."""
    with atomic_dir(out) as tmp:
        return _write_into(tmp, t, model, result, seed=seed)


def _write_into(tmp: Path, t: Training, model: Model, result: RetrainResult, *,
                seed: int) -> dict:
    tmp.mkdir(parents=True)
    src = t.build.path
    for folder in ("indexes", "checkpoints"):
        if (src / folder).is_dir():
            shutil.copytree(src / folder, tmp / folder, copy_function=link_or_copy)
    (tmp / MODELS_DIR).mkdir()
    entry = _variant_entry(t, result)
    models = {slug: Model.from_dict(s["model"]) for slug, s in t.saved.items()}
    models[result.slug] = model
    for slug, saved in t.saved.items():
        (tmp / MODELS_DIR / f"{slug}.json").write_text(json.dumps(saved, indent=1) + "\n")
    (tmp / MODELS_DIR / f"{result.slug}.json").write_text(json.dumps(
        {"slug": result.slug, "round": entry["retrained"]["round"],
         "parent": t.parent, "model": model.to_dict()}, indent=1) + "\n")
    variants = t.build.manifest["variants"] + [entry]
    matches = pool_matches(t.space, t.pool, models, variants, seed)
    rows = _write_rows_and_features(tmp, t)
    records = _write_pairs(tmp, t, matches)
    _write_thumbnails(tmp, t, rows, records)
    _write_eval(tmp, t, matches)
    state = replace(t.build.state, pixel_hash=t.build.state.pixel_hash + t.pool.pixel_hash,
                    reports=dict(t.build.state.reports, retrain=_lineage_entry(t, result)))
    save_state(tmp, state)
    return _write_manifest(tmp, t, variants, rows, result)


def _variant_entry(t: Training, result: RetrainResult) -> dict:
    base = next(v for v in t.build.manifest["variants"] if v["slug"] == t.parent_model.base)
    return {"slug": result.slug, "name": result.name, "network": base.get("network"),
            "layer": base.get("layer"), "metric": "learned", "control": False,
            "retrained": {"parent": t.parent, "base": t.parent_model.base,
                          "round": t.round, "votes": t.counts["usable"],
                          "votes_sha256": t.counts["file_sha256"]}}


def _write_rows_and_features(tmp: Path, t: Training) -> list[dict]:
    """Write the parent's catalog rows and the pool's queries, and their features; return
    the rows."""
    rows = [dict(r) for r in t.build.rows] + [
        {"image_id": i, "category": c, "item_id": it, "split": "query"}
        for i, c, it in zip(t.pool.image_id, t.pool.category, t.pool.item_id, strict=True)]
    write_table(tmp, rows)
    (tmp / "features").mkdir()
    for key in t.build.feature_keys:
        np.save(feature_path(tmp, key),
                combined_features(t.build, key, t.pool.features[key]).astype(np.float16))
    for family, arr in t.pool.whitebox.items():
        np.save(feature_path(tmp, KEY_PREFIX + family), arr)
    return rows


def _write_pairs(tmp: Path, t: Training, matches: dict) -> list[dict]:
    ids = t.build.table.image_id
    records = []
    for slug, idx in matches.items():
        for j, query in enumerate(t.pool.image_id):
            if idx[j, 0] >= 0:
                records.append({"query_id": query, "match_id": ids[idx[j, 0]],
                                "variant": slug, "rank": 1, "distance": None})
    write_pairs(tmp / "pairs.jsonl", records)
    return records


def _write_thumbnails(tmp: Path, t: Training, rows: list[dict], records: list[dict]) -> None:
    """Write thumbnails of the pool's pairs, and keep (link) every thumbnail the parent
    build had, so that this build names every image the game may show."""
    before = {r["image_id"]: r["thumbnail"] for r in t.build.rows}
    shown = {r["query_id"] for r in records} | {r["match_id"] for r in records}
    missing = {i for i in shown if not before.get(i)}
    catalog = source_catalog(t.build) if missing else None
    by_id = {image_id: i for i, image_id in enumerate(catalog.image_id)} if catalog else {}
    (tmp / "images").mkdir()
    for row in rows:
        name = before.get(row["image_id"]) or ""
        if name:
            if not (tmp / "images" / name).exists():
                link_or_copy(t.build.path / "images" / name, tmp / "images" / name)
        elif row["image_id"] in missing:
            name = write_thumbnail(tmp, catalog[by_id[row["image_id"]]])
        row["thumbnail"] = name
    write_table(tmp, rows)


def _write_eval(tmp: Path, t: Training, matches: dict) -> None:
    parent_eval = json.loads((t.build.path / "eval.json").read_text())
    fresh = _evaluate(matches, t.pool, t.space.table)
    variants = {}
    for slug, figures in fresh.items():
        # Variants that existed keep their figure (the import leaves them as they were);
        # the fresh pool's figure stands beside it, the same queries for every variant.
        before = parent_eval["variants"].get(slug)
        variants[slug] = dict(before or {"top1_accuracy": figures["top1_accuracy"]},
                              fresh_pool=figures)
    report = dict(parent_eval, variants=variants,
                  fresh_pool={"queries": len(t.pool), "key": t.pool.key,
                              "search": t.pool.reports.get("search", {})})
    (tmp / "eval.json").write_text(json.dumps(report, indent=2) + "\n")


def _lineage_entry(t: Training, result: RetrainResult) -> dict:
    return {"round": t.round, "challenger": result.slug, "parent": t.parent,
            "parent_reason": t.parent_reason, "base": t.parent_model.base,
            "parent_build_id": t.build.build_id, "votes": t.counts,
            "learned": result.learned, "gate": result.gate,
            "pool": {"queries": len(t.pool), "key": t.pool.key}} | (
                {"photo_gate": result.photo} if result.photo else {})


def _write_manifest(tmp: Path, t: Training, variants: list[dict], rows: list[dict],
                    result: RetrainResult) -> dict:
    """Write the manifest: the parent's, with this build's variants, counts and lineage."""
    parent = t.build.manifest
    catalog = sum(r["split"] == "catalog" for r in rows)
    return write_manifest(tmp, dict(
        parent, variants=variants,
        counts=dict(parent.get("counts", {}), catalog=catalog, queries=len(t.pool)),
        lineage=parent.get("lineage", []) + [_lineage_entry(t, result)]))
