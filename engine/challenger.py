"""`python -m engine retrain`: votes in, a challenger build out (docs/build-format.md).

Reads a vote export, chooses the parent, learns a metric (engine.retrain) on frozen
feature families (engine.families) and, when the gate lets it through, writes a new
build directory. That directory has the same catalog and thumbnails plus a fresh
query pool (engine.pool) on which every variant, the parent, the control and the
challenger, has its pairs. It also holds the challenger's model and its lineage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from engine.build import (
    Table,
    _replace_dir,
    load_state,
    read_table,
    save_state,
    thumbnail_bytes,
    write_table,
)
from engine.builddir import read_build
from engine.crowdplan import wilson_interval
from engine.families import FamilySpace
from engine.pairs import duplicate_exclusions, random_control
from engine.pool import Pool, combined_features, feature_keys, fresh_pool, source_catalog
from engine.retrain import (
    MIN_VOTES,
    Model,
    RetrainRefused,
    family_names,
    learn,
    weight_shares,
)
from engine.votes import read_votes

logger = logging.getLogger(__name__)

MODELS_DIR = "retrained"
GATE_FAILED = 3  # exit status: the challenger is no better than its parent


@dataclass
class RetrainResult:
    published: bool
    parent: str
    parent_reason: str
    gate: dict
    counts: dict
    slug: str | None = None
    name: str | None = None
    learned: dict = field(default_factory=dict)
    manifest: dict | None = None


# ---------------------------------------------------------------- votes and parent

def usable_votes(votes, rows: dict[str, int]) -> tuple[list, dict]:
    """Return the judged votes whose images are build rows, and what was left out."""
    counts = Counter(total=len(votes))
    usable = []
    for v in votes:
        if not v.judged:
            counts["skips"] += 1
        elif v.query_id not in rows or v.match_id not in rows:
            counts["unknown_images"] += 1
        else:
            usable.append(v)
    counts["usable"] = len(usable)
    return usable, dict(counts)


def refuse_if_unfit(usable: list, counts: dict) -> None:
    """Raise RetrainRefused when the votes cannot train anything."""
    if counts["total"] == 0:
        raise RetrainRefused("the vote file has no votes")
    if not usable:
        why = (f"{counts.get('unknown_images', 0)} judged vote(s) name images this build does "
               f"not have" if counts.get("unknown_images") else "every vote is a skip")
        raise RetrainRefused(f"no usable votes among {counts['total']}: {why}")
    verdicts = {v.verdict for v in usable}
    if len(verdicts) < 2:
        raise RetrainRefused(f"all {len(usable)} usable votes are {verdicts.pop()}: a metric "
                             "needs both dope and nope judgments")
    if len(usable) < MIN_VOTES:
        raise RetrainRefused(f"{len(usable)} usable votes; retraining needs at least "
                             f"{MIN_VOTES} judged (dope or nope) votes")


def choose_parent(parent: str, usable: list, manifest: dict) -> tuple[str, str]:
    """Return (parent slug, why): the one asked for, or the best Wilson lower bound."""
    real = [v["slug"] for v in manifest["variants"] if not v.get("control")]
    if parent != "auto":
        if parent not in real:
            raise RetrainRefused(f"unknown parent {parent!r}; this build's real variants: "
                                 f"{', '.join(real)}")
        return parent, "asked for with --parent"
    tally: dict[str, list[int]] = {s: [0, 0] for s in real}
    for v in usable:
        if v.variant in tally:
            tally[v.variant][0] += v.verdict == "dope"
            tally[v.variant][1] += 1
    lows = {s: wilson_interval(d, n)[0] for s, (d, n) in tally.items() if n}
    if not lows:
        raise RetrainRefused("--parent auto: no usable vote names a real variant of this build")
    best = max(lows, key=lambda s: (lows[s], s))
    d, n = tally[best]
    return best, (f"highest Wilson 95% lower bound in the votes: {lows[best]:.3f} "
                  f"({d} dope of {n})")


def load_models(build_dir: Path) -> dict[str, dict]:
    """Return {slug: saved model} of the retrained variants a build holds."""
    folder = build_dir / MODELS_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} \
        if folder.is_dir() else {}


def parent_model(slug: str, saved: dict, families: list[str]) -> tuple[Model, int]:
    """Return the parent's distance as a Model, and the round that made it (0: an indexed
    variant)."""
    if slug in saved:
        return Model.from_dict(saved[slug]["model"]), int(saved[slug]["round"])
    return Model(slug, families, {}, {"base": 1.0}, report={"round": 0}), 0


# ---------------------------------------------------------------- re-ranking

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


def pool_matches(space, pool, models: dict[str, Model], manifest: dict, seed: int) -> dict:
    """Return {slug: (P, K) ranked candidate rows} for every variant on the fresh pool."""
    table = space.table
    out = {}
    for v in manifest["variants"]:
        slug = v["slug"]
        if v.get("control"):
            pool_rows = np.arange(space.n_build, space.n_build + len(pool))
            exclude = duplicate_exclusions(table.pixel_hash + pool.pixel_hash, pool_rows,
                                           table.catalog_rows)
            out[slug] = random_control(pool_rows, table.catalog_rows, exclude, k=1,
                                       seed=seed).annoy.idx
        elif slug in models:
            out[slug] = rerank(space, models[slug], pool)
        else:
            out[slug] = pool.candidates[slug][0]
    return out


# ---------------------------------------------------------------- the whole command

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Training:
    """Everything learn() needs, and what retrain() reports and writes."""

    build_dir: Path
    manifest: dict
    saved: dict
    pool: Pool
    space: FamilySpace
    parent: str
    parent_reason: str
    parent_model: Model
    round: int  # this retrain's round: one more than the build's lineage holds
    counts: dict
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def prepare(build_dir: Path, votes_path: Path, *, parent: str = "auto", queries: int = 500,
            seed: int = 0) -> Training:
    """Read and check votes and build, choose the parent, draw the pool, make the data."""
    vote_file = read_votes(votes_path)
    build = read_build(build_dir)
    rows = {r["image_id"]: i for i, r in enumerate(read_table(build_dir))}
    usable, counts = usable_votes(vote_file.votes, rows)
    refuse_if_unfit(usable, counts)
    slug, reason = choose_parent(parent, usable, build.manifest)
    keys = feature_keys(build_dir)
    saved = load_models(build_dir)
    model, _ = parent_model(slug, saved, family_names(keys))
    round_ = len(build.manifest.get("lineage", [])) + 1
    pool = fresh_pool(build_dir, {v.query_id for v in vote_file.votes}, queries, seed)
    space = FamilySpace(build_dir, pool, keys)
    q = np.array([rows[v.query_id] for v in usable])
    m = np.array([rows[v.match_id] for v in usable])
    raw = space.raw(model.base, q, m)
    if not model.scales:
        medians = np.median(raw, axis=0)
        model.scales = {f: float(s) if s > 0 else float(raw[:, i].mean() or 1.0)
                        for i, (f, s) in enumerate(zip(model.families, medians, strict=True))}
    X = raw / np.array([model.scales[f] for f in model.families])
    y = np.array([v.verdict == "dope" for v in usable], float)
    return Training(build_dir, build.manifest, saved, pool, space, slug, reason, model,
                    round_, counts | {"file_sha256": sha256_file(votes_path)}, X, y,
                    np.array([v.query_id for v in usable]))


def retrain(build_dir: str | Path, votes_path: str | Path, out: str | Path, *,
            parent: str = "auto", queries: int = 500, seed: int = 0,
            write_gated: bool = False) -> RetrainResult:
    """Learn a challenger from votes; write its build to `out` only if the gate passes
    (or, for experiments that measure the gate, `write_gated` anyway)."""
    build_dir, out = Path(build_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output directory {out} exists and is not empty")
    t = prepare(build_dir, Path(votes_path), parent=parent, queries=queries, seed=seed)
    learned = learn(t.X, t.y, t.groups, t.parent_model, seed=seed)
    result = RetrainResult(learned.published, t.parent, t.parent_reason, learned.gate, t.counts)
    if not learned.published and not write_gated:
        return result
    round_ = t.round
    names = {v["slug"]: v["name"] for v in t.manifest["variants"]}
    result.slug = f"{t.parent_model.base}.r{round_}-{t.counts['file_sha256'][:6]}"
    result.name = (f"Retrained on {t.counts['usable']:,} votes (from {names[t.parent]})")
    learned.model.report = {"round": round_, "shares": weight_shares(learned.model, t.X)}
    result.learned = {"weights": {f: round(w, 5) for f, w in learned.model.weights.items()},
                      "shares": learned.model.report["shares"]}
    result.manifest = write_challenger(t, learned.model, result, out, seed=seed)
    return result


# ---------------------------------------------------------------- writing the build

def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = _write_into(tmp, t, model, result, seed=seed)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _write_into(tmp: Path, t: Training, model: Model, result: RetrainResult, *,
                seed: int) -> dict:
    tmp.mkdir(parents=True)
    src = t.build_dir
    for folder in ("indexes", "checkpoints"):
        if (src / folder).is_dir():
            shutil.copytree(src / folder, tmp / folder, copy_function=_link_or_copy)
    (tmp / MODELS_DIR).mkdir()
    entry = _variant_entry(t, result)
    models = {slug: Model.from_dict(s["model"]) for slug, s in t.saved.items()}
    models[result.slug] = model
    for slug, saved in t.saved.items():
        (tmp / MODELS_DIR / f"{slug}.json").write_text(json.dumps(saved, indent=1) + "\n")
    (tmp / MODELS_DIR / f"{result.slug}.json").write_text(json.dumps(
        {"slug": result.slug, "round": entry["retrained"]["round"],
         "parent": t.parent, "model": model.to_dict()}, indent=1) + "\n")
    manifest = dict(t.manifest, variants=t.manifest["variants"] + [entry])
    matches = pool_matches(t.space, t.pool, models, manifest, seed)
    _write_rows_and_features(tmp, t)
    records = _write_pairs(tmp, t, matches)
    _write_thumbnails(tmp, t, records)
    _write_eval(tmp, t, matches)
    state = load_state(src)
    state.pixel_hash = state.pixel_hash + t.pool.pixel_hash
    state.reports["retrain"] = _lineage_entry(t, result)
    save_state(tmp, state)
    return _write_manifest(tmp, t, manifest, result)


def _variant_entry(t: Training, result: RetrainResult) -> dict:
    base = next(v for v in t.manifest["variants"] if v["slug"] == t.parent_model.base)
    return {"slug": result.slug, "name": result.name, "network": base.get("network"),
            "layer": base.get("layer"), "metric": "learned", "control": False,
            "retrained": {"parent": t.parent, "base": t.parent_model.base,
                          "round": t.round, "votes": t.counts["usable"],
                          "votes_sha256": t.counts["file_sha256"]}}


def _write_rows_and_features(tmp: Path, t: Training) -> None:
    rows = read_table(t.build_dir) + [
        {"image_id": i, "category": c, "item_id": it, "split": "query"}
        for i, c, it in zip(t.pool.image_id, t.pool.category, t.pool.item_id, strict=True)]
    write_table(tmp, rows)
    (tmp / "features").mkdir()
    for key in feature_keys(t.build_dir):
        np.save(tmp / "features" / f"{key}.npy",
                combined_features(t.build_dir, key, t.pool.features[key]).astype(np.float16))
    for family, arr in t.pool.whitebox.items():
        np.save(tmp / "features" / f"whitebox.{family}.npy", arr)


def _write_pairs(tmp: Path, t: Training, matches: dict) -> list[dict]:
    ids = [r["image_id"] for r in read_table(t.build_dir)]
    records = []
    for slug, idx in matches.items():
        for j, query in enumerate(t.pool.image_id):
            if idx[j, 0] >= 0:
                records.append({"query_id": query, "match_id": ids[idx[j, 0]],
                                "variant": slug, "rank": 1, "distance": None})
    with open(tmp / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return records


def _write_thumbnails(tmp: Path, t: Training, records: list[dict]) -> None:
    """Write thumbnails of the pool's pairs, and keep (link) every thumbnail the parent
    build had, so that this build names every image the game may show."""
    before = {r["image_id"]: r["thumbnail"] for r in read_table(t.build_dir)}
    shown = {r["query_id"] for r in records} | {r["match_id"] for r in records}
    missing = {i for i in shown if not before.get(i)}
    catalog = source_catalog(t.build_dir) if missing else None
    by_id = {image_id: i for i, image_id in enumerate(catalog.image_id)} if catalog else {}
    (tmp / "images").mkdir()
    rows = read_table(tmp)
    for row in rows:
        name = before.get(row["image_id"]) or ""
        if name:
            if not (tmp / "images" / name).exists():
                _link_or_copy(t.build_dir / "images" / name, tmp / "images" / name)
        elif row["image_id"] in missing:
            data, ext = thumbnail_bytes(catalog[by_id[row["image_id"]]])
            name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
            if not (tmp / "images" / name).exists():
                (tmp / "images" / name).write_bytes(data)
        row["thumbnail"] = name
    write_table(tmp, rows)


def _write_eval(tmp: Path, t: Training, matches: dict) -> None:
    parent_eval = json.loads((t.build_dir / "eval.json").read_text())
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
            "parent_build_id": t.manifest["build_id"], "votes": t.counts,
            "learned": result.learned, "gate": result.gate,
            "pool": {"queries": len(t.pool), "key": t.pool.key}}


def _write_manifest(tmp: Path, t: Training, manifest: dict, result: RetrainResult) -> dict:
    digest = hashlib.sha256()
    for name in ("catalog.csv", "pairs.jsonl"):
        digest.update((tmp / name).read_bytes())
    digest.update(json.dumps(manifest["variants"], sort_keys=True).encode())
    n_pairs = sum(1 for _ in open(tmp / "pairs.jsonl"))
    table_counts = Counter(r["split"] for r in read_table(tmp))
    manifest = dict(manifest, build_id=digest.hexdigest()[:16],
                    created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                    counts=dict(manifest.get("counts", {}), catalog=table_counts["catalog"],
                                queries=len(t.pool), pairs=n_pairs),
                    lineage=manifest.get("lineage", []) + [_lineage_entry(t, result)])
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
