"""Validate and import an engine build directory (docs/build-format.md).

Everything is checked before anything is written; the import then runs in one
transaction, so a bad build changes nothing. Thumbnails are copied into the
image store first (content-addressed, so a leftover file is harmless).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import Build, Image, Pair, Variant

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED = ("manifest.json", "catalog.csv", "pairs.jsonl", "eval.json", "images")
CATALOG_COLUMNS = ["image_id", "category", "item_id", "split", "thumbnail"]
THUMB_NAME = re.compile(r"^([0-9a-f]{64})\.(png|jpg|jpeg|webp)$")
MAX_ERRORS = 20


class BuildError(ValueError):
    """The build directory is not importable; .errors lists every problem found."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors[:MAX_ERRORS]))
        self.errors = errors


@dataclass
class CheckedBuild:
    path: Path
    manifest: dict
    catalog: dict[str, dict] = field(default_factory=dict)
    pairs: list[dict] = field(default_factory=list)
    accuracy: dict[str, float | None] = field(default_factory=dict)


def image_kind(data: bytes) -> str | None:
    """Return 'png', 'jpeg' or 'webp' from the magic bytes, None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _load_json(path: Path, errors: list[str]):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        errors.append(f"{path.name}: not readable JSON ({exc})")
        return None


def check_manifest(manifest, errors: list[str]) -> None:
    """Check format_version and the variant list of a manifest."""
    if not isinstance(manifest, dict):
        errors.append("manifest.json: not a JSON object")
        return
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        errors.append(f"manifest.json: format_version {version!r} is not supported "
                      f"(this web app reads version {FORMAT_VERSION})")
    if not isinstance(manifest.get("build_id"), str) or not manifest.get("build_id"):
        errors.append("manifest.json: build_id missing")
    variants = manifest.get("variants")
    if not isinstance(variants, list) or not variants:
        errors.append("manifest.json: variants missing")
        return
    slugs = [v.get("slug") if isinstance(v, dict) else None for v in variants]
    if any(not isinstance(s, str) or not s for s in slugs) or len(set(slugs)) != len(slugs):
        errors.append("manifest.json: every variant needs a unique slug")
    if any(not isinstance(v, dict) or not isinstance(v.get("name"), str) for v in variants):
        errors.append("manifest.json: every variant needs a name")
    controls = sum(1 for v in variants if isinstance(v, dict) and v.get("control") is True)
    if controls != 1:
        errors.append(f"manifest.json: exactly one control variant expected, found {controls}")
    for v in variants:
        if isinstance(v, dict) and v.get("retrained") is not None:
            check_retrained(v, set(slugs), errors)


def check_retrained(variant: dict, slugs: set, errors: list[str]) -> None:
    """Check a retrained variant's lineage fields: a parent in the build, a round >= 1."""
    info = variant["retrained"]
    parent = info.get("parent") if isinstance(info, dict) else None
    round_ = info.get("round") if isinstance(info, dict) else None
    if not isinstance(parent, str) or parent not in slugs or parent == variant.get("slug"):
        errors.append(f"manifest.json: retrained variant {variant.get('slug')!r} needs a "
                      "parent that is another variant of the build")
    if not isinstance(round_, int) or isinstance(round_, bool) or round_ < 1:
        errors.append(f"manifest.json: retrained variant {variant.get('slug')!r} needs a "
                      "round of at least 1")


