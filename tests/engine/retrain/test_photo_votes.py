"""Retraining from votes on tried photos (engine.retrain.photos).

The photos are build query images sent through the query service's own code (its WSGI
app, features=1), so each photo must behave exactly as the image it shows: its votes
give the same family distances as that image's catalog votes.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from retrainkit import run_retrain

from engine.formats.builddir import open_build, read_build
from engine.formats.votes import Vote, read_votes, write_votes
from engine.retrain.challenger import prepare
from engine.retrain.model import RetrainRefused
from engine.retrain.photos import photo_rows
from engine.retrain.pool import source_catalog
from engine.serve.app import QueryService
from engine.serve.searcher import Searcher

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PHOTOS = 20


def service_record(app: QueryService, image, query_id: str) -> dict:
    """Return the photo record the web app exports for a photo the service searched."""
    body = io.BytesIO()
    image.save(body, "PNG")
    data = body.getvalue()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/search",
               "QUERY_STRING": "k=3&features=1", "CONTENT_LENGTH": str(len(data)),
               "wsgi.input": io.BytesIO(data)}
    answer = json.loads(b"".join(app(environ, lambda *_: None)))
    return {"record": "photo", "query_id": query_id, "build_id": answer["build_id"],
            "features": answer["features"]}


def as_photo_vote(v: Vote, vote_id: int) -> Vote:
    return Vote(**(v.to_dict() | {"vote_id": vote_id, "query_id": f"photo:{v.query_id}",
                                  "source": "photo", "rank": 1, "reason": None,
                                  "probability": None}))


@pytest.fixture(scope="module")
def photo_votes(small, tone_votes, tmp_path_factory):
    """The tone votes, plus every judged vote on PHOTOS of their queries again, cast on
    a photo of that query image."""
    build, found = open_build(small), read_votes(tone_votes)
    catalog = source_catalog(build)
    index = {image_id: i for i, image_id in enumerate(catalog.image_id)}
    queries = sorted({v.query_id for v in found.votes})[:PHOTOS]
    app = QueryService(Searcher(small))
    path = tmp_path_factory.mktemp("photos") / "votes.jsonl"
    lines = [json.dumps(found.header | {"format_version": 2})]
    lines += [json.dumps(service_record(app, catalog[index[q]], f"photo:{q}")) for q in queries]
    copies = [as_photo_vote(v, 10**6 + i) for i, v in enumerate(found.votes)
              if v.query_id in queries and v.judged]
    lines += [json.dumps(v.to_dict()) for v in found.votes + copies]
    path.write_text("\n".join(lines) + "\n")
    return path, copies


def test_a_photo_of_a_build_image_has_that_images_distances(small, photo_votes):
    path, copies = photo_votes
    t = prepare(small, path, queries=30, seed=1)
    assert t.counts["photo_votes"] == len(copies) > 50
    assert "photo_votes_set_aside" not in t.counts
    judged = [v for v in read_votes(path).votes if v.judged]
    assert t.counts["usable"] == len(judged) and (t.sources == "photo").sum() == len(copies)
    row_of = {(v.query_id, v.match_id): i for i, v in enumerate(judged)
              if v.source == "catalog"}
    for i, v in enumerate(judged):
        if v.source == "photo":
            twin = row_of[(v.query_id.removeprefix("photo:"), v.match_id)]
            assert np.allclose(t.X[i], t.X[twin], rtol=0.02, atol=0.02), \
                list(zip(t.parent_model.families, t.X[i], t.X[twin], strict=True))


def test_photo_votes_never_move_the_catalog_metric(small, photo_votes, tmp_path):
    path, copies = photo_votes
    result = run_retrain(small, path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"({len(copies)} of them on tried photos)" in result.output
    assert f"Photos ({len(copies)} votes on {PHOTOS} photos, never trained on)" in result.output
    ignored = run_retrain(small, path, tmp_path / "ignored", "--photo-votes", "ignore")
    assert "(0 of them on tried photos)" in ignored.output, ignored.output
    assert f"Photo votes set aside: {len(copies)} (photos: {PHOTOS} ignored)" in ignored.output
    used, alone = (json.loads((tmp_path / d / "manifest.json").read_text())["lineage"][-1]
                   for d in ("out", "ignored"))
    assert used["learned"]["weights"] == alone["learned"]["weights"]
    assert used["gate"] == alone["gate"] and "photo_gate" not in alone
    assert used["photo_gate"]["held_out_votes"] == len(copies)


def category_photo_votes(found, small, path):
    """The catalog votes of `found`, and on its photos votes of another taste: dope
    exactly when the catalog item has the photo's category (20 of each per photo)."""
    build = open_build(small)
    rows = build.table.catalog_rows
    category = {q: build.rows[build.row_of[q.removeprefix("photo:")]]["category"]
                for q in found.photos}
    rng = np.random.default_rng(3)
    votes = [v for v in found.votes if v.source == "catalog"]
    for q, c in category.items():
        same = [r for r in rows if build.rows[r]["category"] == c]
        other = [r for r in rows if build.rows[r]["category"] != c]
        for r in list(rng.choice(same, 20, replace=False)) + list(rng.choice(other, 20)):
            votes.append(Vote(**(votes[0].to_dict() | {
                "vote_id": 10**6 + len(votes), "query_id": q, "source": "photo", "rank": 1,
                "match_id": build.table.image_id[r], "reason": None, "probability": None,
                "verdict": "dope" if build.rows[r]["category"] == c else "nope"})))
    write_votes(path, found.header, votes, list(found.photos.values()))
    return path


