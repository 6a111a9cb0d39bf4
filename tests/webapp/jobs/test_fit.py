"""The fit through the web app: real votes in a real SQLite file, `flask fit`, the
leaderboard and team view reading its results, the export carrying reasons."""

import json

import sqlalchemy as sa
from buildmaker import write_build
from conftest import make_loaded_app

from webapp.extensions import db
from webapp.models import FitResult, Image, IssuedToken, Pair, Variant, Vote


def served(app, token: str, query):
    """The value `query` (a select joined to Pair) finds for a served token's pair."""
    with app.app_context():
        return db.session.scalar(query.join(IssuedToken, IssuedToken.pair_id == Pair.id)
                                 .where(IssuedToken.nonce == token.split(".")[0]))


def variant_of(app, token: str) -> str:
    return served(app, token, sa.select(Variant.slug).join(Pair, Pair.variant_id == Variant.id))


def is_control(app, token: str) -> bool:
    """Whether a served token's pair is the random control's (the test knows, the voter not)."""
    return bool(served(app, token,
                       sa.select(Variant.control).join(Pair, Pair.variant_id == Variant.id)))


def query_category(app, token: str) -> str:
    return served(app, token, sa.select(Image.category).join(Pair, Pair.query_id == Image.id))


def play(app, answer, most=500, address="127.0.0.1", by_variant=False, by_category=False):
    """One voter answers every pair it is served with answer(is_control), with
    answer(variant slug) when by_variant, or answer(is_control, the query's category)
    when by_category; returns how many votes it cast."""
    client, cast = app.test_client(), 0
    client.environ_base["REMOTE_ADDR"] = address
    for _ in range(most):
        pair = client.get("/api/pair")
        if pair.status_code == 404:
            break
        token = pair.json["token"]
        if by_category:
            verdict = answer(is_control(app, token), query_category(app, token))
        else:
            verdict = answer(variant_of(app, token) if by_variant else is_control(app, token))
        assert client.post("/api/vote", json={"token": pair.json["token"],
                                              "verdict": verdict}).status_code == 201
        cast += 1
    return cast


def test_a_yes_sayer_is_excluded_and_listed_and_the_board_reads_the_fit(tmp_path):
    # Enough control pairs that a yes-sayer can show it is at chance: a crowd this small
    # is held to chance on gold (J 0.1, webapp.stats.quality), with z > 2.58.
    build = write_build(tmp_path / "b", n_queries=80, n_catalog=160)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.3, DOPE_TEAM_PASSWORD="pw")
    for _ in range(3):
        play(app, lambda control: "nope" if control else "dope")  # honest enough
    yes_votes = play(app, lambda control: "dope")
    assert yes_votes > 200
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
    from webapp.jobs import fit_schedule

    client = app.test_client()
    client.get("/api/leaderboard")
    with fit_schedule._RUNNING:  # wait for the background fit to finish
        pass
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(FitResult.id))) == 1
    client.get("/api/leaderboard")  # fresh: no second fit
    with fit_schedule._RUNNING:
        pass
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(FitResult.id))) == 1


def test_one_address_behind_many_cookies_is_excluded_as_one(tmp_path):
    """Twelve cookies of twenty votes each, all from one address, all dope: no cookie
    alone is evidence, the address is (at chance on gold, z > 2.58); honest voters on
    their own addresses stay."""
    build = write_build(tmp_path / "b", n_queries=30, n_catalog=60)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.3, DOPE_TEAM_PASSWORD="pw")
    for k in range(3):
        play(app, lambda control: "nope" if control else "dope", address=f"10.0.1.{k}")
    stuffed = sum(play(app, lambda control: "dope", most=20, address="10.9.9.9")
                  for _ in range(12))
    assert app.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    with app.app_context():
        body = json.loads(db.session.scalars(sa.select(FitResult.body)).one())
        origins = db.session.scalars(sa.select(Vote.origin).distinct()).all()
    assert len(origins) == 4 and all(len(o) == 16 for o in origins)  # hashes, not addresses
    assert "10.9.9.9" not in json.dumps(body)
    report = body["voters"]
    assert report["excluded"] == 0  # no single cookie shows enough
    assert report["excluded_origins"] == 1
    assert report["listed_origins"][0]["voters"] == 12
    assert report["listed_origins"][0]["votes"] == stuffed
    assert body["corrected"]["judgments"] == body["raw"]["judgments"] - stuffed


def test_many_honest_cookies_behind_one_address_are_not_excluded_for_being_many(tmp_path):
    """An office behind one NAT: twenty people with their own leniency, one address."""
    import random

    build = write_build(tmp_path / "b", n_queries=40, n_catalog=80)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.1)
    rng = random.Random(2)
    for k in range(3):
        play(app, lambda slug: "nope" if slug == "random" else rng.choice(["dope", "nope"]),
             by_variant=True, address=f"10.0.3.{k}")
    for _ in range(20):
        lenient = rng.uniform(0.3, 0.9)
        play(app, lambda slug, p=lenient: "nope" if slug == "random" or rng.random() > p
             else "dope", most=25, by_variant=True, address="10.5.5.5")
    assert app.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    with app.app_context():
        body = json.loads(db.session.scalars(sa.select(FitResult.body)).one())
    assert body["voters"]["excluded_origins"] == 0 and body["voters"]["excluded"] == 0
    assert body["corrected"]["judgments"] == body["raw"]["judgments"]


