import json

import pytest
import sqlalchemy as sa
from buildmaker import write_build
from conftest import make_app, make_loaded_app

from webapp.extensions import db
from webapp.jobs.builds import import_build
from webapp.models import IssuedToken, Pair, Variant, Vote
from webapp.play import pairing, tokens


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


def test_served_pairs_record_their_rule_and_probability(loaded, client):
    for _ in range(20):
        pair = client.get("/api/pair")
        client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    with loaded.app_context():
        tokens_ = db.session.execute(sa.select(IssuedToken.reason, IssuedToken.probability)).all()
        votes = db.session.execute(sa.select(Vote.reason, Vote.probability)).all()
    assert len(tokens_) == 20 and sorted(votes) == sorted(tokens_)
    assert {r for r, _ in tokens_} <= {"uniform", "adaptive"}  # control share 0 here
    assert all(0 < p < 1 for _, p in tokens_)


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


def test_identical_image_pairs_are_shown_once(tmp_path):
    build = write_build(tmp_path / "b", n_queries=3)
    lines = [json.loads(line) for line in (build / "pairs.jsonl").read_text().splitlines()]
    for p in lines:  # every variant picks the same match for each query
        p["match_id"] = "t-catalog-00007"
    (build / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    app = make_loaded_app(tmp_path, build)
    client = app.test_client()
    statuses = [client.get("/api/pair").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 404, 404]


def test_one_vote_counts_for_every_variant_returning_its_image_pair(tmp_path):
    build = write_build(tmp_path / "b", n_queries=3)
    lines = [json.loads(line) for line in (build / "pairs.jsonl").read_text().splitlines()]
    shared = {p["query_id"]: p["match_id"] for p in lines if p["variant"] == lines[0]["variant"]}
    for p in lines:  # every real variant picks the first one's match; the control differs
        if p["variant"] != "random":
            p["match_id"] = shared[p["query_id"]]
    (build / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    app = make_loaded_app(tmp_path, build)
    client = app.test_client()
    pair = client.get("/api/pair")
    assert client.post("/api/vote", json={"token": pair.json["token"],
                                          "verdict": "dope"}).status_code == 201
    with app.app_context():
        rows = db.session.execute(sa.select(Variant.slug, Variant.control, Variant.judged_dope,
                                            Variant.dope_count)).all()
    real = [r for r in rows if not r.control]
    assert len(real) > 1 and all(r.judged_dope == 1 for r in real)  # pooled: every one
    assert sum(r.dope_count for r in rows) == 1  # served: the one whose pair it was
    assert all(r.judged_dope == 0 for r in rows if r.control)


def test_control_share_one_serves_the_control_first(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_CONTROL_SHARE=1.0)
    app.test_client().get("/api/pair")
    assert served(app)[0][3] is True


def test_control_share_zero_never_serves_the_control(loaded, client):
    drain(client)
    assert served(loaded) and not any(row[3] for row in served(loaded))


def test_control_share_is_respected(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_CONTROL_SHARE=0.2)
    for _ in range(300):
        app.test_client().get("/api/pair")  # new voters: nothing excluded
    share = [row[3] for row in served(app)].count(True) / 300
    assert 0.13 < share < 0.27


def test_a_newer_build_is_served_at_once_by_a_running_app(tmp_path):
    """Workers cache each variant's pairs; an import from another process must show."""
    app = make_app(tmp_path)
    first = write_build(tmp_path / "a", n_queries=2, n_catalog=10)
    with app.app_context():
        import_build(first, app.config["DOPE_IMAGE_DIR"])
    client = app.test_client()
    drain(client)  # fill the cache, use every pair
    # The same variants, new query images: new pairs for variants already cached.
    second = write_build(tmp_path / "b", n_queries=2, n_catalog=10, seed=5, build_tag="b")
    with app.app_context():
        import_build(second, app.config["DOPE_IMAGE_DIR"])
    assert client.get("/api/pair").status_code == 200
    assert len(served(app)) == len(set(served(app)))


# ---------------------------------------------------------------- the per-worker memo

def voter_pairs(app, voter):
    """Return (variant id, query id, match id) of every token issued to a voter."""
    with app.app_context():
        return [tuple(r) for r in db.session.execute(
            sa.select(Pair.variant_id, Pair.query_id, Pair.match_id)
            .join(IssuedToken, IssuedToken.pair_id == Pair.id)
            .where(IssuedToken.voter_id == voter).order_by(IssuedToken.id))]


def assert_no_repeats(rows):
    assert len({(q, m) for _, q, m in rows}) == len(rows)  # no image pair twice


def drain(client, most=200):
    """Fetch pairs until none is left (a voter sees at most the 60 in the test build)."""
    for _ in range(most):
        if client.get("/api/pair").status_code == 404:
            return
    raise AssertionError(f"still serving pairs after {most}: some must repeat")


def voter_of(client):
    return client.get_cookie(tokens.VOTER_COOKIE).value.split(".")[0]


def test_two_workers_never_serve_one_voter_a_pair_twice(tmp_path, build_dir):
    """Two apps on one database stand for two gunicorn workers, each with its memo."""
    a = make_loaded_app(tmp_path, build_dir)
    b = make_app(tmp_path)
    ca, cb = a.test_client(), b.test_client()
    assert ca.get("/api/pair").status_code == 200
    cb.set_cookie(tokens.VOTER_COOKIE, ca.get_cookie(tokens.VOTER_COOKIE).value)
    statuses = []
    for i in range(80):
        statuses.append((ca if i % 3 else cb).get("/api/pair").status_code)
    assert statuses.count(200) > 20 and statuses[-1] == 404
    assert_no_repeats(voter_pairs(a, voter_of(ca)))


def test_a_token_committed_out_of_id_order_is_not_missed(loaded, client):
    """PostgreSQL may commit token 7 after token 8: the memo's count check catches it."""
    other = loaded.test_client()
    for _ in range(3):
        other.get("/api/pair")
    for _ in range(3):
        client.get("/api/pair")  # this worker's memo now ends at the voter's newest token
    voter = voter_of(client)
    with loaded.app_context():
        gap = db.session.scalars(sa.select(IssuedToken).where(IssuedToken.voter_id != voter)
                                 .order_by(IssuedToken.id)).first()
        gap_id = gap.id
        seen = {(q, m) for _, q, m in voter_pairs(loaded, voter)}
        late = next(p for p in db.session.scalars(sa.select(Pair).order_by(Pair.id))
                    if (p.query_id, p.match_id) not in seen)
        late_row = (late.variant_id, late.query_id, late.match_id)
        db.session.delete(gap)
        db.session.flush()
        # A token issued elsewhere for this voter, with an id below the memo's newest.
        db.session.add(IssuedToken(id=gap_id, nonce="0" * 32, voter_id=voter, pair_id=late.id))
        db.session.commit()
    drain(client)
    rows = voter_pairs(loaded, voter)
    assert late_row in rows
    assert_no_repeats(rows)


@pytest.mark.parametrize("limit", [("SEEN_VOTERS_KEPT", 1), ("SEEN_TOKENS_KEPT", 10)])
def test_voters_evicted_from_the_memo_are_read_again(loaded, monkeypatch, limit):
    monkeypatch.setattr(pairing, *limit)
    clients = [loaded.test_client() for _ in range(3)]
    done = set()
    for _ in range(200):
        for i, c in enumerate(clients):
            if i not in done and c.get("/api/pair").status_code == 404:
                done.add(i)
    assert len(done) == len(clients)
    with loaded.app_context():
        memo = loaded.extensions["dope_seen"]
        assert len(memo) == 1 and loaded.extensions["dope_seen_tokens"] == \
            next(iter(memo.values())).count
    for c in clients:
        rows = voter_pairs(loaded, voter_of(c))
        assert len(rows) > 20
        assert_no_repeats(rows)


def test_a_new_voters_first_pairs_can_be_warm_up_gold_outside_the_mixture(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_GOLD_FIRST_PAIRS=2,
                          DOPE_GOLD_FIRST_SHARE=1.0)
    client = app.test_client()
    for _ in range(4):
        client.get("/api/pair")
    with app.app_context():
        rows = db.session.execute(
            sa.select(IssuedToken.reason, IssuedToken.probability, Variant.control)
            .join(Pair, Pair.id == IssuedToken.pair_id)
            .join(Variant, Variant.id == Pair.variant_id).order_by(IssuedToken.id)).all()
        pairs = db.session.execute(sa.select(Variant.control, Pair.query_id, Pair.match_id)
                                   .join(Variant).where(Pair.rank == 1)).all()
    real = {(q, m) for control, q, m in pairs if not control}
    # negative gold: the control's pairs that no real variant returns too
    controls = len({(q, m) for control, q, m in pairs if control and (q, m) not in real})
    assert [r.reason for r in rows[:2]] == ["gold", "gold"] and all(r.control for r in rows[:2])
    assert rows[0].probability == pytest.approx(1 / controls)  # the warm-up's own draw
    assert all(r.reason != "gold" and not r.control for r in rows[2:])  # control share 0


def test_the_warm_up_share_is_respected(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_GOLD_FIRST_PAIRS=3,
                          DOPE_GOLD_FIRST_SHARE=0.34)
    for _ in range(300):
        app.test_client().get("/api/pair")  # new voters: each first pair may be gold
    share = [row[3] for row in served(app)].count(True) / 300
    assert 0.26 < share < 0.42
