"""Benchmark the web game on this machine, loopback only, bounded in count and time.

1. Pair+vote cycles per second and p50/p99 latency: webapp under gunicorn on a
   fresh SQLite database, and in the same run (alternating rounds, so machine
   noise hits both alike) a bare Flask app answering constants (bench/bare_app.py)
   under the same gunicorn settings (gunicorn.conf.py, same worker count).
2. /api/leaderboard (and the /leaderboard page) response time with 1,000,000 votes
   bulk-inserted straight into the database after the import.

    python bench/web.py [--clients 8] [--cycles 150] [--rounds 2] \
        [--leaderboard-votes 1000000] [--flask-path] [--no-address-limits] \
        [--out bench-web.json]

Prints a markdown table; writes the figures as JSON to --out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET_KEY = "bench-secret-key-not-for-production"
# Limits that never bind, but still run: their statements are part of what is measured.
PERMISSIVE = {"DOPE_MAX_VOTES_PER_HOUR": "100000000", "DOPE_MAX_PAIRS_PER_HOUR": "100000000",
              "DOPE_MIN_VOTE_INTERVAL_MS": "0", "DOPE_MIN_DECISION_MS": "0",
              "DOPE_ADDRESS_PAIR_BURST": "1000000000", "DOPE_ADDRESS_PAIR_RATE": "1000000",
              "DOPE_ADDRESS_PAIRS_PER_HOUR": "1000000000"}


# ---------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(db_path: Path, image_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOPE_", "FLASK_"))}
    env.update(PERMISSIVE, DATABASE_URL=f"sqlite:///{db_path}", SECRET_KEY=SECRET_KEY,
               DOPE_IMAGE_DIR=str(image_dir))
    return env


def flask_cli(env: dict, *args: str) -> None:
    proc = subprocess.run([str(BIN / "flask"), "--app", "webapp", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        sys.exit(f"flask {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def start_gunicorn(app_spec: str, env: dict, workers: int | None, log: Path,
                   pythonpath: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start gunicorn with gunicorn.conf.py on a free loopback port; return (proc, url)."""
    port = free_port()
    cmd = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    if workers:
        cmd += ["--workers", str(workers)]
    if pythonpath:
        cmd += ["--pythonpath", pythonpath]
    with open(log, "wb") as f:
        proc = subprocess.Popen([*cmd, app_spec], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gunicorn {app_spec} exited:\n{log.read_text()}")
        try:
            status, _, _ = request(url, "GET", "/")
            if status == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.1)
    stop(proc)
    sys.exit(f"gunicorn {app_spec} did not answer in time:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def gunicorn_workers(workers: int | None) -> int:
    """Return the worker count gunicorn.conf.py gives (or the override)."""
    if workers:
        return workers
    conf: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), conf)
    return int(conf["workers"])


# ---------------------------------------------------------------- the client

