"""The fit through the web app: real votes in a real SQLite file, `flask fit`, the
leaderboard and team view reading its results, the export carrying reasons."""

import json

import sqlalchemy as sa
from buildmaker import write_build
from conftest import make_loaded_app

from webapp.extensions import db
from webapp.models import FitResult, IssuedToken, Pair, Variant, Vote


def is_control(app, token: str) -> bool:
    """Whether a served token's pair is the random control's (the test knows, the voter not)."""
    with app.app_context():
        return bool(db.session.scalar(
            sa.select(Variant.control).join(Pair, Pair.variant_id == Variant.id)
            .join(IssuedToken, IssuedToken.pair_id == Pair.id)
            .where(IssuedToken.nonce == token.split(".")[0])))


def play(app, answer, most=500):
    """One voter answers every pair it is served with answer(is_control); returns votes."""
    client, cast = app.test_client(), 0
    for _ in range(most):
        pair = client.get("/api/pair")
        if pair.status_code == 404:
            break
        verdict = answer(is_control(app, pair.json["token"]))
        assert client.post("/api/vote", json={"token": pair.json["token"],
                                              "verdict": verdict}).status_code == 201
        cast += 1
    return cast


def test_a_yes_sayer_is_excluded_and_listed_and_the_board_reads_the_fit(tmp_path):
    build = write_build(tmp_path / "b", n_queries=30, n_catalog=60)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.3, DOPE_TEAM_PASSWORD="pw")
    for _ in range(3):
        play(app, lambda control: "nope" if control else "dope")  # honest enough
    yes_votes = play(app, lambda control: "dope")
    assert yes_votes > 60
    result = app.test_cli_runner().invoke(args=["fit"])
    assert result.exit_code == 0 and "1 of 4 voters excluded" in result.output
    with app.app_context():
        body = json.loads(db.session.scalars(sa.select(FitResult.body)).one())
    listed = body["voters"]["listed"]
    assert len(listed) == 1 and listed[0]["votes"] == yes_votes
    assert listed[0]["gold_dopes"] == listed[0]["gold_votes"] > 10
    assert body["corrected"]["judgments"] == body["raw"]["judgments"] - yes_votes

    client = app.test_client()
    board = client.get("/api/leaderboard").json
    real = [v for v in board["variants"] if not v["control"]]
    assert abs(sum(v["p_best"] for v in real) - 1) < 1e-3
    assert all(v["ci_low"] <= v["estimate"] <= v["ci_high"] for v in real)
    assert {"settled", "leader", "tied_with", "fit"} <= set(board)
    control = next(v for v in board["variants"] if v["control"])
    assert control["estimate"] < 0.2  # the honest voters said nope to every control pair

    client.get("/team/")  # a session for the CSRF token
    with client.session_transaction() as session:
        session["team"] = True
    page = client.get("/team/").get_data(as_text=True)
    assert listed[0]["voter"] in page and "Voters excluded from the ranking" in page


def test_votes_and_their_export_carry_the_rule_and_probability(tmp_path):
    build = write_build(tmp_path / "b", n_queries=10, n_catalog=30)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.2)
    play(app, lambda control: "dope", most=30)
    out = tmp_path / "votes.jsonl"
    assert app.test_cli_runner().invoke(args=["export-votes", str(out)]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert len(rows) == 30
    assert {r["reason"] for r in rows} <= {"uniform", "adaptive", "control"}
    assert "control" in {r["reason"] for r in rows}
    assert all(0 < r["probability"] <= 1 for r in rows)
    with app.app_context():
        stored = db.session.execute(sa.select(Vote.reason, Vote.probability)
                                    .order_by(Vote.id)).all()
    assert [(r["reason"], r["probability"]) for r in rows] == [tuple(s) for s in stored]


def test_the_next_fit_steers_the_adaptive_rule(tmp_path):
    build = write_build(tmp_path / "b", n_queries=20, n_catalog=40)
    app = make_loaded_app(tmp_path, build, DOPE_ADAPTIVE_SHARE=1.0)
    play(app, lambda control: "dope", most=40)
    assert app.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    with app.app_context():
        body = json.loads(db.session.scalars(sa.select(FitResult.body)).one())
        leader = body["corrected"]["leader"]
        leader_id = db.session.scalar(sa.select(Variant.id).where(Variant.slug == leader))
    focus = body["allocation"]["focus"]
    assert focus and all(a == leader_id for a, _, _ in focus)
    before = play(app, lambda control: "nope", most=30)
    with app.app_context():
        reasons = db.session.scalars(sa.select(IssuedToken.reason)
                                     .order_by(IssuedToken.id.desc()).limit(before)).all()
    assert set(reasons) == {"adaptive"}


def test_the_periodic_fit_starts_from_a_leaderboard_request(tmp_path):
    build = write_build(tmp_path / "b", n_queries=10, n_catalog=30)
    app = make_loaded_app(tmp_path, build, DOPE_FIT_INTERVAL=3600)
    play(app, lambda control: "dope", most=10)
    from webapp import fit

    client = app.test_client()
    client.get("/api/leaderboard")
    with fit._RUNNING:  # wait for the background fit to finish
        pass
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(FitResult.id))) == 1
    client.get("/api/leaderboard")  # fresh: no second fit
    with fit._RUNNING:
        pass
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(FitResult.id))) == 1
