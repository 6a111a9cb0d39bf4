"""The seam, round trip: a real engine build goes in, the vote export comes back out.

Both sides run as a user runs them, through their command lines: `python -m engine
build` on a small real Fashion-MNIST slice, `flask --app webapp db upgrade` and
`import-build`, gunicorn serving the game, `flask --app webapp export-votes`. The
export must join back to the very files the engine wrote (catalog.csv, pairs.jsonl,
manifest.json): that is what the engine will read to retrain.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from e2e_harness import ROOT, flask_cli, running_server

from engine.formats.builddir import read_build
from engine.formats.votes import read_votes

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def engine_build(tmp_path_factory):
    """A real engine build made by the engine's own CLI (offline set, 32 px, CPU)."""
    out = tmp_path_factory.mktemp("seam") / "build"
    cmd = [sys.executable, "-m", "engine", "-q", "build", "--catalog", "fashion-mnist",
           "--limit", "200", "--queries", "12", "--variants", "offline", "--image-size", "32",
           "--device", "cpu", "--seed", "3", "--no-tsne", "--out", str(out)]
    if not Path(FASHION_MNIST).is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _read_build(out):
    manifest = json.loads((out / "manifest.json").read_text())
    with open(out / "catalog.csv", newline="") as f:
        catalog = {row["image_id"]: row for row in csv.DictReader(f)}
    pairs = {(p["query_id"], p["match_id"], p["variant"])
             for p in map(json.loads, (out / "pairs.jsonl").read_text().splitlines())}
    return manifest, catalog, pairs


def _vote(server, n: int) -> list[tuple[int, str]]:
    """Cast n votes as one voter through the public API; return (vote id, verdict)."""
    cast = []
    with requests.Session() as s:
        s.headers["Origin"] = server.url
        for i in range(n):
            pair = s.get(server.url + "/api/pair", timeout=30)
            assert pair.status_code == 200, pair.text
            verdict = ("dope", "nope", "skip")[i % 3]
            r = s.post(server.url + "/api/vote", timeout=30,
                       json={"token": pair.json()["token"], "verdict": verdict})
            assert r.status_code == 201, r.text
            cast.append((r.json()["id"], verdict))
    return cast


def test_engine_build_to_votes_and_back(engine_build, tmp_path):
    manifest, catalog, pairs = _read_build(engine_build)
    with running_server(tmp_path / "srv", build=engine_build, workers=1) as server:
        # Every variant of the engine's manifest, control included, is in the game.
        board = requests.get(server.url + "/api/leaderboard", timeout=30).json()
        assert {r["slug"] for r in board["variants"]} == {v["slug"] for v in manifest["variants"]}
        offline = json.loads((engine_build / "eval.json").read_text())["variants"]
        for row in board["variants"]:
            assert row["offline_accuracy"] == offline[row["slug"]]["top1_accuracy"]
        cast = _vote(server, 24)
        export = tmp_path / "votes.jsonl"
        flask_cli(server.env, "export-votes", str(export))
        flask_cli(server.env, "export-votes", str(tmp_path / "votes.csv"))

    header, *rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert header["format_version"] == 2 and header["kind"] == "dope-or-nope-votes"
    assert header["builds"] == [manifest["build_id"]]
    assert [(r["vote_id"], r["verdict"]) for r in rows] == cast
    for r in rows:
        # Each vote names a pair the engine wrote, by the engine's own ids.
        assert (r["query_id"], r["match_id"], r["variant"]) in pairs
        assert catalog[r["query_id"]]["split"] == "query"
        assert catalog[r["match_id"]]["split"] == "catalog"
        assert r["build_id"] == manifest["build_id"]
    with open(tmp_path / "votes.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [(int(r["vote_id"]), r["query_id"], r["match_id"], r["variant"], r["verdict"])
            for r in csv_rows] == [(r["vote_id"], r["query_id"], r["match_id"], r["variant"],
                                    r["verdict"]) for r in rows]

    # The engine's own reader takes both real exports, vote for vote, and every vote
    # joins the build as the engine reads it back.
    built = read_build(engine_build)
    build_pairs = {(p.query_id, p.match_id, p.variant) for p in built.pairs}
    for name in ("votes.jsonl", "votes.csv"):
        read = read_votes(tmp_path / name)
        assert [(v.vote_id, v.verdict) for v in read.votes] == cast
        assert all((v.query_id, v.match_id, v.variant) in build_pairs for v in read.votes)
        # Every field as exported; the voter hash has a new salt per export, so the CSV's
        # voters are other hashes of the same grouping.
        assert [v.to_dict() | {"voter": r["voter"]} for v, r in zip(read.votes, rows,
                                                                  strict=True)] == rows
        assert len({(v.voter, r["voter"]) for v, r in zip(read.votes, rows, strict=True)}) \
            == len({r["voter"] for r in rows})
    assert read_votes(export).header["builds"] == [built.build_id]
