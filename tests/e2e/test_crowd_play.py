"""`python -m engine crowd play` against a real gunicorn, as a user runs it.

The crowd knows only the build directory and the URLs the server sends; the test
then reads the server's database itself to check every vote landed.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests
from e2e_harness import ROOT, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def crowd_play(server, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "engine", "crowd", "play", "--build",
                           str(server.build), "--url", server.url, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_crowd_play_casts_n_votes_the_leaderboard_counts(live_server):
    before = live_server.query("SELECT COUNT(*) FROM vote")[0][0]
    out = crowd_play(live_server, "--votes", "240", "--voters", "6", "--fast",
                     "--mix", "honest=0.7,yes=0.1,random=0.1,adversary=0.1", "--seed", "2")
    assert re.search(r"Votes cast: 240 ", out), out
    assert "stopped by votes" in out and "201: 240" in out
    assert live_server.query("SELECT COUNT(*) FROM vote")[0][0] == before + 240
    board = requests.get(live_server.url + "/api/leaderboard", timeout=30).json()
    assert board["total_votes"] + board["total_skips"] == before + 240
    # Its closing table puts each variant's truth beside the server's own figures.
    for row in board["variants"]:
        assert re.search(rf"\| {re.escape(row['slug'])} \| 0\.\d{{3}} \| .* \| {row['votes']} \|",
                         out), (row["slug"], out)
    # Several people played (one cookie each, more for the adversary).
    voters = live_server.query("SELECT COUNT(DISTINCT voter_id) FROM vote")[0][0]
    assert voters >= 6


def test_crowd_play_waits_out_the_servers_limits(tmp_path, game_build):
    # The default minimum interval between one voter's votes; the crowd votes faster.
    with running_server(tmp_path / "srv", build=game_build, workers=1,
                        env={"DOPE_MIN_VOTE_INTERVAL_MS": "250"}) as server:
        out = crowd_play(server, "--votes", "8", "--voters", "1", "--fast", "--seed", "1",
                         "--mix", "yes=1")
        assert "Votes cast: 8 " in out, out
        assert re.search(r"429: \d+", out), out
        assert server.query("SELECT COUNT(*) FROM vote")[0][0] == 8


def test_behind_a_trusted_proxy_each_simulated_person_is_its_own_address(tmp_path,
                                                                          game_build):
    with running_server(tmp_path / "srv", build=game_build, workers=1,
                        env={"DOPE_TRUSTED_PROXIES": "1"}) as server:
        out = crowd_play(server, "--votes", "60", "--voters", "4", "--fast", "--seed", "5",
                         "--forwarded-for")
        assert "Votes cast: 60 " in out, out
        people = int(re.search(r"(\d+) people", out).group(1))
        addresses = server.query("SELECT COUNT(*) FROM rate_bucket WHERE key LIKE 'pair:198.1%'")
        assert addresses[0][0] == people > 1
        assert server.query("SELECT COUNT(*) FROM rate_bucket WHERE key = 'pair:127.0.0.1'") \
            == [(0,)]
