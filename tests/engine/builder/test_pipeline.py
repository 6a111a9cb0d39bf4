"""End-to-end builds: a small real Fashion-MNIST slice on CPU with the real networks."""

import csv
import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from engine.builder.catalog import DEFAULT_PATHS
from engine.builder.index import load_annoy
from engine.builder.pipeline import build
from engine.formats.builddir import load_features
from engine.formats.state import STATE_FILE, BuildOptions

OFFLINE = ["vgg16-imagenet.pool5.l1", "vgg16-imagenet.pool5.hamming",
           "mobilenet_v2-imagenet.gap.l2", "mobilenet_v2-imagenet.gap.hamming",
           "vgg16-fashion.fc6.l1", "vgg16-fashion.fc7.l2", "vgg16-fashion.fc6.hamming"]
SMALL = dict(limit=200, queries=20, image_size=32, device="cpu", variants="offline", seed=0)

pytestmark = pytest.mark.skipif(not DEFAULT_PATHS["fashion-mnist"].is_dir(),
                                reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture(scope="module")
def engine_real_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "build"
    build(out, BuildOptions(**SMALL))
    return out


def _pairs(out):
    return [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]


def _table(out):
    with open(out / "catalog.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_manifest_describes_the_build(engine_real_build):
    manifest = json.loads((engine_real_build / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert [v["slug"] for v in manifest["variants"]] == OFFLINE + ["random"]
    assert [v["control"] for v in manifest["variants"]].count(True) == 1
    assert manifest["counts"] == {"catalog": 200, "queries": 20, "skipped_images": 0,
                                  "pairs": 160}
    assert len(manifest["categories"]) == 10
    assert manifest["source"]["variant_set"] == "offline"
    assert len(manifest["build_id"]) == 16
    assert not list(engine_real_build.parent.glob(".build.tmp-*"))


@pytest.mark.slow
def test_every_variant_answers_the_same_queries_never_with_a_copy(engine_real_build):
    pairs = _pairs(engine_real_build)
    queries = {v: {p["query_id"] for p in pairs if p["variant"] == v} for v in OFFLINE + ["random"]}
    assert all(q == queries["random"] for q in queries.values())
    assert len(queries["random"]) == 20
    state = json.loads((engine_real_build / STATE_FILE).read_text())
    row_hash = dict(zip((r["image_id"] for r in _table(engine_real_build)),
                        state["pixel_hash"], strict=True))
    assert all(row_hash[p["query_id"]] != row_hash[p["match_id"]] for p in pairs)
    assert all(p["rank"] == 1 for p in pairs)
    assert all((p["distance"] is None) == (p["variant"] == "random") for p in pairs)


@pytest.mark.slow
def test_shown_images_have_content_named_thumbnails(engine_real_build):
    rows = {r["image_id"]: r for r in _table(engine_real_build)}
    shown = {p["query_id"] for p in _pairs(engine_real_build)} | {
        p["match_id"] for p in _pairs(engine_real_build)}
    for image_id in shown:
        name = rows[image_id]["thumbnail"]
        data = (engine_real_build / "images" / name).read_bytes()
        assert name == hashlib.sha256(data).hexdigest() + ".png"
        with Image.open(engine_real_build / "images" / name) as im:
            assert max(im.size) >= 256
    assert all(not r["thumbnail"] for i, r in rows.items() if i not in shown)


@pytest.mark.slow
def test_evaluation_features_indexes_and_maps(engine_real_build):
    report = json.loads((engine_real_build / "eval.json").read_text())
    assert set(report["variants"]) == set(OFFLINE) | {"random"}
    for slug in OFFLINE:
        entry = report["variants"][slug]
        assert 0 <= entry["top1_accuracy"] <= 1
        assert entry["index_vs_exact"]["top1_agreement"] >= 0.99
        assert entry["top1_accuracy"] > report["variants"]["random"]["top1_accuracy"]
    assert "bit_balance" in report["variants"]["vgg16-fashion.fc6.hamming"]["index"]
    assert "| network | layer |" in (engine_real_build / "eval.md").read_text()
    assert ".tmp-" not in (engine_real_build / "eval.json").read_text()  # no stale paths
    for key in ("vgg16-imagenet.pool5", "mobilenet_v2-imagenet.gap", "vgg16-fashion.fc6",
                "vgg16-fashion.fc7"):
        feats = load_features(engine_real_build, key)
        assert feats.dtype == np.float16 and len(feats) == 220
        assert np.isfinite(np.asarray(feats, np.float32)).all()
        assert (engine_real_build / "tsne" / f"{key}.png").is_file()
    index = load_annoy(engine_real_build / "indexes" / "vgg16-imagenet.pool5.l1.ann", 512, "l1")
    assert index.get_n_items() == 200
    assert any((engine_real_build / "checkpoints").iterdir())


@pytest.mark.slow
def test_same_seed_gives_identical_pairs(engine_real_build, tmp_path):
    again = build(tmp_path / "again", BuildOptions(**SMALL), tsne=False)
    first = json.loads((engine_real_build / "manifest.json").read_text())
    assert (tmp_path / "again" / "pairs.jsonl").read_bytes() == \
        (engine_real_build / "pairs.jsonl").read_bytes()
    assert again["build_id"] == first["build_id"]


def test_a_stopped_build_keeps_its_parts_and_resumes(engine_fmnist_dir, engine_fake_features,
                                                     monkeypatch, tmp_path):
    import engine.builder.pipeline

    real = engine.builder.pipeline.evaluate_stage

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(engine.builder.pipeline, "evaluate_stage", boom)
    builds = tmp_path / "builds"
    opts = BuildOptions(catalog_path=str(engine_fmnist_dir), limit=30, queries=5,
                        variants="offline", device="cpu", shard_rows=64)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(builds / "out", opts)
    assert [p.name for p in builds.iterdir()] == ["out.partial"]  # never looks complete
    assert not (builds / "out.partial" / "manifest.json").exists()
    passes = len(engine_fake_features.calls)
    monkeypatch.setattr(engine.builder.pipeline, "evaluate_stage", real)
    with pytest.raises(ValueError, match="other options"):
        build(builds / "out", BuildOptions(**{**asdict(opts), "seed": 1}))
    build(builds / "out", opts, tsne=False)
    assert len(engine_fake_features.calls) == passes  # every part kept: nothing recomputed
    assert sorted(p.name for p in builds.iterdir()) == ["out"]


def test_a_build_that_fails_before_features_leaves_nothing(engine_fmnist_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown variant set"):
        build(tmp_path / "b" / "out", BuildOptions(catalog_path=str(engine_fmnist_dir),
                                                   variants="nope"))
    assert list((tmp_path / "b").iterdir()) == []


def test_force_replaces_an_existing_build(engine_fmnist_dir, engine_fake_features, tmp_path):
    out = tmp_path / "builds" / "out"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("old")
    opts = BuildOptions(catalog_path=str(engine_fmnist_dir), limit=30, queries=5,
                        variants="offline", device="cpu")
    with pytest.raises(ValueError, match="pass --force"):
        build(out, opts)
    build(out, opts, force=True, tsne=False)
    assert (out / "manifest.json").is_file() and not (out / "old.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_a_repeated_catalog_builds_and_says_so(engine_fmnist_dir, engine_fake_features,
                                               tmp_path):
    opts = BuildOptions(catalog_path=str(engine_fmnist_dir), limit=30, queries=5,
                        variants="offline", device="cpu", repeat=2)
    manifest = build(tmp_path / "out", opts, tsne=False)
    assert manifest["counts"]["catalog"] == 60 and manifest["source"]["repeat"] == 2
    ids = [r["image_id"] for r in _table(tmp_path / "out") if r["split"] == "catalog"]
    assert sum(i.endswith("~1") for i in ids) == 30


def test_a_faiss_build_moves_and_finds_what_the_annoy_build_finds(engine_fmnist_dir,
                                                                  engine_fake_features,
                                                                  tmp_path):
    opts = dict(catalog_path=str(engine_fmnist_dir), limit=300, queries=20,
                variants="offline", device="cpu")
    build(tmp_path / "annoy", BuildOptions(**opts), tsne=False)
    build(tmp_path / "faiss.tmp", BuildOptions(**opts, index="faiss"), tsne=False)
    (tmp_path / "faiss.tmp").rename(tmp_path / "faiss")
    manifest = json.loads((tmp_path / "faiss" / "manifest.json").read_text())
    kinds = {slug: i["kind"] for slug, i in manifest["indexes"].items()}
    assert set(kinds.values()) == {"ivf-flat", "faiss-binary-flat"}
    assert all((tmp_path / "faiss" / i["file"]).exists() for i in manifest["indexes"].values())
    annoy, faiss = _pairs(tmp_path / "annoy"), _pairs(tmp_path / "faiss")
    same = [a["match_id"] == f["match_id"] for a, f in zip(annoy, faiss, strict=True)]
    assert len(annoy) == len(faiss) and np.mean(same) >= 0.95


@pytest.mark.slow
def test_the_web_app_accepts_the_build(engine_real_build):
    builds = pytest.importorskip("webapp.jobs.builds")
    checked = builds.check_build(engine_real_build)
    assert len(checked.pairs) == 160
