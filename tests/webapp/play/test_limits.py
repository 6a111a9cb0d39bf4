"""Per-address limits (webapp/play/limits.py), too-fast votes, the team sign-in limit."""

from __future__ import annotations

import pytest
from conftest import cast, make_loaded_app
from team_helpers import PASSWORD, csrf_from

from webapp.extensions import db
from webapp.models import RateBucket, Vote
from webapp.play import fastsql
from webapp.play.limits import address_key, wait_seconds

TIGHT = {"DOPE_ADDRESS_PAIR_BURST": 3, "DOPE_ADDRESS_PAIR_RATE": 0.001}


def fresh_client(app, address="203.0.113.7", **headers):
    """A new browser (no cookies) from `address`."""
    client = app.test_client()
    client.environ_base.update({"REMOTE_ADDR": address, **headers})
    return client


def bucket(app, key):
    with app.app_context():
        row = db.session.get(RateBucket, key)
        return None if row is None else (row.tokens, row.hour_count)


def test_fresh_sessions_from_one_address_share_its_pair_budget(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, **TIGHT)
    for _ in range(3):
        assert fresh_client(app).get("/api/pair").status_code == 200
    refused = fresh_client(app).get("/api/pair")
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    spent = bucket(app, "pair:203.0.113.7")
    assert spent[1] == 3  # the refusal spent nothing
    # Another address has its own budget.
    assert fresh_client(app, "198.51.100.9").get("/api/pair").status_code == 200


def test_votes_from_one_address_are_capped_by_its_pair_budget(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, **TIGHT)
    for _ in range(3):
        assert cast(fresh_client(app))[1].status_code == 201
    refused = fresh_client(app).get("/api/pair")  # no pair, so no token to vote with
    assert refused.status_code == 429
    with app.app_context():
        assert db.session.query(Vote).count() == 3


def test_hourly_cap_says_when_the_hour_frees_a_slot(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_ADDRESS_PAIR_BURST=100,
                          DOPE_ADDRESS_PAIR_RATE=100.0, DOPE_ADDRESS_PAIRS_PER_HOUR=2)
    client = fresh_client(app)
    assert [client.get("/api/pair").status_code for _ in range(3)] == [200, 200, 429]
    assert int(client.get("/api/pair").headers["Retry-After"]) > 3500


def test_trusted_proxy_gives_each_client_its_own_budget(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, **TIGHT, DOPE_TRUSTED_PROXIES=1)
    for i in range(5):
        client = fresh_client(app, "10.0.0.1", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
        assert client.get("/api/pair").status_code == 200
    assert bucket(app, "pair:192.0.2.4")[1] == 1 and bucket(app, "pair:10.0.0.1") is None


def test_forwarded_for_is_ignored_without_a_trusted_proxy(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, **TIGHT)
    statuses = [fresh_client(app, HTTP_X_FORWARDED_FOR=f"192.0.2.{i}").get("/api/pair")
                .status_code for i in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_a_vote_faster_than_anyone_can_look_is_refused(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_MIN_DECISION_MS=60_000)
    client = fresh_client(app)
    pair, vote = cast(client)
    assert vote.status_code == 429 and vote.json["error"] == "too_fast"
    assert 55 <= float(vote.json["retry_after"]) <= 60
    with app.app_context():
        assert db.session.query(Vote).count() == 0
    # The token is still good: the same vote, sent later, is taken.
    app.config["DOPE_MIN_DECISION_MS"] = 0
    again = client.post("/api/vote", json={"token": pair.json["token"], "verdict": "dope"})
    assert again.status_code == 201


def test_team_sign_in_is_rate_limited(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_TEAM_PASSWORD=PASSWORD,
                          DOPE_LOGIN_BURST=3, DOPE_LOGIN_RATE=0.001)
    client = fresh_client(app)
    codes = []
    for _ in range(4):
        token = csrf_from(client.get("/team/"))
        codes.append(client.post("/team/login", data={"password": "wrong",
                                                      "csrf_token": token}).status_code)
    assert codes == [401, 401, 401, 429]
    token = csrf_from(client.get("/team/"))
    right = client.post("/team/login", data={"password": PASSWORD, "csrf_token": token})
    assert right.status_code == 429 and b"Too many sign-in attempts" in right.data


@pytest.mark.parametrize("address, key", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.1", "198.51.100.1"),
    ("not an address", "not an address"),
    (None, "unknown"),
])
def test_address_key(address, key):
    assert address_key(address) == key


def test_wait_seconds_against_hand_counts():
    p = {"b_now": 100.0, "b_burst": 5.0, "b_rate": 0.5, "b_cap": 10}
    assert wait_seconds((0.0, 100.0, 0.0, 1), p) == pytest.approx(2.0)  # 1 token at 0.5/s
    assert wait_seconds((0.5, 99.0, 0.0, 1), p) == pytest.approx(0.0)  # refilled to 1
    assert wait_seconds((5.0, 100.0, 0.0, 10), p) == pytest.approx(3500.0)  # hourly cap
    assert wait_seconds((5.0, 100.0, -3600.0, 10), p) == 0.0  # a new hour


def test_limits_off_with_zero_burst(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_ADDRESS_PAIR_BURST=0)
    for _ in range(5):
        assert fresh_client(app).get("/api/pair").status_code == 200
    with app.app_context():
        fastsql.rollback()
        assert db.session.query(RateBucket).count() == 0
