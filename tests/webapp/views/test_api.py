import json
import threading
import time

import pytest
import sqlalchemy as sa
from conftest import cast, make_app, make_loaded_app

from webapp.extensions import db
from webapp.models import IssuedToken, Variant, Vote, Voter
from webapp.play import fastsql, tokens


def test_pair_is_blind(loaded, client):
    response = client.get("/api/pair")
    assert response.status_code == 200
    assert set(response.json) == {"token", "query", "match"}
    for side in ("query", "match"):
        assert response.json[side]["url"].startswith("/images/")
    with loaded.app_context():
        slugs = db.session.scalars(sa.select(Variant.slug)).all()
        names = db.session.scalars(sa.select(Variant.name)).all()
    served = response.get_data(as_text=True) + str(response.headers)
    assert not any(s in served for s in slugs + names)
    assert response.headers["Cache-Control"] == "no-store"


def test_vote_is_stored_once(loaded, client):
    pair, vote = cast(client, "nope", decision_ms=1234)
    assert vote.status_code == 201
    assert vote.json == {"id": vote.json["id"], "votes_cast": 1}
    replay = client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    assert replay.status_code == 409
    assert replay.json["error"] == "already_voted"
    with loaded.app_context():
        stored = db.session.scalars(sa.select(Vote)).all()
        assert [(v.verdict, v.decision_ms) for v in stored] == [("nope", 1234)]
        assert db.session.get(Variant, stored[0].variant_id).nope_count == 1


def test_votes_cast_counts_up(loaded, client):
    assert [cast(client, v)[1].json["votes_cast"] for v in ("dope", "nope", "skip")] == [1, 2, 3]


def test_no_pairs_left(loaded, client):
    # 12 queries x 5 variants, but identical image pairs are shown once only.
    statuses = []
    for _ in range(80):
        pair = client.get("/api/pair")
        statuses.append(pair.status_code)
        if pair.status_code != 200:
            break
        client.post("/api/vote", json={"token": pair.json["token"], "verdict": "skip"})
    assert statuses[-1] == 404
    assert client.get("/api/pair").json["error"] == "no_pairs"


def test_no_pairs_before_import(client):
    response = client.get("/api/pair")
    assert response.status_code == 404
    assert response.json["error"] == "no_pairs"


def test_token_from_another_session_is_refused(loaded, client):
    pair = client.get("/api/pair")
    other = loaded.test_client()
    response = other.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    assert response.status_code == 403
    assert response.json["error"] == "wrong_session"
    other.get("/api/pair")  # a session of its own still cannot use it
    response = other.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    assert response.status_code == 403


def vote_with_token_issued(client, monkeypatch, seconds_from_now):
    """Fetch a pair as if it were `seconds_from_now`, vote on it now; return the answer."""
    real = tokens._clock
    monkeypatch.setattr(tokens, "_clock", lambda: real() + seconds_from_now)
    pair = client.get("/api/pair")
    monkeypatch.setattr(tokens, "_clock", real)
    return client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})


def test_expired_token_is_refused(loaded, client, monkeypatch):
    response = vote_with_token_issued(client, monkeypatch, -3600)
    assert response.status_code == 400
    assert response.json["error"] == "expired_token"


def test_token_from_the_future_is_refused(loaded, client, monkeypatch):
    response = vote_with_token_issued(client, monkeypatch, 3600)
    assert response.status_code == 400
    assert response.json["error"] == "bad_token"


def test_token_still_valid_just_before_its_ttl(loaded, client, monkeypatch):
    ttl = loaded.config["DOPE_TOKEN_TTL"]
    response = vote_with_token_issued(client, monkeypatch, -ttl + 30)
    assert response.status_code == 201


def test_forged_token_is_refused(loaded, client):
    pair = client.get("/api/pair")
    token = pair.json["token"]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    response = client.post("/api/vote", json={"token": forged, "verdict": "dope"})
    assert response.status_code == 400
    assert response.json["error"] == "bad_token"


