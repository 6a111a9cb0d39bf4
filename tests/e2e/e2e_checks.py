"""Shared checks for the end-to-end tests: votes in the database, the leaderboard."""

from __future__ import annotations

import time

import requests
from e2e_harness import LiveServer, voter_of_cookie

VERDICT_FIELDS = {"dope": ("votes", "approvals"), "nope": ("votes",), "skip": ("skips",)}


def voter_id_of(context, server: LiveServer) -> str:
    """Return the voter id in a browser context's voter cookie."""
    cookies = [c for c in context.cookies(server.url) if c["name"] == "dope_voter"]
    assert cookies, "the browser got no voter cookie"
    return voter_of_cookie(cookies[0]["value"])


def votes_of(server: LiveServer, voter: str) -> list[tuple]:
    """Return (verdict, decision_ms, variant slug, pair id) of a voter's votes, oldest first."""
    return server.query(
        "SELECT vote.verdict, vote.decision_ms, variant.slug, vote.pair_id FROM vote "
        "JOIN variant ON variant.id = vote.variant_id WHERE vote.voter_id = ? ORDER BY vote.id",
        (voter,))


def wait_for_votes(server: LiveServer, voter: str, n: int, timeout: float = 20) -> list[tuple]:
    """Poll the database until the voter has n votes (never more); return them."""
    deadline = time.monotonic() + timeout
    rows = votes_of(server, voter)
    while len(rows) < n and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = votes_of(server, voter)
    assert len(rows) == n, f"expected {n} votes in the database, found {rows}"
    return rows


def leaderboard(server: LiveServer) -> dict[str, dict]:
    """Return /api/leaderboard's rows by slug."""
    r = requests.get(server.url + "/api/leaderboard", timeout=10)
    assert r.status_code == 200, r.text
    return {row["slug"]: row for row in r.json()["variants"]}


def assert_leaderboard_counts_votes(server: LiveServer) -> dict[str, dict]:
    """Every variant's leaderboard counts equal the votes in the database on the image
    pairs it returns (pooled: a control's random match can be a variant's very pair)."""
    board = leaderboard(server)
    rows = server.query("SELECT variant.slug, vote.verdict, COUNT(DISTINCT vote.id) FROM vote "
                        "JOIN pair AS shown ON shown.id = vote.pair_id "
                        "JOIN pair AS other ON other.query_id = shown.query_id "
                        "AND other.match_id = shown.match_id "
                        "JOIN variant ON variant.id = other.variant_id "
                        "GROUP BY variant.slug, vote.verdict")
    counts: dict[str, dict[str, int]] = {}
    for slug, verdict, n in rows:
        counts.setdefault(slug, {})[verdict] = n
    for slug, row in board.items():
        c = counts.get(slug, {})
        assert row["votes"] == c.get("dope", 0) + c.get("nope", 0), (slug, row, c)
        assert row["approvals"] == c.get("dope", 0), (slug, row, c)
        assert row["skips"] == c.get("skip", 0), (slug, row, c)
    return board


def assert_on_leaderboard(before: dict, after: dict, slug: str, verdict: str) -> None:
    """The one new vote (slug, verdict) moved exactly the right leaderboard counts: the
    served variant's, and any other's only as a variant returning the same image pair
    (assert_leaderboard_counts_votes checks which do)."""
    def moved(s):
        return tuple(after[s][k] - before[s][k] for k in ("votes", "approvals", "skips"))

    expected = tuple(1 if key in VERDICT_FIELDS[verdict] else 0
                     for key in ("votes", "approvals", "skips"))
    assert moved(slug) == expected, (slug, before[slug], after[slug])
    for s in after:
        assert moved(s) in (expected, (0, 0, 0)), (s, before[s], after[s])