def check_catalog(build: CheckedBuild, errors: list[str]) -> None:
    """Read catalog.csv, checking its columns and thumbnail names."""
    try:
        with open(build.path / "catalog.csv", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != CATALOG_COLUMNS:
                errors.append(f"catalog.csv: columns {reader.fieldnames} != {CATALOG_COLUMNS}")
                return
            for line, row in enumerate(reader, start=2):
                if not row["image_id"] or row["image_id"] in build.catalog:
                    errors.append(f"catalog.csv line {line}: empty or repeated image_id")
                elif row["thumbnail"] and not THUMB_NAME.match(row["thumbnail"]):
                    errors.append(f"catalog.csv line {line}: bad thumbnail name")
                else:
                    build.catalog[row["image_id"]] = row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        errors.append(f"catalog.csv: not readable ({exc})")


def _check_pair(obj, line: int, slugs: set[str], build: CheckedBuild, errors: list[str]):
    if not isinstance(obj, dict):
        errors.append(f"pairs.jsonl line {line}: not a JSON object")
        return None
    if obj.get("variant") not in slugs:
        errors.append(f"pairs.jsonl line {line}: unknown variant {obj.get('variant')!r}")
        return None
    for key in ("query_id", "match_id"):
        row = build.catalog.get(obj.get(key)) if isinstance(obj.get(key), str) else None
        if row is None or not row["thumbnail"]:
            errors.append(f"pairs.jsonl line {line}: {key} {obj.get(key)!r} "
                          "has no catalog row with a thumbnail")
            return None
    rank = obj.get("rank", 1)
    if not isinstance(rank, int) or isinstance(rank, bool):
        errors.append(f"pairs.jsonl line {line}: rank must be an integer")
        return None
    distance = obj.get("distance")
    if distance is not None and not isinstance(distance, int | float):
        errors.append(f"pairs.jsonl line {line}: distance must be a number or null")
        return None
    return obj


def check_pairs(build: CheckedBuild, errors: list[str]) -> None:
    """Read pairs.jsonl; keep the rank-1 pairs and check every variant has the same queries."""
    slugs = {v["slug"] for v in build.manifest["variants"]}
    try:
        with open(build.path / "pairs.jsonl", encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError:
                    errors.append(f"pairs.jsonl line {line}: not valid JSON")
                    continue
                pair = _check_pair(obj, line, slugs, build, errors)
                if pair is not None and pair.get("rank", 1) == 1:
                    build.pairs.append(pair)
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"pairs.jsonl: not readable ({exc})")
        return
    queries: dict[str, set] = {s: set() for s in slugs}
    for p in build.pairs:
        queries[p["variant"]].add(p["query_id"])
    if len({frozenset(q) for q in queries.values()}) > 1 or not build.pairs:
        errors.append("pairs.jsonl: every variant must have rank-1 pairs for the same queries")


def check_images(build: CheckedBuild, errors: list[str]) -> None:
    """Check every thumbnail the catalog names exists, is an image, and matches its hash."""
    needed = {row["thumbnail"] for row in build.catalog.values() if row["thumbnail"]}
    for name in sorted(needed):
        path = build.path / "images" / name
        try:
            data = path.read_bytes()
        except OSError:
            errors.append(f"images/{name}: missing")
            continue
        if image_kind(data) is None:
            errors.append(f"images/{name}: not a PNG, JPEG or WebP image")
        elif hashlib.sha256(data).hexdigest() != THUMB_NAME.match(name).group(1):
            errors.append(f"images/{name}: content does not match its sha256 name")


def check_eval(build: CheckedBuild, errors: list[str]) -> None:
    """Read each variant's top-1 accuracy from eval.json."""
    data = _load_json(build.path / "eval.json", errors)
    if data is None:
        return
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, dict):
        errors.append("eval.json: 'variants' object missing")
        return
    for v in build.manifest["variants"]:
        acc = (variants.get(v["slug"]) or {}).get("top1_accuracy") \
            if isinstance(variants.get(v["slug"]) or {}, dict) else None
        build.accuracy[v["slug"]] = float(acc) if isinstance(acc, int | float) else None


def check_build(path: str | os.PathLike) -> CheckedBuild:
    """Read and validate a build directory; raise BuildError listing every problem."""
    path = Path(path)
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise BuildError([f"{path}: missing {', '.join(missing)}"])
    errors: list[str] = []
    manifest = _load_json(path / "manifest.json", errors)
    check_manifest(manifest, errors)
    if errors:
        raise BuildError(errors)
    build = CheckedBuild(path, manifest)
    for step in (check_catalog, check_pairs, check_images, check_eval):
        step(build, errors)
        if errors:
            raise BuildError(errors)
    return build