@pytest.mark.parametrize("part", [0, 2])
def test_token_with_an_edited_field_is_refused(loaded, client, part):
    """Another nonce, or a later issue time, breaks the signature."""
    fields = client.get("/api/pair").json["token"].split(".")
    fields[part] = "f" * len(fields[part])
    response = client.post("/api/vote", json={"token": ".".join(fields), "verdict": "dope"})
    assert response.status_code == 400
    assert response.json["error"] == "bad_token"


def test_voter_cookie_is_signed(loaded, client):
    """A voter id with a bad signature is no voter: that browser starts a new one."""
    client.get("/api/pair")
    value = client.get_cookie(tokens.VOTER_COOKIE).value
    voter, mac = value.split(".")
    assert len(voter) == 32 and len(mac) == 43
    other = loaded.test_client()
    other.set_cookie(tokens.VOTER_COOKIE, "0" * 32 + "." + mac)
    other.get("/api/pair")
    assert other.get_cookie(tokens.VOTER_COOKIE).value.split(".")[0] not in (voter, "0" * 32)
    with loaded.app_context():
        assert db.session.get(Voter, "0" * 32) is None


def test_voter_cookie_attributes(loaded, client):
    header = client.get("/api/pair").headers["Set-Cookie"]
    assert header.startswith(tokens.VOTER_COOKIE + "=")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert "Expires" not in header  # a browser-session cookie, like Flask's session
    assert "Set-Cookie" not in client.get("/api/pair").headers  # set once


def test_voter_from_a_flask_session_cookie_keeps_its_id(loaded, client):
    """Voters from before the voter cookie carried their id in Flask's session."""
    legacy = "ab" * 16
    with loaded.app_context():
        db.session.add(Voter(id=legacy))
        db.session.commit()
    with client.session_transaction() as s:
        s["voter"] = legacy
    pair, vote = cast(client)
    assert vote.status_code == 201
    assert client.get_cookie(tokens.VOTER_COOKIE).value.startswith(legacy + ".")
    with client.session_transaction() as s:
        assert "voter" not in s
    assert cast(client)[1].status_code == 201
    with loaded.app_context():
        assert {v.voter_id for v in db.session.scalars(sa.select(Vote))} == {legacy}


def test_token_signed_with_another_key_is_refused(loaded, client, tmp_path):
    client.get("/api/pair")
    other = make_app(tmp_path / "other", SECRET_KEY="another-key")
    with other.test_request_context():
        from webapp.play.tokens import make_pair_token
        voter = client.get_cookie(tokens.VOTER_COOKIE).value.split(".")[0]
        token = make_pair_token("0" * 32, voter)
    response = client.post("/api/vote", json={"token": token, "verdict": "dope"})
    assert response.status_code == 400


BAD_BODIES = [
    ("not json", "application/json"),
    ("[1, 2]", "application/json"),
    ('"token"', "application/json"),
    ("null", "application/json"),
    ("{}", "application/json"),
    ('{"token": "x"}', "application/json"),
    ('{"verdict": "dope"}', "application/json"),
    ('{"token": 5, "verdict": "dope"}', "application/json"),
    ('{"token": ["a"], "verdict": "dope"}', "application/json"),
    ('{"token": "", "verdict": "dope"}', "application/json"),
    ('{"token": "x", "verdict": "maybe"}', "application/json"),
    ('{"token": "x", "verdict": "DOPE"}', "application/json"),
    ('{"token": "x", "verdict": null}', "application/json"),
    ('{"token": "x", "verdict": 1}', "application/json"),
    ('{"token": "x", "verdict": "dope", "decision_ms": "fast"}', "application/json"),
    ('{"token": "x", "verdict": "dope", "decision_ms": true}', "application/json"),
    ('{"token": "x", "verdict": "dope", "decision_ms": [1]}', "application/json"),
    ('{"token": "x", "verdict": "dope"}', "text/plain"),
    ('{"token": "x", "verdict": "dope"}', "application/x-www-form-urlencoded"),
    ('{"token": "ünïcödé ✓ 🙂", "verdict": "dope"}', "application/json"),
    ('{"token": "' + "a" * 600 + '", "verdict": "dope"}', "application/json"),
    ('{"token": "x", "verdict": "dope", "pad": "' + "x" * 10000 + '"}', "application/json"),
    ("[" * 2000 + "]" * 2000, "application/json"),
    ('{"token": "x", "verdict": "dope", "decision_ms": 1e999}', "application/json"),
    ("\udcff\udcfe{}", "application/json"),
]


