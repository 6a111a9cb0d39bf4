"""The whole loop, as a team runs it: build -> import -> votes -> export -> retrain ->
import the challenger -> the game serves it.

A small real engine build (Fashion-MNIST slice, CPU), simulated voters with a tone
taste playing a real gunicorn over HTTP, `flask export-votes`, `python -m engine
retrain`, `flask import-build` of the challenger into the same database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from e2e_harness import ROOT, flask_cli, running_server

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]
TASTE = """
name = "dark-with-dark"
[taste]
bias = -6.0
category = 1.0
tone = 9.0
"""


def engine(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def loop_build(tmp_path_factory):
    if not Path(FASHION_MNIST).is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("loop") / "build"
    engine("-q", "build", "--catalog", "fashion-mnist", "--limit", "300", "--queries", "40",
           "--variants", "offline", "--image-size", "32", "--device", "cpu", "--seed", "5",
           "--no-tsne", "--out", str(out))
    return out


def test_votes_retrain_import_and_the_challenger_is_served(loop_build, tmp_path):
    taste = tmp_path / "taste.toml"
    taste.write_text(TASTE)
    # No random-control share: the pair after the import must be the challenger's.
    with running_server(tmp_path / "srv", build=loop_build, workers=2,
                        env={"DOPE_CONTROL_SHARE": "0"}) as server:
        engine("crowd", "play", "--build", str(loop_build), "--url", server.url,
               "--taste", str(taste), "--votes", "1500", "--voters", "8", "--fast",
               "--seed", "3")
        before = server.query("SELECT id, pair_id, verdict, voter_id FROM vote ORDER BY id")
        assert len(before) == 1500
        votes = tmp_path / "votes.jsonl"
        flask_cli(server.env, "export-votes", str(votes))
        out = tmp_path / "challenger"
        proc = engine("retrain", "--build", str(loop_build), "--votes", str(votes),
                      "--queries", "30", "--seed", "1", "--out", str(out))
        assert "Challenger " in proc.stdout, proc.stdout + proc.stderr[-2000:]
        manifest = json.loads((out / "manifest.json").read_text())
        challenger = manifest["variants"][-1]
        assert challenger["retrained"]["round"] == 1
        assert manifest["lineage"][0]["votes"]["usable"] <= 1500
        flask_cli(server.env, "import-build", str(out))

        # Every earlier vote is still there, as it was.
        assert server.query("SELECT id, pair_id, verdict, voter_id FROM vote ORDER BY id") \
            == before
        # The running server serves the challenger's pairs at once (the uniform rule
        # draws every real variant alike); vote on the first one.
        with requests.Session() as s:
            s.headers["Origin"] = server.url
            for _ in range(200):
                pair = s.get(server.url + "/api/pair", timeout=30)
                assert pair.status_code == 200
                served = server.query(
                    "SELECT variant.slug FROM issued_token JOIN pair ON pair.id = "
                    "issued_token.pair_id JOIN variant ON variant.id = pair.variant_id "
                    "ORDER BY issued_token.id DESC LIMIT 1")[0][0]
                if served == challenger["slug"]:
                    break
            assert served == challenger["slug"]
            vote = s.post(server.url + "/api/vote", timeout=30,
                          json={"token": pair.json()["token"], "verdict": "dope"})
            assert vote.status_code == 201
        board = requests.get(server.url + "/api/leaderboard", timeout=30).json()
        row = next(r for r in board["variants"] if r["slug"] == challenger["slug"])
        assert row["votes"] == 1 and row["parent"] == challenger["retrained"]["parent"]
        assert row["round"] == 1
        page = requests.get(server.url + "/leaderboard", timeout=30).text
        assert "retrained · round 1" in page
        assert board["total_votes"] + board["total_skips"] == 1501
