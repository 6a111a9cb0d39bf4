"""Retrained variants in the web app: import, leaderboard marks, team lineage, compare."""

from __future__ import annotations

import json

import pytest
from buildmaker import write_build
from conftest import cast, make_loaded_app
from team_helpers import PASSWORD, login

from webapp.extensions import db
from webapp.jobs.builds import BuildError, check_build, import_build
from webapp.models import Vote
from webapp.stats.compare import compare_on_shared


def add_challenger(build, *, parent="vgg16-fashion.fc6.l1", round_=1):
    """Turn a test build into a challenger build: one more variant with a lineage."""
    manifest = json.loads((build / "manifest.json").read_text())
    pairs = [json.loads(line) for line in (build / "pairs.jsonl").read_text().splitlines()]
    slug = f"{parent}.r{round_}-abc123"
    theirs = [p | {"variant": slug} for p in pairs if p["variant"] == parent]
    # The challenger differs from its parent on every other query.
    others = [p for p in pairs if p["variant"] == "random"]
    for i in range(0, len(theirs), 2):
        theirs[i]["match_id"] = others[i]["match_id"]
    with open(build / "pairs.jsonl", "a") as f:
        f.writelines(json.dumps(p) + "\n" for p in theirs)
    manifest["variants"].append({
        "slug": slug, "name": "Retrained on 1,240 votes (from VGG16 fine-tuned FC6 L1)",
        "network": "vgg16-fashion", "layer": "fc6", "metric": "learned", "control": False,
        "retrained": {"parent": parent, "base": parent, "round": round_, "votes": 1240,
                      "votes_sha256": "ab" * 32}})
    manifest["lineage"] = [{"round": round_, "challenger": slug, "parent": parent,
                            "votes": {"usable": 1240},
                            "learned": {"shares": {"base": 0.4, "wb:intensity": 0.6}},
                            "gate": {"challenger_auc": 0.71, "parent_auc": 0.62, "gain": 0.09,
                                     "gain_low_95": 0.04}}]
    manifest["build_id"] = "challenger-" + manifest["build_id"]
    (build / "manifest.json").write_text(json.dumps(manifest))
    evals = json.loads((build / "eval.json").read_text())
    evals["variants"][slug] = {"top1_accuracy": 0.9}
    (build / "eval.json").write_text(json.dumps(evals))
    return slug


@pytest.fixture
def lineage_app(tmp_path):
    first = write_build(tmp_path / "first", n_queries=12)
    app = make_loaded_app(tmp_path, first, DOPE_TEAM_PASSWORD=PASSWORD)
    second = write_build(tmp_path / "second", n_queries=12, build_tag="b")
    slug = add_challenger(second)
    return app, second, slug


def test_import_keeps_votes_and_adds_the_marked_challenger(lineage_app):
    app, second, slug = lineage_app
    client = app.test_client()
    for _ in range(6):
        cast(client, "dope")
    with app.app_context():
        before = [(v.id, v.pair_id, v.verdict) for v in db.session.query(Vote).order_by(Vote.id)]
        import_build(second, app.config["DOPE_IMAGE_DIR"])
        after = [(v.id, v.pair_id, v.verdict) for v in db.session.query(Vote).order_by(Vote.id)]
    assert after == before
    board = client.get("/api/leaderboard").json
    rows = {r["slug"]: r for r in board["variants"]}
    assert rows[slug]["parent"] == "vgg16-fashion.fc6.l1" and rows[slug]["round"] == 1
    assert all(r["parent"] is None for s, r in rows.items() if s != slug)
    page = client.get("/leaderboard").data.decode()
    assert "retrained · round 1" in page and "from VGG16 fine-tuned on clothing, FC6, L1" in page


def test_team_view_shows_lineage_and_compares_on_shared_queries(lineage_app):
    app, second, slug = lineage_app
    with app.app_context():
        import_build(second, app.config["DOPE_IMAGE_DIR"])
    client = app.test_client()
    login(client)
    page = client.get("/team/").data.decode()
    assert "Lineage" in page and slug in page and "wb:intensity 60%" in page
    assert "0.710 vs 0.620" in page
    page = client.get(f"/team/?a={slug}&b=vgg16-fashion.fc6.l1").data.decode()
    # 12 shared queries; the challenger took another match on every other one.
    assert "12 shared queries; on 6 of them both return the same match" in page
    bad = client.get(f"/team/?a={slug}&b={slug}").data.decode()
    assert "Pick two different variants" in bad


@pytest.mark.parametrize("retrained, message", [
    ({"parent": "nosuch", "round": 1}, "needs a parent that is another variant"),
    ({"parent": "vgg16-fashion.fc6.l1", "round": 0}, "needs a round of at least 1"),
    ("yes", "needs a parent"),
])
def test_import_refuses_a_bad_lineage(tmp_path, retrained, message):
    build = write_build(tmp_path / "b", n_queries=6)
    manifest = json.loads((build / "manifest.json").read_text())
    manifest["variants"][0]["retrained"] = retrained
    (build / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BuildError, match=message):
        check_build(build)


def test_compare_on_shared_against_hand_counts():
    pairs_a = {1: 10, 2: 20, 3: 30, 4: 40}
    pairs_b = {2: 20, 3: 31, 4: 41, 5: 50}
    tally_a = {1: (5, 5), 2: (1, 2), 3: (3, 4), 4: (0, 2)}
    tally_b = {2: (1, 2), 3: (1, 4), 4: (2, 2), 5: (9, 9)}
    out = compare_on_shared("a", pairs_a, tally_a, "b", pairs_b, tally_b)
    assert (out["shared_queries"], out["same_match"]) == (3, 1)
    assert (out["a"]["dope"], out["a"]["votes"]) == (4, 8)  # queries 2, 3, 4
    assert (out["b"]["dope"], out["b"]["votes"]) == (4, 8)
    assert (out["a_where_they_differ"]["dope"], out["a_where_they_differ"]["votes"]) == (3, 6)
    assert (out["b_where_they_differ"]["dope"], out["b_where_they_differ"]["votes"]) == (3, 6)
    assert out["a"]["rate"] == 0.5