@pytest.mark.parametrize(("body", "content_type"), BAD_BODIES)
def test_malformed_vote_is_a_json_400(loaded, client, body, content_type):
    client.get("/api/pair")
    response = client.post("/api/vote", data=body.encode("utf-8", "surrogateescape"),
                           content_type=content_type)
    assert response.status_code == 400
    assert set(response.json) >= {"error", "message"}


def test_huge_valid_token_field_is_a_400(loaded, client):
    client.get("/api/pair")
    body = json.dumps({"token": "a.b." + "x" * 3000, "verdict": "dope"})
    response = client.post("/api/vote", data=body, content_type="application/json")
    assert response.status_code == 400


def test_vote_without_session_is_403(loaded, client):
    pair = client.get("/api/pair")
    fresh = loaded.test_client()
    assert fresh.post("/api/vote", json={"token": pair.json["token"],
                                         "verdict": "dope"}).status_code == 403


@pytest.mark.parametrize(("header", "value", "status"), [
    ("Origin", "https://evil.example", 403),
    ("Origin", "null", 403),
    ("Referer", "https://evil.example/page", 403),
    ("Origin", "http://[", 403),
    ("Origin", "http://localhost", 201),
    ("Referer", "http://localhost/play", 201),
])
def test_vote_origin_check(loaded, client, header, value, status):
    pair = client.get("/api/pair")
    response = client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"},
                           headers={header: value})
    assert response.status_code == status
    assert response.is_json


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_wrong_method_is_json(loaded, client, method):
    response = getattr(client, method)("/api/vote")
    assert response.status_code == 405
    assert response.json["error"]


def test_unknown_api_route_is_json_404(client):
    response = client.get("/api/nothing")
    assert response.status_code == 404
    assert response.is_json


def test_concurrent_replays_store_one_vote(loaded, client):
    pair = client.get("/api/pair")
    cookie = client.get_cookie(tokens.VOTER_COOKIE).value
    results = []

    def replay():
        c = loaded.test_client()
        c.set_cookie(tokens.VOTER_COOKIE, cookie)
        results.append(c.post("/api/vote", json={"token": pair.json["token"],
                                                 "verdict": "dope"}).status_code)

    threads = [threading.Thread(target=replay) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 5
    with loaded.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Vote)) == 1


def test_min_interval_between_votes(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_MIN_VOTE_INTERVAL_MS=60000)
    client = app.test_client()
    assert cast(client)[1].status_code == 201
    pair, vote = cast(client)
    assert vote.status_code == 429
    assert vote.json["error"] == "rate_limited"
    assert 0 < vote.json["retry_after"] <= 60
    assert int(vote.headers["Retry-After"]) >= 1
    with app.app_context():  # the refused vote did not spend its token
        token = db.session.scalars(sa.select(IssuedToken).order_by(IssuedToken.id.desc())).first()
        assert token.used is False
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Vote)) == 1


def test_votes_per_hour_cap(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_MAX_VOTES_PER_HOUR=2)
    client = app.test_client()
    assert [cast(client)[1].status_code for _ in range(3)] == [201, 201, 429]
    assert cast(client)[1].json["retry_after"] > 3000


