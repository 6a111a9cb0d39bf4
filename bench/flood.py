"""Vote stuffing from one address: how many votes get through in a minute?

A script on 127.0.0.1 drops its cookie on every vote (each pair request is a new
visitor) and runs --threads loops at full speed: it fetches a pair and votes at
once, and when told "too fast" it waits exactly the Retry-After it was given (the
smartest a script can do). The server is gunicorn with gunicorn.conf.py on a fresh
SQLite file, first with the default limits, then with the per-address limits and the
minimum decision time off (as before they existed; the per-voter limits stay, and a
new voter per vote never meets them). Loopback only, bounded in time.

    python bench/flood.py [--seconds 60] [--threads 8] [--out bench-flood.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from web import flask_cli, gunicorn_workers, make_build, server_env, start_gunicorn, stop

DEFENCES_OFF = {"DOPE_ADDRESS_PAIR_BURST": "0",
                "DOPE_MIN_DECISION_MS": "0"}
DEFAULT_LIMITS = ("DOPE_MAX_VOTES_PER_HOUR", "DOPE_MAX_PAIRS_PER_HOUR",
                  "DOPE_MIN_VOTE_INTERVAL_MS", "DOPE_MIN_DECISION_MS",
                  "DOPE_ADDRESS_PAIR_BURST", "DOPE_ADDRESS_PAIR_RATE",
                  "DOPE_ADDRESS_PAIRS_PER_HOUR")


def call(url: str, method: str, path: str, body: dict | None = None,
         cookie: str | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection(url, timeout=30)
    headers = {"Origin": f"http://{url}"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else {}), dict(r.getheaders())
    finally:
        conn.close()


def flood(url: str, seconds: float, threads: int) -> dict:
    statuses, lock = Counter(), threading.Lock()
    accepted = [0]
    deadline = time.monotonic() + seconds

    def loop():
        while time.monotonic() < deadline:
            status, body, headers = call(url, "GET", "/api/pair")
            with lock:
                statuses[f"pair {status}"] += 1
            if status != 200:
                time.sleep(min(float(headers.get("Retry-After", 1)), 1.0))
                continue
            cookie = headers.get("Set-Cookie", "").split(";", 1)[0]
            while time.monotonic() < deadline:
                status, answer, headers = call(url, "POST", "/api/vote", cookie=cookie,
                                               body={"token": body["token"], "verdict": "dope"})
                with lock:
                    statuses[f"vote {status}"] += 1
                    accepted[0] += status == 201
                if status == 429 and answer.get("error") == "too_fast":
                    time.sleep(float(answer.get("retry_after", 0.3)))
                    continue
                break

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"seconds": round(time.monotonic() - start, 1), "votes_accepted": accepted[0],
            "statuses": dict(sorted(statuses.items()))}


def serve_and_flood(build: Path, overrides: dict, seconds: float, threads: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="dope-bench-flood-"))
    env = server_env(work / "dope.sqlite3", work / "images")
    for key in DEFAULT_LIMITS:  # the server's own defaults, not the benchmarks' lifted ones
        env.pop(key, None)
    env.update(overrides)
    flask_cli(env, "db", "upgrade")
    flask_cli(env, "import-build", str(build))
    proc, url = start_gunicorn("webapp:create_app()", env, gunicorn_workers(None),
                               work / "gunicorn.log")
    try:
        return flood(url, seconds, threads)
    finally:
        stop(proc)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    build = make_build(Path(tempfile.mkdtemp(prefix="dope-bench-flood-build-")), 500)
    report = {"defaults": serve_and_flood(build, {}, args.seconds, args.threads),
              "defences_off": serve_and_flood(build, DEFENCES_OFF, args.seconds, args.threads),
              "threads": args.threads}
    for name in ("defaults", "defences_off"):
        r = report[name]
        print(f"{name}: {r['votes_accepted']} votes accepted in {r['seconds']} s; {r['statuses']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
