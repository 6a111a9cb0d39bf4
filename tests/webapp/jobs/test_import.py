import hashlib
import json
import shutil

import pytest
import sqlalchemy as sa
from buildmaker import DEFAULT_VARIANTS, _png, write_build
from conftest import cast

from webapp.extensions import db
from webapp.jobs.builds import BuildError, import_build
from webapp.models import Pair, Variant, Vote


def snapshot(app):
    """Return every row of every table, for before/after comparisons."""
    with app.app_context():
        return {table.name: sorted(map(tuple, db.session.execute(sa.select(table))), key=repr)
                for table in db.metadata.sorted_tables}


def test_import_good_build(app, runner, build_dir):
    result = runner.invoke(args=["import-build", str(build_dir)])
    assert result.exit_code == 0, result.output
    assert "5 variants" in result.output
    with app.app_context():
        variants = db.session.scalars(sa.select(Variant)).all()
        assert len(variants) == 5
        assert [v.slug for v in variants if v.control] == ["random"]
        assert {v.slug: v.offline_accuracy for v in variants}["random"] == 0.1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Pair)) == 60


def test_import_is_idempotent(app, runner, build_dir):
    runner.invoke(args=["import-build", str(build_dir)])
    before = snapshot(app)
    result = runner.invoke(args=["import-build", str(build_dir)])
    assert result.exit_code == 0
    assert "0 new pairs" in result.output
    assert snapshot(app) == before


def test_newer_build_adds_variants_and_keeps_votes(loaded, client, tmp_path):
    for verdict in ("dope", "nope", "dope"):
        cast(client, verdict)
    with loaded.app_context():
        votes_before = [tuple(r) for r in db.session.execute(sa.select(Vote.__table__))]
        pairs_before = db.session.scalar(sa.select(sa.func.count()).select_from(Pair))
    extra = ("resnet50-imagenet.gap.cosine", "ResNet50, GAP, cosine", "resnet50-imagenet",
             "gap", "cosine")
    newer = write_build(tmp_path / "newer", variants=[*DEFAULT_VARIANTS, extra], build_tag="b")
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["variants"][0]["name"] = "VGG16 ImageNet, pool5, L1 (renamed)"
    (newer / "manifest.json").write_text(json.dumps(manifest))
    with loaded.app_context():
        report = import_build(newer, loaded.config["DOPE_IMAGE_DIR"])
        assert report["pairs_added"] > 0
        variants = {v.slug: v for v in db.session.scalars(sa.select(Variant))}
        assert extra[0] in variants
        assert variants[DEFAULT_VARIANTS[0][0]].name.endswith("(renamed)")
        assert variants[extra[0]].offline_accuracy is not None
        assert [tuple(r) for r in db.session.execute(sa.select(Vote.__table__))] == votes_before
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Pair)) > pairs_before
        assert sum(v.dope_count for v in variants.values()) == 2


def _first_pair(build):
    return json.loads((build / "pairs.jsonl").read_text().splitlines()[0])


def _thumb(build, image_id):
    for line in (build / "catalog.csv").read_text().splitlines():
        if line.startswith(image_id + ","):
            return line.rsplit(",", 1)[1]
    raise AssertionError(image_id)


def missing_file(build):
    (build / "pairs.jsonl").unlink()


def bad_json_line(build):
    with open(build / "pairs.jsonl", "a") as f:
        f.write('{"query_id": "t-query-00000", "match_id": \n')


def image_missing(build):
    (build / "images" / _thumb(build, _first_pair(build)["match_id"])).unlink()


def image_not_matching_name(build):
    (build / "images" / _thumb(build, _first_pair(build)["match_id"])).write_bytes(_png(999))


def not_an_image(build):
    data = b"GIF89a is not accepted"
    name = hashlib.sha256(data).hexdigest() + ".png"
    old = _thumb(build, _first_pair(build)["query_id"])
    (build / "images" / name).write_bytes(data)
    csv_path = build / "catalog.csv"
    csv_path.write_text(csv_path.read_text().replace(old, name))


def unknown_format_version(build):
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["format_version"] = 2
    (build / "manifest.json").write_text(json.dumps(manifest))


def pair_with_unknown_image(build):
    with open(build / "pairs.jsonl", "a") as f:
        f.write(json.dumps({"query_id": "t-query-00000", "match_id": "nowhere",
                            "variant": "random", "rank": 1, "distance": None}) + "\n")


def pair_with_unknown_variant(build):
    with open(build / "pairs.jsonl", "a") as f:
        f.write(json.dumps({"query_id": "t-query-00000", "match_id": "t-catalog-00001",
                            "variant": "mystery", "rank": 1}) + "\n")


def partial_pairs(build):
    lines = (build / "pairs.jsonl").read_text().splitlines()
    (build / "pairs.jsonl").write_text("\n".join(lines[: len(lines) // 2 + 3]) + "\n")


def two_controls(build):
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["variants"][0]["control"] = True
    (build / "manifest.json").write_text(json.dumps(manifest))


def catalog_wrong_columns(build):
    path = build / "catalog.csv"
    path.write_text(path.read_text().replace("image_id,category", "id,category", 1))


def eval_not_json(build):
    (build / "eval.json").write_text("{not json")


def manifest_not_json(build):
    (build / "manifest.json").write_text("")


def images_dir_missing(build):
    shutil.rmtree(build / "images")


CORRUPTIONS = [missing_file, bad_json_line, image_missing, image_not_matching_name, not_an_image,
               unknown_format_version, pair_with_unknown_image, pair_with_unknown_variant,
               partial_pairs, two_controls, catalog_wrong_columns, eval_not_json,
               manifest_not_json, images_dir_missing]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_bad_build_changes_nothing(loaded, tmp_path, corrupt):
    runner = loaded.test_cli_runner()
    extra = ("resnet50-imagenet.gap.cosine", "ResNet50", "resnet50-imagenet", "gap", "cosine")
    bad = write_build(tmp_path / "bad", variants=[*DEFAULT_VARIANTS, extra], build_tag="bad",
                      seed=1)
    corrupt(bad)
    before = snapshot(loaded)
    result = runner.invoke(args=["import-build", str(bad)])
    assert result.exit_code != 0
    assert "error:" in result.output and "nothing changed" in result.output
    assert snapshot(loaded) == before


def test_format_version_error_names_both_versions(tmp_path):
    build = write_build(tmp_path / "b")
    unknown_format_version(build)
    with pytest.raises(BuildError, match=r"format_version 2 .*version 1"):
        import_build(build, str(tmp_path / "images"))
