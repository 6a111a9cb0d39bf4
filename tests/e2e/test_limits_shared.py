"""Per-address limits hold across two gunicorn processes sharing one database.

Two real gunicorn servers (two processes, their own workers) on one SQLite file or
one PostgreSQL database; a script alternates between them, dropping its cookie on
every request. The address's budget is one, whichever server answers.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import pytest
import requests
from e2e_harness import BIN, ROOT, free_port, running_server, stop_process

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
TIGHT = {"DOPE_ADDRESS_PAIR_BURST": "10", "DOPE_ADDRESS_PAIR_RATE": "0.001"}


@contextlib.contextmanager
def second_server(server):
    """Another gunicorn on the same database and image store."""
    port = free_port()
    log = open(server.log_path.with_name("second.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "webapp:create_app()"],
        cwd=ROOT, env=server.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(server.log_path.with_name("second.log").read_text())
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_one_budget_per_address_across_servers(request, tmp_path, game_build, database):
    url = None
    if database == "postgres":
        url = request.getfixturevalue("postgres").create_database("limits_shared")
    with running_server(tmp_path / "srv", build=game_build, database_url=url, workers=2,
                        env=TIGHT) as server, second_server(server) as other:
        urls = [server.url, other]
        pairs = []
        for i in range(24):  # a new cookie every time, alternating servers
            pairs.append(requests.get(urls[i % 2] + "/api/pair", timeout=30,
                                      headers={"Origin": urls[i % 2]}))
        served = [p for p in pairs if p.status_code == 200]
        assert len(served) == 10
        assert all(p.status_code == 429 and int(p.headers["Retry-After"]) >= 1
                   for p in pairs if p.status_code != 200)
        votes = []
        for i, pair in enumerate(served):
            base = urls[i % 2]
            votes.append(requests.post(base + "/api/vote", timeout=30, cookies=pair.cookies,
                                       headers={"Origin": base},
                                       json={"token": pair.json()["token"], "verdict": "dope"}))
        # One vote per served pair, whichever server takes it: ten in all.
        assert [v.status_code for v in votes] == [201] * 10
        assert server.query("SELECT COUNT(*) FROM vote")[0][0] == 10