def test_pairs_per_hour_cap(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_MAX_PAIRS_PER_HOUR=2)
    client = app.test_client()
    statuses = [client.get("/api/pair").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert client.get("/api/pair").json["error"] == "rate_limited"


def test_pairs_per_hour_cap_counts_only_the_last_hour(tmp_path, build_dir):
    """Tokens issued over an hour ago do not count against the cap."""
    from datetime import timedelta

    from webapp.models import utcnow

    app = make_loaded_app(tmp_path, build_dir, DOPE_MAX_PAIRS_PER_HOUR=2)
    client = app.test_client()
    assert [client.get("/api/pair").status_code for _ in range(3)] == [200, 200, 429]
    with app.app_context():
        db.session.execute(sa.update(IssuedToken).values(
            issued_at=utcnow() - timedelta(hours=1, minutes=1)))
        db.session.commit()
    statuses = [client.get("/api/pair").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    retry = int(client.get("/api/pair").headers["Retry-After"])
    assert 3000 < retry <= 3600


def test_images_are_served_with_long_cache(loaded, client):
    pair = client.get("/api/pair")
    response = client.get(pair.json["match"]["url"])
    assert response.status_code == 200
    assert response.data.startswith(b"\x89PNG")
    assert "max-age=31536000" in response.headers["Cache-Control"]


@pytest.mark.parametrize("name", ["../dope.sqlite3", "abc.png", "0" * 64 + ".exe",
                                  "0" * 64 + ".png", "%2e%2e%2fetc%2fpasswd"])
def test_bad_image_names_are_404(loaded, client, name):
    assert client.get(f"/images/{name}").status_code == 404


def test_images_survive_deleting_the_build(loaded, client, build_dir):
    import shutil
    shutil.rmtree(build_dir)
    pair = client.get("/api/pair")
    assert client.get(pair.json["query"]["url"]).status_code == 200


def test_voters_cookies_reveal_no_variant(loaded, client):
    cast(client)
    client.get("/")
    client.get("/play")
    assert [c.key for c in client._cookies.values()] == [tokens.VOTER_COOKIE]
    voter, mac = client.get_cookie(tokens.VOTER_COOKIE).value.split(".")
    with loaded.app_context():
        assert db.session.get(Voter, voter) is not None


def test_leaderboard_json(loaded, client):
    for verdict in ("dope", "dope", "nope", "skip"):
        cast(client, verdict)
    board = client.get("/api/leaderboard").json
    keys = {"slug", "name", "votes", "approvals", "rate", "ci_low", "ci_high", "rank_low",
            "rank_high", "offline_accuracy", "control", "p_best", "estimate", "served"}
    assert all(keys <= set(v) for v in board["variants"])
    assert board["total_votes"] == 3 and board["total_skips"] == 1
    # Pooled: a vote counts for every variant returning its image pair, at least one.
    assert sum(v["served"] for v in board["variants"]) == 3
    assert sum(v["approvals"] for v in board["variants"]) >= 2
    assert [v["control"] for v in board["variants"]].count(True) == 1
    assert board["settled"] is False and "status" in board["separation"]
    assert all(v["p_best"] is None for v in board["variants"])  # no fit yet
    loaded.test_cli_runner().invoke(args=["fit"])
    board = client.get("/api/leaderboard").json
    real = [v for v in board["variants"] if not v["control"]]
    assert abs(sum(v["p_best"] for v in real) - 1) < 1e-3
    assert board["fit"]["judgments"] == 3 and board["settled"] is False


def test_leaderboard_page(loaded, client):
    cast(client)
    page = client.get("/leaderboard")
    assert page.status_code == 200
    assert b"interval-bar" in page.data and b"leaderboard.css" in page.data


def test_vote_timing_is_recorded(loaded, client):
    before = time.time()
    cast(client, decision_ms=-5)
    with loaded.app_context():
        vote = db.session.scalars(sa.select(Vote)).one()
    assert vote.decision_ms == 0
    assert vote.created_at.timestamp() >= before - 3600 * 24  # stored as naive UTC


def test_locked_database_is_a_json_503(loaded, client, monkeypatch):
    from sqlalchemy.exc import OperationalError

    import webapp.play.serve

    def locked(*args, **kwargs):
        raise OperationalError("UPDATE voter", {}, Exception("database is locked"))

    pair = client.get("/api/pair")
    monkeypatch.setattr(webapp.play.serve, "claim_rate_slot", locked)
    response = client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    assert response.status_code == 503
    assert response.json["error"] == "busy" and response.headers["Retry-After"] == "1"
    monkeypatch.undo()
    retry = client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    assert retry.status_code == 201


def test_counters_match_the_votes(loaded, client):
    from webapp.jobs.recount import count_judgments, count_votes, recount_votes

    for verdict in ("dope", "nope", "skip", "dope", "nope", "nope"):
        cast(client, verdict)
    with loaded.app_context():
        counts, pooled = count_votes(), count_judgments()
        for variant in db.session.scalars(sa.select(Variant)):
            c, p = counts.get(variant.id, {}), pooled.get(variant.id, {})
            assert (variant.dope_count, variant.nope_count, variant.skip_count) == \
                (c.get("dope", 0), c.get("nope", 0), c.get("skip", 0))
            assert (variant.judged_dope, variant.judged_nope, variant.judged_skip) == \
                (p.get("dope", 0), p.get("nope", 0), p.get("skip", 0))
        assert recount_votes() == 0
        db.session.execute(sa.update(Variant).values(dope_count=99))
        db.session.commit()
        expected = sum(p.get("dope", 0) for p in pooled.values())
    result = loaded.test_cli_runner().invoke(args=["recount-votes"])
    assert result.exit_code == 0 and "5 variant(s)" in result.output
    board = client.get("/api/leaderboard").json
    assert sum(v["approvals"] for v in board["variants"]) == expected
    assert board["total_votes"] == 5


def test_pages_carry_security_headers(client):
    response = client.get("/leaderboard")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_live_cookie_whose_voter_row_is_gone_still_plays(loaded, client):
    """The database was reset under a voter's cookie: the next pair recreates the row."""
    assert client.get("/api/pair").status_code == 200
    with loaded.app_context():
        (voter_id,) = db.session.scalars(sa.select(Voter.id)).all()
        db.session.execute(sa.delete(IssuedToken))
        db.session.execute(sa.delete(Voter))
        db.session.commit()
    pair = client.get("/api/pair")
    assert pair.status_code == 200
    vote = client.post("/api/vote", json={"token": pair.json["token"], "verdict": "nope"})
    assert vote.status_code == 201 and vote.json["votes_cast"] == 1
    with loaded.app_context():
        assert db.session.scalars(sa.select(Voter.id)).all() == [voter_id]


@pytest.mark.parametrize("path", ["/api/pair", "/api/vote"])
def test_a_database_that_fails_mid_request_is_a_503_never_a_500(loaded, client, monkeypatch,
                                                                path):
    """Commit fails (server gone), and so does the rollback on the error path."""
    pair = client.get("/api/pair")

    def broken(action):
        raise sa.exc.OperationalError(action.upper(), (), Exception("server closed"))

    monkeypatch.setattr(fastsql, "_finish", broken)
    if path == "/api/pair":
        response = client.get(path)
    else:
        response = client.post(path, json={"token": pair.json["token"], "verdict": "dope"})
    assert response.status_code == 503
    assert response.json["error"] == "busy" and response.headers["Retry-After"]
    monkeypatch.undo()
    assert client.get("/api/pair").status_code == 200  # the next request is served


def test_sqlite_connection_is_kept_per_thread_and_left_clean(loaded):
    """Between requests a thread keeps its SQLite connection, with nothing left open."""
    with loaded.app_context():
        first = fastsql.connection()
        cursor = first.cursor()
        cursor.execute("INSERT INTO voter (id, created_at, window_votes, votes_cast) "
                       "VALUES ('f' , '2026-01-01 00:00:00.000000', 0, 0)")
    with loaded.app_context():  # the uncommitted insert was rolled back at teardown
        assert fastsql.connection() is first
        assert db.session.execute(sa.text("SELECT COUNT(*) FROM voter WHERE id = 'f'")) \
            .scalar() == 0
    other = []

    def in_thread():
        with loaded.app_context():
            other.append(fastsql.connection())

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert other and other[0] is not first
    assert loaded.test_client().get("/api/pair").status_code == 200  # no lock was left


def test_before_any_vote_the_control_sits_below_the_variants(loaded, client):
    board = client.get("/api/leaderboard").json
    assert board["variants"][-1]["control"] is True
    real = [v for v in board["variants"] if not v["control"]]
    assert all((v["rank_low"], v["rank_high"]) == (1, len(real)) for v in real)
    assert all((v["ci_low"], v["ci_high"]) == (0.0, 1.0) for v in board["variants"])
