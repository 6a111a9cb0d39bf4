"""The fast path (webapp/play/fastpath.py) answers ordinary pair and vote requests exactly as
Flask's views would, and hands everything else to them untouched."""

import json

import pytest
import sqlalchemy as sa
from conftest import make_loaded_app

from webapp.extensions import db
from webapp.models import IssuedToken, Variant, Vote


def counters(app) -> tuple[int, int]:
    return app.wsgi_app.answered, app.wsgi_app.declined


def play(app, rounds=3, **request_kw):
    """A new voter's first pair, then `rounds` pair+vote cycles; return every response."""
    client = app.test_client()
    responses = [client.get("/api/pair", **request_kw)]
    for verdict in ["dope", "nope", "skip"][:rounds]:
        pair = client.get("/api/pair", **request_kw)
        vote = client.post("/api/vote", json={"token": pair.json["token"], "verdict": verdict,
                                              "decision_ms": 812}, **request_kw)
        responses += [pair, vote]
    return responses


def shape(response) -> tuple:
    """Status, headers and body with the random parts (token, ids) reduced to their form."""
    body = response.json
    if "token" in body:
        body = {**body, "token": [len(part) for part in body["token"].split(".")],
                "query": body["query"]["url"][:8], "match": body["match"]["url"][:8]}
    return response.status, [(k, v) for k, v in response.headers.items()
                              if k != "Set-Cookie"], body


def test_fast_path_answers_like_flask(tmp_path, build_dir):
    fast = make_loaded_app(tmp_path / "fast", build_dir)
    slow = make_loaded_app(tmp_path / "slow", build_dir, DOPE_FAST_PATH=False)
    fast_responses, slow_responses = play(fast), play(slow)
    # The new voter's first pair goes to Flask (it sets the voter cookie); the rest not.
    assert counters(fast) == (6, 1)
    assert counters(slow) == (0, 0)
    assert "Set-Cookie" in fast_responses[0].headers
    assert [r.status_code for r in fast_responses] == [200] + [200, 201] * 3
    assert [shape(r) for r in fast_responses] == [shape(r) for r in slow_responses]
    with fast.app_context():
        votes = db.session.scalars(sa.select(Vote).order_by(Vote.id)).all()
        assert [(v.verdict, v.decision_ms) for v in votes] == \
            [("dope", 812), ("nope", 812), ("skip", 812)]
        assert db.session.scalar(sa.select(sa.func.sum(
            Variant.dope_count + Variant.nope_count + Variant.skip_count))) == 3
        assert db.session.scalar(sa.select(sa.func.count()).select_from(IssuedToken)
                                 .where(IssuedToken.used)) == 3


def test_fast_path_uses_the_script_root(tmp_path, build_dir):
    fast = make_loaded_app(tmp_path / "fast", build_dir)
    slow = make_loaded_app(tmp_path / "slow", build_dir, DOPE_FAST_PATH=False)
    for app in (fast, slow):
        responses = play(app, rounds=1, base_url="http://localhost/game/")
        assert responses[1].json["query"]["url"].startswith("/game/images/")
    assert counters(fast)[0] == 2


# (what a voter sends, the status and error Flask's view answers with)
DECLINED = [
    ("no_cookie", 200, None),
    ("text_plain", 400, "bad_request"),
    ("no_length", 400, "bad_request"),
    ("too_long", 400, "bad_request"),
    ("foreign_origin", 403, "bad_origin"),
    ("bad_json", 400, "bad_request"),
    ("bad_verdict", 400, "bad_request"),
    ("edited_token", 400, "bad_token"),
    ("replay", 409, "already_voted"),
    ("other_voter", 403, "wrong_session"),
    ("post_pair", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("case", "status", "error"), DECLINED)
def test_out_of_the_ordinary_goes_to_flask(tmp_path, build_dir, case, status, error):
    app = make_loaded_app(tmp_path, build_dir)
    client = app.test_client()
    client.get("/api/pair")  # a voter cookie
    token = client.get("/api/pair").json["token"]
    good = json.dumps({"token": token, "verdict": "dope"})
    if case == "replay":
        assert client.post("/api/vote", data=good, content_type="application/json"
                           ).status_code == 201
    answered = counters(app)[0]
    send = {
        "no_cookie": lambda: app.test_client().get("/api/pair"),
        "text_plain": lambda: client.post("/api/vote", data=good, content_type="text/plain"),
        "no_length": lambda: client.post("/api/vote", data=good, content_type="application/json",
                                         environ_overrides={"CONTENT_LENGTH": ""}),
        "too_long": lambda: client.post("/api/vote", data=good + " " * 5000,
                                        content_type="application/json"),
        "foreign_origin": lambda: client.post("/api/vote", data=good,
                                              content_type="application/json",
                                              headers={"Origin": "https://evil.example"}),
        "bad_json": lambda: client.post("/api/vote", data="{", content_type="application/json"),
        "bad_verdict": lambda: client.post("/api/vote", json={"token": token, "verdict": "meh"}),
        "edited_token": lambda: client.post("/api/vote", json={"token": "f" * 32 + token[32:],
                                                               "verdict": "dope"}),
        "replay": lambda: client.post("/api/vote", data=good, content_type="application/json"),
        "other_voter": lambda: app.test_client().post("/api/vote", data=good,
                                                      content_type="application/json"),
        "post_pair": lambda: client.post("/api/pair"),
    }[case]
    response = send()
    assert response.status_code == status, response.json
    if error:
        assert response.json["error"] == error
    assert counters(app)[0] == answered  # Flask answered, not the fast path
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Vote)) == \
            (1 if case == "replay" else 0)


def test_declined_requests_change_nothing(tmp_path, build_dir):
    """A vote the fast path starts but cannot finish (rate limit) is rolled back whole:
    Flask then refuses it, and a retry later stores it once."""
    app = make_loaded_app(tmp_path, build_dir, DOPE_MIN_VOTE_INTERVAL_MS=60_000)
    client = app.test_client()
    client.get("/api/pair")
    first, second = (client.get("/api/pair").json["token"] for _ in range(2))
    assert client.post("/api/vote", json={"token": first, "verdict": "dope"}).status_code == 201
    answered, declined = counters(app)
    refused = client.post("/api/vote", json={"token": second, "verdict": "nope"})
    assert refused.status_code == 429
    assert counters(app) == (answered, declined + 1)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Vote)) == 1
        assert db.session.scalar(sa.select(sa.func.sum(Variant.nope_count))) == 0
        assert db.session.scalar(sa.select(IssuedToken.used).where(
            IssuedToken.nonce == second[:32])) is False
    app.config["DOPE_MIN_VOTE_INTERVAL_MS"] = 0
    assert client.post("/api/vote", json={"token": second, "verdict": "nope"}).status_code == 201
    assert counters(app)[0] == answered + 1


def test_server_name_leaves_routing_to_flask(tmp_path, build_dir):
    """With SERVER_NAME set, Flask may route by host: every request goes to Flask."""
    app = make_loaded_app(tmp_path, build_dir, SERVER_NAME="game.example")
    responses = play(app, rounds=2, base_url="http://game.example/")
    assert [r.status_code for r in responses] == [200, 200, 201, 200, 201]
    assert counters(app) == (0, 0)
