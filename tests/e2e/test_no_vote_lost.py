"""No vote lost: 8 voters x 500 votes against gunicorn, on SQLite and PostgreSQL,
then again while gunicorn workers are killed with SIGKILL mid-run.

Each voter is its own requests.Session (its own signed voter cookie). A request
that dies with the worker is resent with the SAME token, as the browser does: a
vote that was stored but whose answer was lost comes back 409 and counts as stored.
At the end every acknowledged vote is in the database exactly once, the database
holds nothing else, the leaderboard counters agree, and nothing ever answered 5xx.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import pytest
import requests
from buildmaker import write_build
from e2e_harness import running_server, voter_of_cookie

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

VOTERS = 8
VOTES_EACH = int(os.environ.get("DOPE_LOAD_VOTES", "500"))
WORKERS = 3
MAX_KILLS = 5
VERDICTS = ("dope", "dope", "nope", "nope", "skip")
LOST = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


@dataclass
class VoterLog:
    """What one voter saw."""

    acked: list[int] = field(default_factory=list)  # vote ids from 201 answers
    stored_on_resend: int = 0  # 409 to a resend after a lost answer: stored by the first try
    connection_errors: int = 0
    server_errors: list[str] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)
    voter_id: str = ""

    @property
    def stored(self) -> int:
        return len(self.acked) + self.stored_on_resend


@dataclass
class Progress:
    votes: int = 0
    connection_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, votes=0, errors=0):
        with self.lock:
            self.votes += votes
            self.connection_errors += errors


def _fetch_token(s: requests.Session, url: str, log: VoterLog, progress: Progress) -> str | None:
    for _ in range(100):
        try:
            r = s.get(url + "/api/pair", timeout=60)
        except LOST:
            log.connection_errors += 1
            progress.add(errors=1)
            time.sleep(0.05)
            continue
        if r.status_code == 200:
            return r.json()["token"]
        bucket = log.server_errors if r.status_code >= 500 else log.other_errors
        bucket.append(f"GET /api/pair -> {r.status_code} {r.text[:200]}")
        if r.status_code < 500:
            return None
    return None


def _send_vote(s, url, token, verdict, log: VoterLog, progress: Progress) -> None:
    resent = False
    for _ in range(100):
        try:
            r = s.post(url + "/api/vote", json={"token": token, "verdict": verdict,
                                                "decision_ms": 900}, timeout=60)
        except LOST:
            log.connection_errors += 1
            progress.add(errors=1)
            resent = True
            time.sleep(0.05)
            continue
        if r.status_code == 201:
            log.acked.append(r.json()["id"])
        elif r.status_code == 409 and resent:
            log.stored_on_resend += 1
        elif r.status_code >= 500:
            log.server_errors.append(f"POST /api/vote -> {r.status_code} {r.text[:200]}")
            resent = True
            continue
        else:
            log.other_errors.append(f"POST /api/vote -> {r.status_code} {r.text[:200]}")
        progress.add(votes=1)
        return
    log.other_errors.append("a vote could not be delivered in 100 tries")


def cast_votes(url: str, n: int, seed: int, progress: Progress) -> VoterLog:
    """One voter: n rounds of fetch a pair, vote on it."""
    rng, log = random.Random(seed), VoterLog()
    with requests.Session() as s:
        s.headers["Origin"] = url
        for _ in range(n):
            token = _fetch_token(s, url, log, progress)
            if token is None:
                break
            _send_vote(s, url, token, rng.choice(VERDICTS), log, progress)
        log.voter_id = voter_of_cookie(s.cookies["dope_voter"])
    return log


def kill_workers(server, progress: Progress, total: int, stop: threading.Event) -> list[int]:
    """SIGKILL a busy worker a third of the way in; again (up to MAX_KILLS) until a
    request has visibly died with one. Return the killed pids."""
    killed, next_at = [], total // 3
    while not stop.is_set() and len(killed) < MAX_KILLS:
        if progress.votes < next_at:
            time.sleep(0.01)
            continue
        pids = server.worker_pids()
        if not pids:
            time.sleep(0.01)
            continue
        victim = random.choice(pids)
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                victim in server.worker_pids() or len(server.worker_pids()) < server.workers):
            time.sleep(0.05)
        assert len(server.worker_pids()) == server.workers, "gunicorn did not respawn a worker"
        if progress.connection_errors:
            break
        next_at = progress.votes + total // 20
    return killed


def run_load(server, *, kill: bool) -> tuple[list[VoterLog], list[int], float]:
    total = VOTERS * VOTES_EACH
    progress, stop = Progress(), threading.Event()
    started = time.monotonic()
    with ThreadPoolExecutor(VOTERS + 1) as pool:
        killer = pool.submit(kill_workers, server, progress, total, stop) if kill else None
        futures = [pool.submit(cast_votes, server.url, VOTES_EACH, seed, progress)
                   for seed in range(VOTERS)]
        logs = [f.result() for f in futures]
        stop.set()
        killed = killer.result() if killer else []
    return logs, killed, time.monotonic() - started


def assert_no_vote_lost(server, logs: list[VoterLog]) -> None:
    assert [e for log in logs for e in log.server_errors] == []
    assert [e for log in logs for e in log.other_errors] == []
    assert [log.stored for log in logs] == [VOTES_EACH] * VOTERS
    acked = [i for log in logs for i in log.acked]
    assert len(acked) == len(set(acked)), "one vote id was acknowledged twice"
    rows = server.query("SELECT id, voter_id, pair_id, token_nonce FROM vote")
    ids = [r[0] for r in rows]
    assert set(acked) <= set(ids), f"acknowledged but missing: {sorted(set(acked) - set(ids))}"
    assert len(ids) == len(acked) + sum(log.stored_on_resend for log in logs)
    assert len({(v, p) for _, v, p, _ in rows}) == len(rows), "a voter judged a pair twice"
    assert len({n for *_, n in rows}) == len(rows), "a token bought two votes"
    by_voter = {}
    for _, voter, _, _ in rows:
        by_voter[voter] = by_voter.get(voter, 0) + 1
    assert by_voter == {log.voter_id: log.stored for log in logs}
    counted = server.query("SELECT SUM(dope_count + nope_count + skip_count) FROM variant")
    assert counted[0][0] == len(rows), "the leaderboard counters disagree with the votes"
    per = server.query("SELECT variant.dope_count, variant.nope_count, variant.skip_count, "
                       "(SELECT COUNT(*) FROM vote WHERE vote.variant_id = variant.id "
                       " AND vote.verdict = 'dope'), "
                       "(SELECT COUNT(*) FROM vote WHERE vote.variant_id = variant.id "
                       " AND vote.verdict = 'nope'), "
                       "(SELECT COUNT(*) FROM vote WHERE vote.variant_id = variant.id "
                       " AND vote.verdict = 'skip') FROM variant")
    assert all(r[:3] == r[3:] for r in per), per
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.fixture(scope="module")
def load_build(tmp_path_factory):
    """120 queries x 5 variants: at least 500 distinct pairs for every voter."""
    return write_build(tmp_path_factory.mktemp("load") / "build", n_queries=120,
                       n_catalog=600, seed=1)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
@pytest.mark.parametrize("kill", [False, True], ids=["steady", "sigkill"])
def test_no_vote_lost(request, tmp_path, load_build, artifacts, database, kill):
    url = None
    if database == "postgres":
        pg = request.getfixturevalue("postgres")
        url = pg.create_database(f"load_{'kill' if kill else 'steady'}")
    with running_server(tmp_path / "server", build=load_build, database_url=url,
                        workers=WORKERS) as server:
        logs, killed, seconds = run_load(server, kill=kill)
        report = {
            "database": database, "kill": kill, "workers": WORKERS, "voters": VOTERS,
            "votes_each": VOTES_EACH, "seconds": round(seconds, 2),
            "votes_per_second": round(VOTERS * VOTES_EACH / seconds, 1),
            "killed_pids": killed,
            "connection_errors": sum(log.connection_errors for log in logs),
            "stored_on_resend": sum(log.stored_on_resend for log in logs),
            "voters_log": [{k: v for k, v in asdict(log).items() if k != "acked"} for log in logs],
        }
        (artifacts / f"no-vote-lost-{database}-{'sigkill' if kill else 'steady'}.json") \
            .write_text(json.dumps(report, indent=2))
        if kill:
            assert killed, "no worker was killed"
        assert_no_vote_lost(server, logs)
