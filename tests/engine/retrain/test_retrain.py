"""Retraining from votes on a small real build: refusals, the prior, the pool, rounds.

The build (conftest.py) is made by the engine itself (a Fashion-MNIST slice at 32 px on
CPU); the votes come from the simulated crowd, written in the export format.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from retrainkit import FLAT, TONE, run_retrain, simulate

from engine.crowd.simulate import Population, judge_build
from engine.crowd.taste import load_taste
from engine.formats.builddir import read_build
from engine.formats.votes import Vote, export_header, read_votes, write_votes
from engine.retrain.challenger import GATE_FAILED, prepare
from engine.retrain.model import Model, auc, fit_logistic
from engine.retrain.publish import pool_matches, rerank

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


# ---------------------------------------------------------------- refusals

def rewrite(votes_path: Path, out: Path, change) -> Path:
    """Write a copy of a vote file with each vote changed by `change` (None drops it)."""
    vf = read_votes(votes_path)
    kept = [v for v in (change(v) for v in vf.votes) if v is not None]
    write_votes(out, vf.header, kept)
    return out


def as_dict(v: Vote, **changes) -> Vote:
    return Vote(**(v.to_dict() | changes))


@pytest.mark.parametrize("case, message", [
    ("header", "not a Dope or Nope vote export"),
    ("version", "format_version 9 is not known"),
    ("skips", "every vote is a skip"),
    ("one_verdict", "are dope: a metric needs both"),
    ("few", "retraining needs at least 50"),
    ("foreign", "name images this build does not have"),
    ("parent", "unknown parent 'nosuch'"),
])
def test_retrain_refuses_and_writes_nothing(small, tone_votes, tmp_path, case, message):
    path, extra = tmp_path / "votes.jsonl", []
    if case == "header":
        path.write_text('{"kind": "something"}\n')
    elif case == "version":
        lines = tone_votes.read_text().splitlines()
        header = json.loads(lines[0]) | {"format_version": 9}
        path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    elif case == "skips":
        rewrite(tone_votes, path, lambda v: as_dict(v, verdict="skip"))
    elif case == "one_verdict":
        rewrite(tone_votes, path, lambda v: as_dict(v, verdict="dope"))
    elif case == "few":
        kept = iter(range(20))
        rewrite(tone_votes, path, lambda v: v if next(kept, None) is not None else None)
    elif case == "foreign":
        rewrite(tone_votes, path, lambda v: as_dict(v, query_id="elsewhere-1"))
    else:
        path, extra = tone_votes, ["--parent", "nosuch"]
    out = tmp_path / "out"
    result = run_retrain(small, path, out, *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_votes_on_unknown_images_are_counted(small, tone_votes, tmp_path):
    odd = iter(range(10**6))
    path = rewrite(tone_votes, tmp_path / "v.jsonl",
                   lambda v: as_dict(v, match_id="elsewhere") if next(odd) % 10 == 0 else v)
    altered = [v for v in read_votes(path).votes if v.match_id == "elsewhere"]
    t = prepare(small, path, queries=30, seed=1)
    # A skip is a skip first, whatever its images: only judged votes count as unknown.
    assert t.counts["unknown_images"] == sum(v.judged for v in altered) > 100
    assert t.counts["usable"] == 1500 - t.counts["unknown_images"] - t.counts["skips"]


# ---------------------------------------------------------------- the prior and the gate

def test_the_parent_model_ranks_exactly_as_the_parent(small, tone_votes):
    t = prepare(small, tone_votes, parent="vgg16-fashion.fc6.l1", queries=30, seed=1)
    model = Model(t.parent, t.parent_model.families, t.parent_model.scales, {"base": 2.5})
    reranked = rerank(t.space, model, t.pool)
    assert np.array_equal(reranked[:, 0], t.pool.candidates[t.parent][0][:, 0])
    # With no effective votes (an infinitely strong prior) the fit stays on the prior.
    X = np.random.default_rng(0).random((40, len(model.families)))
    y = (np.arange(40) % 2).astype(float)
    _, w = fit_logistic(X, y, lam=1e12, prior=model.vector())
    assert np.allclose(w, model.vector(), atol=1e-6)
    matches = pool_matches(t.space, t.pool, {"challenger": model},
                           [{"slug": "challenger"}], seed=0)
    assert np.array_equal(matches["challenger"][:, 0], t.pool.candidates[t.parent][0][:, 0])


def test_auc_against_hand_counted_values():
    assert auc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 1.0
    assert auc(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0])) == 0.25
    assert auc(np.array([1.0, 1.0]), np.array([1, 0])) == 0.5


def test_gate_refuses_a_challenger_no_better_than_its_parent(small, tmp_path):
    votes = simulate(small, FLAT, 800, tmp_path / "flat.jsonl", seed=4)
    out = tmp_path / "out"
    result = run_retrain(small, votes, out)
    assert result.exit_code == GATE_FAILED, result.output
    assert "no better than its parent" in result.output and "AUC challenger" in result.output
    assert not out.exists()


# ---------------------------------------------------------------- the challenger's build

def test_challenger_build_has_a_fresh_pool_for_every_variant(small, tone_votes, round1):
    built, parent = read_build(round1), read_build(small)
    voted = {v.query_id for v in read_votes(tone_votes).votes}
    pool = {p.query_id for p in built.pairs}
    assert len(pool) == 30 and not pool & voted
    assert not pool & {i for i, img in parent.images.items() if img.split == "query"}
    by_variant = {}
    for p in built.pairs:
        by_variant.setdefault(p.variant, set()).add(p.query_id)
    assert set(by_variant) == {v["slug"] for v in built.variants}
    assert all(queries == pool for queries in by_variant.values())
    # It names every image the parent did (the game still shows the old pairs).
    assert all(built.images[i].thumbnail == img.thumbnail and
               (round1 / "images" / img.thumbnail).is_file()
               for i, img in parent.images.items() if img.thumbnail)
    challenger = built.variants[-1]
    assert challenger["retrained"]["parent"] in {v["slug"] for v in parent.variants}
    assert challenger["name"].startswith("Retrained on ")
    lineage = built.manifest["lineage"][0]
    assert lineage["votes"]["file_sha256"] == challenger["retrained"]["votes_sha256"]
    assert lineage["parent_build_id"] == parent.build_id != built.build_id
    assert set(lineage["learned"]["shares"]) >= {"base", "wb:intensity"}
    scores = json.loads((round1 / "eval.json").read_text())["variants"]
    assert "top1_accuracy" in scores[challenger["slug"]]
    old = json.loads((small / "eval.json").read_text())["variants"]
    for slug in old:  # existing variants keep their figure; the fresh pool's stands beside
        assert scores[slug]["top1_accuracy"] == old[slug]["top1_accuracy"]
        assert scores[slug]["fresh_pool"]["queries"] == 30


def test_a_challenger_learned_the_taste(small, round1):
    taste = load_taste_text(TONE, round1)
    truth = judge_build(read_build(round1), taste, Population.from_taste(taste)).truth
    challenger = read_build(round1).variants[-1]
    assert truth[challenger["slug"]] > truth[challenger["retrained"]["parent"]]


def load_taste_text(text: str, where: Path):
    path = where.parent / "taste-copy.toml"
    path.write_text(text)
    return load_taste(str(path))


def test_round_two_records_its_own_parent(round1, tmp_path):
    votes = simulate(round1, TONE, 1500, tmp_path / "round2.jsonl", seed=6)
    out = tmp_path / "round2"
    # Round 1's challenger already learned this taste; an indexed variant still has room.
    result = run_retrain(round1, votes, out, "--parent", "mobilenet_v2-imagenet.gap.l2")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    first, second = manifest["lineage"]
    assert (first["round"], second["round"]) == (1, 2)
    assert second["parent_build_id"] == json.loads((round1 / "manifest.json").read_text())[
        "build_id"]
    slugs = [v["slug"] for v in manifest["variants"]]
    assert manifest["variants"][-1]["retrained"]["round"] == 2
    assert second["parent"] == "mobilenet_v2-imagenet.gap.l2"
    assert second["challenger"].endswith(f"r2-{second['votes']['file_sha256'][:6]}")
    assert second["parent"] in slugs and first["challenger"] in slugs
    assert (out / "retrained" / f"{first['challenger']}.json").is_file()


def test_read_votes_header_builder_roundtrip(tmp_path):
    header = export_header(["b"], "2026-01-01T00:00:00+00:00")
    write_votes(tmp_path / "v.jsonl", header, [])
    assert read_votes(tmp_path / "v.jsonl").header == header
