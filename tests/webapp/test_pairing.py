import json
import random

import sqlalchemy as sa
from buildmaker import write_build
from conftest import make_app

from webapp.builds import import_build
from webapp.extensions import db
from webapp.models import IssuedToken, Pair, Variant
from webapp.pairing import variant_order


def served(app):
    """Return the pairs issued so far, in order, as (variant slug, query id, match id)."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(Variant.slug, Pair.query_id, Pair.match_id, Variant.control)
            .join(Pair, Pair.variant_id == Variant.id)
            .join(IssuedToken, IssuedToken.pair_id == Pair.id).order_by(IssuedToken.id))
        return [tuple(r) for r in rows]


def set_counts(app, counts):
    with app.app_context():
        for slug, n in counts.items():
            db.session.execute(sa.update(Variant).where(Variant.slug == slug)
                               .values(dope_count=n))
        db.session.commit()


def test_fewest_votes_first(loaded, client):
    set_counts(loaded, {"vgg16-imagenet.pool5.l1": 9, "vgg16-imagenet.pool5.hamming": 3,
                        "mobilenet_v2-imagenet.gap.l2": 9, "vgg16-fashion.fc6.l1": 9})
    client.get("/api/pair")
    assert served(loaded)[0][0] == "vgg16-imagenet.pool5.hamming"


def test_ties_are_broken_at_random(loaded):
    for _ in range(30):
        loaded.test_client().get("/api/pair")
    firsts = {row[0] for row in served(loaded)}
    assert len(firsts) > 1 and "random" not in firsts


def test_never_the_same_pair_twice(loaded, client):
    for _ in range(100):
        pair = client.get("/api/pair")
        if pair.status_code == 404:
            break
        client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    rows = served(loaded)
    assert len(rows) == len(set(rows))
    assert len({(q, m) for _, q, m, _ in rows}) == len(rows)  # no image pair twice
    per_variant_query = [(slug, q) for slug, q, _, _ in rows]
    assert len(per_variant_query) == len(set(per_variant_query))


def test_identical_image_pairs_are_shown_once(tmp_path):
    build = write_build(tmp_path / "b", n_queries=3)
    lines = [json.loads(line) for line in (build / "pairs.jsonl").read_text().splitlines()]
    for p in lines:  # every variant picks the same match for each query
        p["match_id"] = "t-catalog-00007"
    (build / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    app = make_app(tmp_path)
    with app.app_context():
        import_build(build, app.config["DOPE_IMAGE_DIR"])
    client = app.test_client()
    statuses = [client.get("/api/pair").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 404, 404]


def test_control_share_one_serves_the_control_first(tmp_path, build_dir):
    app = make_app(tmp_path, DOPE_CONTROL_SHARE=1.0)
    with app.app_context():
        import_build(build_dir, app.config["DOPE_IMAGE_DIR"])
    app.test_client().get("/api/pair")
    assert served(app)[0][3] is True


def test_control_share_zero_serves_the_control_last(loaded, client):
    for _ in range(100):
        if client.get("/api/pair").status_code == 404:
            break
    controls = [row[3] for row in served(loaded)]
    assert True in controls
    first_control = controls.index(True)
    assert all(controls[first_control:])


def test_control_share_is_respected(loaded):
    rng = random.Random(0)
    with loaded.app_context():
        control_id = db.session.scalar(sa.select(Variant.id).where(Variant.control))
        firsts = [variant_order(0.2, rng)[0] for _ in range(2000)]
    share = firsts.count(control_id) / len(firsts)
    assert 0.16 < share < 0.24


def test_a_newer_build_is_served_at_once_by_a_running_app(tmp_path):
    """Workers cache each variant's pairs; an import from another process must show."""
    app = make_app(tmp_path)
    first = write_build(tmp_path / "a", n_queries=2, n_catalog=10)
    with app.app_context():
        import_build(first, app.config["DOPE_IMAGE_DIR"])
    client = app.test_client()
    while client.get("/api/pair").status_code == 200:  # fill the cache, use every pair
        pass
    # The same variants, new query images: new pairs for variants already cached.
    second = write_build(tmp_path / "b", n_queries=2, n_catalog=10, seed=5, build_tag="b")
    with app.app_context():
        import_build(second, app.config["DOPE_IMAGE_DIR"])
    assert client.get("/api/pair").status_code == 200
    assert len(served(app)) == len(set(served(app)))