def test_photos_of_another_taste_teach_photo_weights_the_service_uses(small, photo_votes,
                                                                      tmp_path):
    found = read_votes(photo_votes[0])
    path = category_photo_votes(found, small, tmp_path / "category.jsonl")
    result = run_retrain(small, path, tmp_path / "out", "--photo-votes", "learn")
    assert result.exit_code == 0, result.output
    assert "photos are ranked by the photo weights" in result.output, result.output
    lineage = json.loads((tmp_path / "out" / "manifest.json").read_text())["lineage"][-1]
    assert lineage["photo_gate"]["used"] and lineage["learned"]["photo_shares"]
    searcher = Searcher(tmp_path / "out")
    (retrained,) = searcher.retrained.variants
    catalog = source_catalog(open_build(small))
    index = {image_id: i for i, image_id in enumerate(catalog.image_id)}
    queries = [q.removeprefix("photo:") for q in found.photos]
    images = [catalog[index[q]] for q in queries]

    def same_category_first() -> float:
        answers = searcher.search(images, k=1)
        return np.mean([a[retrained.slug][0]["category"] == catalog.rows[index[q]].category
                        for a, q in zip(answers, queries, strict=True)])

    with_photo_weights = same_category_first()
    retrained.model.photo_weights = None  # what the challenger's own weights would show
    assert with_photo_weights > same_category_first()


def test_photos_retraining_cannot_use_are_set_aside_by_why(small, photo_votes):
    build, found = open_build(small), read_votes(photo_votes[0])
    voted = list(found.photos)
    assert len(photo_rows(build, found.photos, voted)) == PHOTOS
    photos = dict(found.photos)
    first, second, third = voted[:3]
    photos.pop(first)
    photos[second] = type(photos[second])(second, "another-build", photos[second].features)
    photos[third] = type(photos[third])(third, build.build_id, {
        k: v for k, v in photos[third].features.items() if k != "whitebox.lbp"})
    rows = photo_rows(build, photos, voted)
    assert len(rows) == PHOTOS - 3 and rows.set_aside == {
        "no_photo_record": 1, "other_build": 1, "missing_features": 1}
    assert rows.whitebox["lbp"].shape == (PHOTOS - 3, 10)


def test_a_photo_row_of_the_wrong_length_is_refused(small, photo_votes, tmp_path):
    found = read_votes(photo_votes[0])
    photos = list(found.photos.values())
    key = next(k for k in photos[0].features if not k.startswith("whitebox."))
    photos[0].features[key] = photos[0].features[key][:-1]
    path = tmp_path / "short.jsonl"
    write_votes(path, found.header, found.votes, photos)
    with pytest.raises(RetrainRefused, match=f"its {key} row has .* this build's have"):
        prepare(small, path, queries=30, seed=1)
    csv = tmp_path / "votes.csv"  # a CSV carries no photo records: photo votes wait
    write_votes(csv, {}, found.votes)
    t = prepare(small, csv, queries=30, seed=1)
    assert t.counts["photos_set_aside"] == {"no_photo_record": PHOTOS}


def test_the_service_ranks_a_challenger_as_its_build_ranked_the_pool(round1):
    """A challenger build served: its retrained variant answers, and for the build's own
    pool queries, sent as photos, its first match is the one the build paired."""
    searcher, built = Searcher(round1), read_build(round1)
    slug = built.variants[-1]["slug"]
    assert built.variants[-1]["retrained"] and slug in searcher.slugs
    paired = {p.query_id: p.match_id for p in built.pairs if p.variant == slug}
    catalog = source_catalog(open_build(round1))
    index = {image_id: i for i, image_id in enumerate(catalog.image_id)}
    queries = sorted(paired)
    answers = searcher.search([catalog[index[q]] for q in queries], k=3)
    firsts = [a[slug][0]["image_id"] for a in answers]
    agree = np.mean([f == paired[q] for f, q in zip(firsts, queries, strict=True)])
    assert agree >= 0.9, agree
    # not the base's ranking under another name: the build paired most queries otherwise
    base = {p.query_id: p.match_id for p in built.pairs
            if p.variant == built.variants[-1]["retrained"]["base"]}
    assert np.mean([base[q] != paired[q] for q in queries]) > 0.3
    assert all(len(a[slug]) == 3 and a[slug][0]["distance"] <= a[slug][1]["distance"]
               for a in answers)
