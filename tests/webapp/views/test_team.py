import csv
import io
import json
import re

import pytest
from conftest import cast, make_app, make_loaded_app
from team_helpers import PASSWORD, csrf_from, login

from webapp.jobs.export import COLUMNS


@pytest.fixture
def team_app(tmp_path, build_dir):
    app = make_loaded_app(tmp_path, build_dir, DOPE_TEAM_PASSWORD=PASSWORD)
    return app


def test_team_disabled_without_password(client):
    page = client.get("/team/")
    assert page.status_code == 200
    assert b"disabled" in page.data
    assert client.get("/team/votes.csv").status_code == 302


def test_team_login_and_view(team_app):
    client = team_app.test_client()
    for verdict in ("dope", "nope", "skip"):
        cast(client, verdict, decision_ms=900)
    assert b'type="password"' in client.get("/team/").data
    assert client.get("/team/votes.jsonl").status_code == 302
    assert login(client).status_code == 302
    page = client.get("/team/")
    assert page.status_code == 200
    assert b"Per category" in page.data and b"/images/" in page.data
    assert b"Votes per hour" in page.data


def test_wrong_password(team_app):
    client = team_app.test_client()
    response = login(client, "guess")
    assert response.status_code == 401
    assert b'type="password"' in client.get("/team/").data


@pytest.mark.parametrize("token", [None, "", "forged"])
def test_login_needs_csrf_token(team_app, token):
    client = team_app.test_client()
    client.get("/team/")
    data = {"password": PASSWORD} | ({"csrf_token": token} if token is not None else {})
    assert client.post("/team/login", data=data).status_code == 400
    assert b'type="password"' in client.get("/team/").data


def test_csrf_token_is_bound_to_the_session(team_app):
    token = csrf_from(team_app.test_client().get("/team/"))
    other = team_app.test_client()
    other.get("/team/")
    assert other.post("/team/login", data={"password": PASSWORD,
                                           "csrf_token": token}).status_code == 400


def test_logout(team_app):
    client = team_app.test_client()
    login(client)
    token = csrf_from(client.get("/team/"))
    assert client.post("/team/logout", data={"csrf_token": token}).status_code == 302
    assert b'type="password"' in client.get("/team/").data


def test_downloads(team_app):
    client = team_app.test_client()
    for verdict in ("dope", "nope"):
        cast(client, verdict, decision_ms=500)
    login(client)
    jsonl = client.get("/team/votes.jsonl")
    assert jsonl.status_code == 200 and "attachment" in jsonl.headers["Content-Disposition"]
    lines = [json.loads(line) for line in jsonl.data.decode().splitlines()]
    assert lines[0]["kind"] == "dope-or-nope-votes" and lines[0]["format_version"] == 2
    assert [v["verdict"] for v in lines[1:]] == ["dope", "nope"]
    rows = list(csv.DictReader(io.StringIO(client.get("/team/votes.csv").data.decode())))
    assert [r["verdict"] for r in rows] == ["dope", "nope"]


def test_export_votes_cli(team_app, tmp_path):
    client = team_app.test_client()
    for verdict in ("dope", "skip"):
        cast(client, verdict, decision_ms=700)
    runner = team_app.test_cli_runner()
    jsonl, csv_path = tmp_path / "v.jsonl", tmp_path / "v.csv"
    assert runner.invoke(args=["export-votes", str(jsonl)]).exit_code == 0
    assert runner.invoke(args=["export-votes", str(csv_path)]).exit_code == 0
    header, *votes = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert set(header) == {"format_version", "kind", "exported_at", "builds"}
    assert len(header["builds"]) == 1
    assert [list(v) for v in votes] == [COLUMNS, COLUMNS]
    first = votes[0]
    assert first["verdict"] == "dope" and first["decision_ms"] == 700
    assert first["query_id"].startswith("t-query-") and first["match_id"].startswith("t-")
    assert re.fullmatch(r"[0-9a-f]{12}", first["voter"])
    assert votes[0]["voter"] == votes[1]["voter"]  # stable within one export
    assert first["created_at"].endswith("+00:00")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        assert [r["verdict"] for r in reader] == ["dope", "skip"]


def test_export_needs_a_known_extension(team_app, tmp_path):
    result = team_app.test_cli_runner().invoke(args=["export-votes", str(tmp_path / "v.txt")])
    assert result.exit_code != 0


def test_html_errors_use_the_error_page(client):
    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert b"404" in page.data and b"Back to the game" in page.data


def test_500_rolls_back_and_renders(tmp_path):
    app = make_app(tmp_path)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("boom")

    response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    assert response.json["error"] == "internal_server_error"


@pytest.mark.parametrize("path", ["/", "/play"])
def test_game_pages_render(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert b"<html" in page.data