def copy_images(build: CheckedBuild, image_dir: str) -> int:
    """Copy the shown thumbnails into the image store; return how many were new."""
    os.makedirs(image_dir, exist_ok=True)
    names = {build.catalog[p[k]]["thumbnail"] for p in build.pairs
             for k in ("query_id", "match_id")}
    copied = 0
    for name in names:
        target = os.path.join(image_dir, name)
        if os.path.exists(target):
            continue
        tmp = f"{target}.{os.getpid()}.tmp"
        shutil.copyfile(build.path / "images" / name, tmp)
        os.replace(tmp, target)
        copied += 1
    return copied


def _upsert_build(manifest: dict) -> Build:
    row = db.session.scalar(sa.select(Build).where(Build.build_id == manifest["build_id"]))
    if row is None:
        row = Build(build_id=manifest["build_id"], format_version=manifest["format_version"],
                    engine_version=manifest.get("engine_version"),
                    created_at=manifest.get("created_at"))
        db.session.add(row)
        db.session.flush()
    return row


def lineage_of(manifest: dict, spec: dict) -> tuple[str | None, int | None, str | None]:
    """Return (parent slug, round, lineage JSON text) of a retrained variant, else Nones."""
    info = spec.get("retrained")
    if not info:
        return None, None, None
    record = next((r for r in manifest.get("lineage", []) if isinstance(r, dict)
                   and r.get("challenger") == spec["slug"]), None)
    return info["parent"], info["round"], json.dumps(record or info, sort_keys=True)


def _upsert_variants(build: CheckedBuild, build_row: Build) -> dict[str, Variant]:
    existing = {v.slug: v for v in db.session.scalars(sa.select(Variant))}
    for spec in build.manifest["variants"]:
        variant = existing.get(spec["slug"])
        if variant is None:
            variant = existing[spec["slug"]] = Variant(slug=spec["slug"], build=build_row)
            db.session.add(variant)
        parent, round_, lineage = lineage_of(build.manifest, spec)
        values = {"name": spec["name"], "network": spec.get("network"),
                  "layer": spec.get("layer"), "metric": spec.get("metric"),
                  "control": spec.get("control") is True,
                  "offline_accuracy": build.accuracy.get(spec["slug"]),
                  "parent_slug": parent, "round": round_, "lineage": lineage}
        for key, value in values.items():
            if getattr(variant, key) != value:
                setattr(variant, key, value)
    db.session.flush()
    return existing


def _upsert_images(build: CheckedBuild) -> dict[str, int]:
    used = {p[k] for p in build.pairs for k in ("query_id", "match_id")}
    existing = {(i.image_id, i.file): i for i in db.session.scalars(
        sa.select(Image).where(Image.image_id.in_(used)))}
    for image_id in used:
        row = build.catalog[image_id]
        if (image_id, row["thumbnail"]) not in existing:
            image = Image(image_id=image_id, file=row["thumbnail"], category=row["category"],
                          item_id=row["item_id"] or None)
            db.session.add(image)
            existing[(image_id, row["thumbnail"])] = image
    db.session.flush()
    return {image_id: existing[(image_id, build.catalog[image_id]["thumbnail"])].id
            for image_id in used}


def import_build(path: str | os.PathLike, image_dir: str) -> dict:
    """Validate and import a build in one transaction; return what was added."""
    build = check_build(path)
    copy_images(build, image_dir)
    try:
        build_row = _upsert_build(build.manifest)
        variants = _upsert_variants(build, build_row)
        images = _upsert_images(build)
        existing = {tuple(row) for row in db.session.execute(
            sa.select(Pair.variant_id, Pair.query_id, Pair.match_id))}
        added = 0
        for p in build.pairs:
            key = (variants[p["variant"]].id, images[p["query_id"]], images[p["match_id"]])
            if key in existing:
                continue
            existing.add(key)
            db.session.add(Pair(variant_id=key[0], query_id=key[1], match_id=key[2],
                                build_id=build_row.id, rank=p.get("rank", 1),
                                distance=p.get("distance")))
            added += 1
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"build_id": build.manifest["build_id"], "variants": len(build.manifest["variants"]),
            "pairs_added": added, "pairs_in_build": len(build.pairs)}
