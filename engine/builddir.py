"""Read a finished build directory (docs/build-format.md) as a consumer sees it.

The web app imports a build; the crowd and retraining read the same files here:
the manifest, catalog.csv, the rank-1 pairs and the thumbnails. Torch-free.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

FORMAT_VERSION = 1


class BuildDirError(ValueError):
    """A directory that is not a readable build; the message says what is missing."""


@dataclass(frozen=True)
class CatalogImage:
    image_id: str
    category: str
    item_id: str  # "" when the source has none
    split: str
    thumbnail: str  # "" when no pair shows the image


@dataclass(frozen=True)
class BuildPair:
    query_id: str
    match_id: str
    variant: str


@dataclass
class BuildDir:
    """A build's manifest, catalog rows by image id, and rank-1 pairs in file order."""

    path: Path
    manifest: dict
    images: dict[str, CatalogImage]
    pairs: list[BuildPair]

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def variants(self) -> list[dict]:
        return self.manifest["variants"]

    @property
    def control_slugs(self) -> set[str]:
        return {v["slug"] for v in self.variants if v.get("control")}

    def thumbnail_path(self, image_id: str) -> Path:
        return self.path / "images" / self.images[image_id].thumbnail


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise BuildDirError(f"{path} is not a build directory (no manifest.json); "
                            "make one with `python -m engine build --out DIR`") from None
    except ValueError as exc:
        raise BuildDirError(f"{path}/manifest.json is not valid JSON: {exc}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BuildDirError(f"{path}: build format_version {version!r} is not known; "
                            f"this engine reads format_version {FORMAT_VERSION}")
    if not manifest.get("variants") or not manifest.get("build_id"):
        raise BuildDirError(f"{path}/manifest.json lacks build_id or variants")
    return manifest


def _read_images(path: Path) -> dict[str, CatalogImage]:
    with open(path / "catalog.csv", newline="") as f:
        return {r["image_id"]: CatalogImage(r["image_id"], r["category"], r.get("item_id") or "",
                                            r["split"], r.get("thumbnail") or "")
                for r in csv.DictReader(f)}


def _read_pairs(path: Path, images: dict, slugs: set[str]) -> list[BuildPair]:
    pairs = []
    with open(path / "pairs.jsonl") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("rank", 1) != 1:
                continue
            pair = BuildPair(obj["query_id"], obj["match_id"], obj["variant"])
            if pair.variant not in slugs or pair.query_id not in images \
                    or pair.match_id not in images:
                raise BuildDirError(f"{path}/pairs.jsonl line {number}: unknown variant or "
                                    "image id")
            pairs.append(pair)
    return pairs


def read_build(path: str | Path) -> BuildDir:
    """Read a build directory's manifest, catalog and rank-1 pairs; raise BuildDirError."""
    path = Path(path)
    if not path.is_dir():
        raise BuildDirError(f"build directory not found: {path}")
    manifest = _read_manifest(path)
    try:
        images = _read_images(path)
        pairs = _read_pairs(path, images, {v["slug"] for v in manifest["variants"]})
    except FileNotFoundError as exc:
        raise BuildDirError(f"{path}: missing {Path(exc.filename).name}") from None
    except (KeyError, ValueError) as exc:
        if isinstance(exc, BuildDirError):
            raise
        raise BuildDirError(f"{path}: unreadable catalog.csv or pairs.jsonl ({exc})") from None
    return BuildDir(path, manifest, images, pairs)
