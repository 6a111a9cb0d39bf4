"""`python -m engine retrain`: votes in, a challenger build out (docs/build-format.md).

Reads a vote export, opens the parent build once, chooses the parent variant, learns a
metric (engine.retrain.model) on frozen feature families (engine.retrain.families),
from catalog votes and from votes on tried photos the file carries (engine.retrain.photos), and,
when the gate lets it through, has engine.retrain.publish write a new build directory:
the same catalog and thumbnails plus a fresh query pool (engine.retrain.pool) on which
every variant, the parent, the control and the challenger, has its pairs, with the
challenger's model and its lineage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.formats.builddir import OpenBuild, open_build
from engine.formats.votes import VoteFile, read_votes
from engine.retrain.families import FamilySpace
from engine.retrain.model import (
    MIN_VOTES,
    Model,
    RetrainRefused,
    family_names,
    learn,
    weight_shares,
)
from engine.retrain.photo_metric import learn_photo_weights, photo_report
from engine.retrain.photos import PhotoRows, photo_rows
from engine.retrain.pool import Pool, fresh_pool
from engine.retrain.publish import MODELS_DIR, write_challenger
from engine.stats import wilson_interval

logger = logging.getLogger(__name__)

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
    photo: dict | None = None  # the photo weights' gate (engine.retrain.photo_metric)


# ---------------------------------------------------------------- votes and parent

def usable_votes(votes, rows: dict[str, int], photos: set[str] = frozenset()
                 ) -> tuple[list, dict]:
    """Return the judged votes retraining can use, and what was left out: a catalog
    vote whose images are build rows, a photo vote whose photo is among the usable
    `photos` (engine.retrain.photos) and whose match is a build row."""
    counts = Counter(total=len(votes), photo_votes=0)
    usable = []
    for v in votes:
        photo = v.source == "photo"
        if not v.judged:
            counts["skips"] += 1
        elif photo and v.query_id not in photos:
            counts["photo_votes_set_aside"] += 1
        elif v.match_id not in rows or (not photo and v.query_id not in rows):
            counts["unknown_images"] += 1
        else:
            usable.append(v)
            counts["photo_votes"] += photo
    counts["usable"] = len(usable)
    return usable, dict(counts)


def refuse_if_unfit(usable: list, counts: dict) -> None:
    """Raise RetrainRefused when the votes cannot train anything."""
    if counts["total"] == 0:
        raise RetrainRefused("the vote file has no votes")
    if not usable:
        raise RetrainRefused(f"no usable votes among {counts['total']}: {_why_none(counts)}")
    catalog = [v for v in usable if v.source == "catalog"]  # they learn the metric
    verdicts = {v.verdict for v in catalog}
    if len(verdicts) == 1:
        raise RetrainRefused(f"all {len(catalog)} usable catalog votes are {verdicts.pop()}: "
                             "a metric needs both dope and nope judgments")
    if len(catalog) < MIN_VOTES:
        raise RetrainRefused(f"{len(catalog)} usable catalog votes; retraining needs at least "
                             f"{MIN_VOTES} judged (dope or nope) votes from the game (photo "
                             "votes only refine the challenger for photos)")


def _why_none(counts: dict) -> str:
    why = []
    if counts.get("unknown_images"):
        why.append(f"{counts['unknown_images']} judged vote(s) name images this build does "
                   "not have")
    if counts.get("photo_votes_set_aside"):
        why.append(f"{counts['photo_votes_set_aside']} photo vote(s) are set aside (photos: "
                   f"{counts.get('photos_set_aside', {})}; a .jsonl export of format 2 "
                   "carries their features)")
    return "; ".join(why) or "every vote is a skip"


def choose_parent(parent: str, usable: list, manifest: dict) -> tuple[str, str]:
    """Return (parent slug, why): the one asked for, or the best Wilson lower bound."""
    real = [v["slug"] for v in manifest["variants"] if not v.get("control")]
    if parent != "auto":
        if parent not in real:
            raise RetrainRefused(f"unknown parent {parent!r}; this build's real variants: "
                                 f"{', '.join(real)}")
        return parent, "asked for with --parent"
    tally: dict[str, list[int]] = {s: [0, 0] for s in real}
    # The catalog votes choose: photo votes are another population (docs/retrain.md).
    for v in [v for v in usable if v.source == "catalog"]:
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

    build: OpenBuild  # the parent build, opened once
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
    sources: np.ndarray  # each vote's source: catalog or photo


def usable_photos(build: OpenBuild, vote_file: VoteFile, photo_votes: str) -> PhotoRows:
    """Return the tried photos retraining may use (none with photo_votes "ignore")."""
    voted = [v.query_id for v in vote_file.votes if v.source == "photo" and v.judged]
    if photo_votes == "ignore":
        return PhotoRows(set_aside={"ignored": len(set(voted))} if voted else {})
    return photo_rows(build, vote_file.photos, voted)


def training_data(space: FamilySpace, usable: list, model: Model) -> tuple[np.ndarray, ...]:
    """Return (X, y, groups, sources): scaled family distances of the judged pairs."""
    rows = space.build.row_of | space.photo_row()
    q = np.array([rows[v.query_id] for v in usable])
    m = np.array([rows[v.match_id] for v in usable])
    raw = space.raw(model.base, q, m)
    if not model.scales:  # the catalog votes' medians: photo votes never move the metric
        medians = np.median(raw[[v.source == "catalog" for v in usable]], axis=0)
        model.scales = {f: float(s) if s > 0 else float(raw[:, i].mean() or 1.0)
                        for i, (f, s) in enumerate(zip(model.families, medians, strict=True))}
    X = raw / np.array([model.scales[f] for f in model.families])
    y = np.array([v.verdict == "dope" for v in usable], float)
    return (X, y, np.array([v.query_id for v in usable]),
            np.array([v.source for v in usable]))


def prepare(build_dir: Path, votes_path: Path, *, parent: str = "auto", queries: int = 500,
            seed: int = 0, photo_votes: str = "report") -> Training:
    """Read and check votes and build, choose the parent, draw the pool, make the data."""
    vote_file = read_votes(votes_path)
    build = open_build(build_dir)
    photos = usable_photos(build, vote_file, photo_votes)
    usable, counts = usable_votes(vote_file.votes, build.row_of, set(photos.query_ids))
    if photos.set_aside:
        counts["photos_set_aside"] = photos.set_aside
    refuse_if_unfit(usable, counts)
    slug, reason = choose_parent(parent, usable, build.manifest)
    saved = load_models(build.path)
    model, _ = parent_model(slug, saved, family_names(build.feature_keys))
    round_ = len(build.manifest.get("lineage", [])) + 1
    pool = fresh_pool(build, {v.query_id for v in vote_file.votes}, queries, seed)
    space = FamilySpace(build, pool, build.feature_keys, photos)
    X, y, groups, sources = training_data(space, usable, model)
    return Training(build, saved, pool, space, slug, reason, model, round_,
                    counts | {"file_sha256": sha256_file(votes_path)}, X, y, groups, sources)


def retrain(build_dir: str | Path, votes_path: str | Path, out: str | Path, *,
            parent: str = "auto", queries: int = 500, seed: int = 0,
            photo_votes: str = "report", write_gated: bool = False) -> RetrainResult:
    """Learn a challenger from votes; write its build to `out` only if the gate passes
    (or, for experiments that measure the gate, `write_gated` anyway)."""
    build_dir, out = Path(build_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output directory {out} exists and is not empty")
    t = prepare(build_dir, Path(votes_path), parent=parent, queries=queries, seed=seed,
                photo_votes=photo_votes)
    catalog = t.sources == "catalog"
    learned = learn(t.X[catalog], t.y[catalog], t.groups[catalog], t.parent_model, seed=seed)
    result = RetrainResult(learned.published, t.parent, t.parent_reason, learned.gate, t.counts)
    if not learned.published and not write_gated:
        return result
    model = learned.model
    names = {v["slug"]: v["name"] for v in t.build.manifest["variants"]}
    result.slug = f"{t.parent_model.base}.r{t.round}-{t.counts['file_sha256'][:6]}"
    result.name = (f"Retrained on {t.counts['usable']:,} votes (from {names[t.parent]})")
    model.report = {"round": t.round, "shares": weight_shares(model, t.X[catalog])}
    result.learned = {"weights": {f: round(w, 5) for f, w in model.weights.items()},
                      "shares": model.report["shares"]}
    if (~catalog).any():
        refine_for_photos(t, model, result, seed, learn_weights=photo_votes == "learn")
    result.manifest = write_challenger(t, model, result, out, seed=seed)
    return result


def refine_for_photos(t: Training, model: Model, result: RetrainResult, seed: int, *,
                      learn_weights: bool) -> None:
    """Score the challenger on the photo votes; with learn_weights, learn photo weights
    from them too and keep them on the model if they pass their gate."""
    photo = t.sources == "photo"
    if not learn_weights:
        result.photo = photo_report(t.X[photo], t.y[photo], t.groups[photo], model,
                                    t.parent_model)
        return
    found = learn_photo_weights(t.X[photo], t.y[photo], t.groups[photo], model,
                                t.parent_model, seed=seed)
    model.photo_weights = found.weights
    result.photo = found.gate | {"used": found.weights is not None}
    if found.weights is not None:
        result.learned["photo_shares"] = found.shares
