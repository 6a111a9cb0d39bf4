"""Tried photos as retraining queries: the vote file's photo records, checked against a build.

A photo vote (source `photo`) judges a visitor's photo against a catalog item. The
photo is no build row, so retraining reads what the query service computed of it
(docs/build-format.md, "Vote export": the photo records of a JSONL export, format 2):
a row for every feature key and every white-box family. Those rows were computed by
the networks of the build the service searched; a retrained build links its parent's
networks, so a photo searched on any build of this build's lineage can be used.

A photo is set aside, and counted by why, when the file has no record of it (a CSV
export, or format 1), when the record lacks a feature key or family this build has
(a photo stored before the service sent it), or when another build's networks made
it. A record whose rows do not have this build's lengths is refused: that file is
not what the service wrote.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engine.builder.whitebox import FAMILIES, KEY_PREFIX, family_lengths
from engine.formats.builddir import OpenBuild
from engine.formats.votes import PhotoQuery
from engine.retrain.model import RetrainRefused


@dataclass
class PhotoRows:
    """The photos retraining can use, as extra rows after the build's and the pool's."""

    query_ids: list[str] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (E, d)
    whitebox: dict[str, np.ndarray] = field(default_factory=dict)  # family -> (E, d)
    set_aside: dict[str, int] = field(default_factory=dict)  # why -> photos

    def __len__(self) -> int:
        return len(self.query_ids)


def lineage_builds(build: OpenBuild) -> set[str]:
    """Return the build ids whose networks are this build's: itself and its ancestors."""
    return {build.build_id} | {entry["parent_build_id"]
                               for entry in build.manifest.get("lineage", [])}


def _why_not(photo: PhotoQuery | None, keys: list[str], builds: set[str]) -> str | None:
    if photo is None:
        return "no_photo_record"
    if photo.build_id not in builds:
        return "other_build"
    wanted = keys + [KEY_PREFIX + f for f in FAMILIES]
    if any(k not in photo.features for k in wanted):
        return "missing_features"
    return None


def _check_lengths(photo: PhotoQuery, lengths: dict[str, int]) -> None:
    for key, length in lengths.items():
        if len(photo.features[key]) != length:
            raise RetrainRefused(f"photo {photo.query_id}: its {key} row has "
                                 f"{len(photo.features[key])} values, this build's have "
                                 f"{length}; the vote file is not what the service wrote")


def photo_rows(build: OpenBuild, photos: dict[str, PhotoQuery], voted: list[str]) -> PhotoRows:
    """Return the usable photos among `voted` (photo query ids, in first-vote order)."""
    keys, builds = build.feature_keys, lineage_builds(build)
    lengths = {key: build.features(key).shape[1] for key in keys} | \
        {KEY_PREFIX + f: n for f, n in family_lengths().items()}
    out, why = PhotoRows(), Counter()
    usable = []
    for query_id in dict.fromkeys(voted):
        photo = photos.get(query_id)
        reason = _why_not(photo, keys, builds)
        if reason:
            why[reason] += 1
            continue
        _check_lengths(photo, lengths)
        usable.append(photo)
    out.query_ids = [p.query_id for p in usable]
    out.features = {k: np.array([p.features[k] for p in usable], np.float16).reshape(
        len(usable), lengths[k]) for k in keys}
    out.whitebox = {f: np.array([p.features[KEY_PREFIX + f] for p in usable], np.float32)
                    .reshape(len(usable), lengths[KEY_PREFIX + f]) for f in FAMILIES}
    out.set_aside = dict(why)
    return out