def request(url: str, method: str, path: str, body: bytes | None = None,
            cookie: str | None = None) -> tuple[int, bytes, str | None]:
    """One HTTP/1.1 request on a fresh connection (sync workers close it anyway)."""
    conn = http.client.HTTPConnection(url, timeout=60)
    headers = {"Origin": f"http://{url}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        set_cookie = r.getheader("Set-Cookie")
        return r.status, data, set_cookie.split(";", 1)[0] if set_cookie else None
    finally:
        conn.close()


def run_client(url: str, cycles: int, seconds: float, seed: int) -> dict:
    """One voter in its own process: fetch a pair, vote on it; time every step."""
    rng, cookie = random.Random(seed), None
    out = {"cycle": [], "pair": [], "vote": [], "errors": 0, "statuses": {},
           "first": time.perf_counter(), "last": None}
    deadline = time.perf_counter() + seconds
    for _ in range(cycles):
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        status, data, new_cookie = request(url, "GET", "/api/pair", cookie=cookie)
        cookie = new_cookie or cookie
        t1 = time.perf_counter()
        out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
        if status != 200:
            out["errors"] += 1
            continue
        token = json.loads(data)["token"]
        body = json.dumps({"token": token, "verdict": rng.choice(["dope", "nope", "skip"]),
                           "decision_ms": 800}).encode()
        status, _, new_cookie = request(url, "POST", "/api/vote", body=body, cookie=cookie)
        cookie = new_cookie or cookie
        t2 = time.perf_counter()
        out["statuses"][str(status)] = out["statuses"].get(str(status), 0) + 1
        if status != 201:
            out["errors"] += 1
            continue
        out["pair"].append(t1 - t0)
        out["vote"].append(t2 - t1)
        out["cycle"].append(t2 - t0)
    out["last"] = time.perf_counter()
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def load(url: str, clients: int, cycles: int, seconds: float, seed: int) -> dict:
    """Run `clients` voter processes at once; return throughput and latency samples."""
    with ProcessPoolExecutor(clients) as pool:
        parts = list(pool.map(run_client, [url] * clients, [cycles] * clients,
                              [seconds] * clients, range(seed, seed + clients)))
    # From the first client's first request to the last client's last answer
    # (perf_counter is CLOCK_MONOTONIC, shared by processes): process start-up is out.
    elapsed = max(p["last"] for p in parts) - min(p["first"] for p in parts)
    merged = {"cycle": [], "pair": [], "vote": [], "errors": 0, "statuses": {}}
    for p in parts:
        for k in ("cycle", "pair", "vote"):
            merged[k] += p[k]
        merged["errors"] += p["errors"]
        for s, n in p["statuses"].items():
            merged["statuses"][s] = merged["statuses"].get(s, 0) + n
    merged["elapsed"] = elapsed
    return merged


def summarise(rounds: list[dict]) -> dict:
    cycles = [x for r in rounds for x in r["cycle"]]
    elapsed = sum(r["elapsed"] for r in rounds)
    statuses: dict[str, int] = {}
    for r in rounds:
        for s, n in r["statuses"].items():
            statuses[s] = statuses.get(s, 0) + n
    return {
        "cycles": len(cycles), "seconds": round(elapsed, 2),
        "cycles_per_second": round(len(cycles) / elapsed, 1) if elapsed else 0,
        "cycle_p50_ms": round(percentile(cycles, 50) * 1000, 1),
        "cycle_p99_ms": round(percentile(cycles, 99) * 1000, 1),
        "pair_p50_ms": round(percentile([x for r in rounds for x in r["pair"]], 50) * 1000, 1),
        "vote_p50_ms": round(percentile([x for r in rounds for x in r["vote"]], 50) * 1000, 1),
        "errors": sum(r["errors"] for r in rounds), "statuses": statuses,
    }


# ---------------------------------------------------------------- builds and votes

def make_build(path: Path, queries: int) -> Path:
    """Write a synthetic build with tests/buildmaker.py (the web side never needs torch)."""
    sys.path.append(str(ROOT / "tests"))
    from buildmaker import write_build

    return write_build(path, n_queries=queries, n_catalog=max(100, queries * 2), seed=7)


def bulk_votes(db_path: Path, n: int, voters: int = 5000) -> float:
    """Insert n votes straight into SQLite (the vote trigger counts them); return seconds."""
    started = time.perf_counter()
    conn = sqlite3.connect(db_path)
    pairs = conn.execute("SELECT id, variant_id FROM pair").fetchall()
    now = datetime.now(UTC).replace(tzinfo=None)
    conn.executemany("INSERT OR IGNORE INTO voter (id, created_at, window_votes, votes_cast) "
                     "VALUES (?, ?, 0, 0)", ((f"b{v:031x}", now) for v in range(voters)))
    rng = random.Random(0)
    verdicts = ("dope", "dope", "nope", "skip")

    def rows():
        for i in range(n):
            pair_id, variant_id = pairs[rng.randrange(len(pairs))]
            # Drawn uniformly over the pairs: the probability the fit weights them by.
            yield (pair_id, variant_id, f"b{i % voters:031x}", verdicts[rng.randrange(4)],
                   now - timedelta(seconds=n - i), rng.randrange(300, 9000), f"bulk{i:028x}",
                   "uniform", 1.0 / len(pairs))

    conn.executemany("INSERT INTO vote (pair_id, variant_id, voter_id, verdict, created_at, "
                     "decision_ms, token_nonce, reason, probability) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def time_get(url: str, path: str, n: int) -> dict:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, data, _ = request(url, "GET", path)
        samples.append(time.perf_counter() - t0)
        if status != 200:
            sys.exit(f"GET {path} -> {status}: {data[:300]!r}")
    return {"requests": n, "p50_ms": round(statistics.median(samples) * 1000, 1),
            "p99_ms": round(percentile(samples, 99) * 1000, 1),
            "max_ms": round(max(samples) * 1000, 1)}


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8, help="concurrent voters (processes)")
    p.add_argument("--cycles", type=int, default=100, help="pair+vote cycles per voter per round")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds per app")
    p.add_argument("--round-seconds", type=float, default=30, help="time cap per round")
    p.add_argument("--workers", type=int, default=None,
                   help="gunicorn workers for both apps (default: gunicorn.conf.py)")
    p.add_argument("--queries", type=int, default=200, help="queries in the synthetic build")
    p.add_argument("--build", type=Path, default=None, help="an engine build to use instead")
    p.add_argument("--leaderboard-votes", type=int, default=1_000_000)
    p.add_argument("--leaderboard-requests", type=int, default=20)
    p.add_argument("--no-address-limits", action="store_true",
                   help="Turn the per-address limits off (their statements do not run), to "
                        "measure their share in the same harness.")
    p.add_argument("--flask-path", action="store_true",
                   help="run the webapp with DOPE_FAST_PATH=0 (every request through Flask)")
    p.add_argument("--out", type=Path, default=ROOT / "bench-web.json")
    args = p.parse_args(argv)
    for name in ("clients", "cycles", "rounds", "queries", "leaderboard_requests"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.cycles * args.clients > 100_000:
        p.error("--cycles x --clients is capped at 100000")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dope-bench-"))
    build = args.build or make_build(work / "build", args.queries)
    db_path = work / "dope.sqlite3"
    env = server_env(db_path, work / "images")
    flask_cli(env, "db", "upgrade")
    flask_cli(env, "import-build", str(build))
    workers = gunicorn_workers(args.workers)
    app_env = {**env, "DOPE_FAST_PATH": "0" if args.flask_path else "1"}
    if args.no_address_limits:
        app_env |= {"DOPE_ADDRESS_PAIR_BURST": "0"}
    app_proc, app_url = start_gunicorn("webapp:create_app()", app_env, workers, work / "app.log")
    bare_proc, bare_url = start_gunicorn("bare_app:create_app()", env, workers, work / "bare.log",
                                         pythonpath=str(ROOT / "bench"))
    results = {"bare": [], "webapp": []}
    try:
        for r in range(args.rounds):
            for name, url in (("bare", bare_url), ("webapp", app_url)):
                results[name].append(load(url, args.clients, args.cycles, args.round_seconds,
                                          seed=1000 * r + (0 if name == "bare" else 500)))
        stop(bare_proc)
        votes_seconds = bulk_votes(db_path, args.leaderboard_votes)
        fit_started = time.perf_counter()
        flask_cli(env, "fit")  # what the periodic fit costs at this many votes
        fit_seconds = time.perf_counter() - fit_started
        board = {"api": time_get(app_url, "/api/leaderboard", args.leaderboard_requests),
                 "page": time_get(app_url, "/leaderboard", args.leaderboard_requests)}
        total = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM vote").fetchone()[0]
    finally:
        stop(app_proc)
        stop(bare_proc)
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "settings": {"clients": args.clients, "cycles_per_client_per_round": args.cycles,
                     "rounds": args.rounds, "gunicorn_workers": workers,
                     "fast_path": not args.flask_path,
                     "address_limits": not args.no_address_limits,
                     "database": "sqlite", "build": str(build)},
        "cycles": {name: summarise(rs) for name, rs in results.items()},
        "leaderboard": {"votes_in_db": total, "insert_seconds": round(votes_seconds, 1),
                        "fit_seconds": round(fit_seconds, 1), **board},
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    bare, app = report["cycles"]["bare"], report["cycles"]["webapp"]
    report["cycles"]["webapp_vs_bare"] = round(app["cycles_per_second"]
                                              / bare["cycles_per_second"], 3)
    # Each webapp round against the bare round just before it: machine drift cancels.
    paired = sorted(round(len(w["cycle"]) / w["elapsed"] / (len(b["cycle"]) / b["elapsed"]), 3)
                    for b, w in zip(results["bare"], results["webapp"], strict=True))
    report["cycles"]["webapp_vs_bare_per_round"] = paired
    report["cycles"]["webapp_vs_bare_median_round"] = statistics.median(paired)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nJSON written to {args.out}")
    return report


def markdown(report: dict) -> str:
    c, lb, s = report["cycles"], report["leaderboard"], report["settings"]
    lines = [
        f"Pair+vote cycles: {s['clients']} concurrent voters, gunicorn {s['gunicorn_workers']} "
        f"sync workers, SQLite, {s['rounds']} alternating rounds, fast path "
        f"{'on' if s['fast_path'] else 'off (every request through Flask)'} "
        f"(load average at the end {report['machine']['load_avg_1m']:.1f} "
        f"on {report['machine']['cpus']} CPUs)",
        "",
        "| app | cycles | cycles/s | cycle p50 ms | cycle p99 ms | pair p50 ms | vote p50 ms "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("webapp", "Dope or Nope"), ("bare", "bare Flask (constants)")):
        r = c[name]
        lines.append(f"| {label} | {r['cycles']} | {r['cycles_per_second']} | "
                     f"{r['cycle_p50_ms']} | {r['cycle_p99_ms']} | {r['pair_p50_ms']} | "
                     f"{r['vote_p50_ms']} | {r['errors']} |")
    per_round = c["webapp_vs_bare_per_round"]
    lines += ["", f"Dope or Nope reaches {c['webapp_vs_bare']:.0%} of the bare app's throughput "
              f"(round by round: median {c['webapp_vs_bare_median_round']:.0%}, "
              f"{per_round[0]:.0%} to {per_round[-1]:.0%}).",
              "", f"Leaderboard with {lb['votes_in_db']:,} votes in the database "
              f"(bulk insert took {lb['insert_seconds']} s):", "",
              "| endpoint | requests | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for name, path in (("api", "/api/leaderboard"), ("page", "/leaderboard")):
        r = lb[name]
        lines.append(f"| {path} | {r['requests']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{r['max_ms']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
