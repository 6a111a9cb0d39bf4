"""How many votes per second `crowd play --fast` pushes through gunicorn on this machine.

Loopback only, bounded in count and time. The server is gunicorn with gunicorn.conf.py
on a fresh SQLite file with the build imported, the per-voter limits lifted (this
measures the crowd and the server, not the limits); the crowd runs as a user runs
it, `python -m engine crowd play --fast`, once per --voters value, and its own
closing line gives votes and seconds.

    python bench/crowd.py [--build build/default] [--votes 3000] [--voters 8,16,32] \
        [--out bench-crowd.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from web import (
    BIN,
    ROOT,
    flask_cli,
    gunicorn_workers,
    make_build,
    server_env,
    start_gunicorn,
    stop,
)

CAST = re.compile(r"Votes cast: (\d+) in ([\d.]+) s \(([\d.]+) votes/s\)")


def play(build: Path, url: str, votes: int, voters: int, seed: int) -> dict:
    """Run crowd play --fast once; return votes, seconds and votes/s from its output."""
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "engine", "crowd", "play", "--build", str(build),
         "--url", f"http://{url}", "--votes", str(votes), "--voters", str(voters), "--fast",
         "--seed", str(seed), "--max-seconds", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=400)
    match = CAST.search(proc.stdout)
    if proc.returncode or not match:
        sys.exit(f"crowd play failed:\n{proc.stdout}\n{proc.stderr}")
    statuses = re.search(r"Statuses seen: (.*)", proc.stdout).group(1)
    return {"voters": voters, "votes": int(match.group(1)), "seconds": float(match.group(2)),
            "votes_per_s": float(match.group(3)), "statuses": statuses}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "default",
                        help="Build to serve (default build/default; a synthetic one if absent).")
    parser.add_argument("--votes", type=int, default=3000)
    parser.add_argument("--voters", default="8,16,32", help="Comma-separated --voters values.")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dope-bench-crowd-"))
    build = args.build if (args.build / "manifest.json").is_file() \
        else make_build(work / "build", 500)
    env = server_env(work / "dope.sqlite3", work / "images")
    flask_cli(env, "db", "upgrade")
    flask_cli(env, "import-build", str(build))
    workers = gunicorn_workers(args.workers)
    proc, url = start_gunicorn("webapp:create_app()", env, workers, work / "gunicorn.log")
    try:
        runs = [play(build, url, args.votes, int(v), seed=i)
                for i, v in enumerate(args.voters.split(","))]
    finally:
        stop(proc)
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, "
                         f"{__import__('os').cpu_count()} cores",
              "build": str(build), "workers": workers, "runs": runs}
    print("| voters | votes | seconds | votes/s | statuses |\n|---:|---:|---:|---:|---|")
    for r in runs:
        print(f"| {r['voters']} | {r['votes']} | {r['seconds']:.1f} | {r['votes_per_s']:.1f} | "
              f"{r['statuses']} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