def test_an_address_whose_votes_follow_one_variant_is_excluded(tmp_path):
    """Right on every control pair, so not at chance: but its dopes follow one variant's
    pairs, not the pictures, against what everyone else says of the same pairs."""
    build = write_build(tmp_path / "b", n_queries=40, n_catalog=80)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.1)
    import random

    rng = random.Random(0)
    for k in range(6):  # honest-ish: dope on a coin weighted by the pair, nope on controls
        play(app, lambda slug: "nope" if slug == "random" else rng.choice(["dope", "nope"]),
             by_variant=True, address=f"10.0.2.{k}")
    with app.app_context():
        target = db.session.scalars(sa.select(Variant.slug).where(~Variant.control)
                                    .order_by(Variant.id)).first()
    pushed = sum(play(app, lambda slug: "dope" if slug == target else "nope", most=20,
                      by_variant=True, address="10.7.7.7") for _ in range(8))
    assert app.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    with app.app_context():
        body = json.loads(db.session.scalars(sa.select(FitResult.body)).one())
    listed = body["voters"]["listed_origins"]
    assert len(listed) == 1 and listed[0]["why"].startswith(f"follows {target}")
    assert listed[0]["votes"] == pushed and listed[0]["gold_dopes"] == 0


def test_each_category_has_its_board_with_the_same_intervals(tmp_path):
    """Voters who like every match of a Dress query and none of the others: the Dress
    board has every variant near 1, the Trouser board near 0, the whole board between."""
    build = write_build(tmp_path / "b", n_queries=30, n_catalog=60)
    app = make_loaded_app(tmp_path, build, DOPE_CONTROL_SHARE=0.1)
    for k in range(4):
        play(app, lambda control, category: "dope" if not control and category == "Dress"
             else "nope", by_category=True, address=f"10.0.4.{k}")
    assert app.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    client = app.test_client()
    whole = client.get("/api/leaderboard").json
    assert whole["category"] is None and {"Dress", "Trouser"} <= set(whole["categories"])
    dress = client.get("/api/leaderboard?category=Dress").json
    trouser = client.get("/api/leaderboard?category=Trouser").json
    for board, near in ((dress, 1.0), (trouser, 0.0)):
        real = [v for v in board["variants"] if not v["control"]]
        # Not exactly 0 or 1: a control pair may show the very pair a variant shows (one
        # cell), and the voters say nope to whatever the control serves.
        assert all(abs(v["estimate"] - near) < 0.25 for v in real), board["category"]
        assert all(v["ci_low"] <= v["estimate"] <= v["ci_high"] for v in real)
        assert all(v["votes"] > 0 for v in real)
    overall = [v["estimate"] for v in whole["variants"] if not v["control"]]
    assert all(0.02 < e < 0.5 for e in overall)  # one category in ten
    missing = client.get("/api/leaderboard?category=hats")
    assert missing.status_code == 404 and "Dress" in missing.json["categories"]
    assert "unknown category 'hats'" in missing.json["message"]
    page = client.get("/leaderboard?category=Trouser")
    assert page.status_code == 200 and "Leaderboard · Trouser" in page.get_data(as_text=True)
    assert client.get("/leaderboard?category=hats").status_code == 404


def test_warm_up_gold_weighs_voters_and_never_variants(tmp_path):
    """Every voter's first pair is a warm-up gold pair: yes-sayers who cast four votes
    lose their say (webapp.stats.looking), honest voters keep it, and no warm-up vote
    enters any variant's figures."""
    build = write_build(tmp_path / "b", n_queries=80, n_catalog=160)
    app = make_loaded_app(tmp_path, build, DOPE_GOLD_FIRST_PAIRS=1, DOPE_GOLD_FIRST_SHARE=1.0,
                          DOPE_TEAM_PASSWORD="pw")
    for _ in range(30):
        play(app, lambda control: "nope" if control else "dope", most=4)
    for _ in range(10):
        play(app, lambda control: "dope", most=4)
    assert app.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    with app.app_context():
        body = json.loads(db.session.scalars(sa.select(FitResult.body)).one())
        gold = db.session.scalar(sa.select(sa.func.count()).select_from(Vote)
                                 .where(Vote.reason == "gold"))
    assert gold == body["gold_first_judgments"] == 40
    assert body["raw"]["judgments"] == body["corrected"]["judgments"] == 40 * 3
    looking = body["voters"]["looking"]
    assert looking["below_half"] == 10 and 0.1 < looking["indiscriminate_share"] < 0.4
    assert body["voters"]["excluded"] == 0  # too few votes for the floor: weighed, not dropped
    client = app.test_client()
    client.get("/team/")
    with client.session_transaction() as session:
        session["team"] = True
    page = client.get("/team/").get_data(as_text=True)
    assert "10 voter(s) count for less than half" in page

    out = tmp_path / "votes.jsonl"
    assert app.test_cli_runner().invoke(args=["export-votes", str(out)]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert sum(r["reason"] == "gold" for r in rows) == 40
