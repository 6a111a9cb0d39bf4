"""Try it out, timed: the query service per photo, and what the web app adds.

1. The service (`python -m engine serve --build B --workers N`, gunicorn) answers
   `POST /v1/search?k=5&features=1` for photos of the build's queries (PNG thumbnails,
   not catalog items): latency p50/p95 one request at a time, and photos per second
   with 2 x N clients at once, for each N in --workers.
2. The web app (gunicorn, fresh SQLite, the build imported) in front of a 1-worker
   service: `POST /api/try/photos` against the service's own `/v1/search` for the same
   photos, one at a time, alternating; the web side's overhead is the difference of
   the medians. Every picture the service names is fetched once into the image store,
   so the photos are sent twice: the first pass pays those fetches, the second not.

    python bench/tryout.py --build build/default [--photos 40] [--workers 1,2] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))
import web  # noqa: E402  (bench/web.py: gunicorn, flask and the environment)

ROOT, BIN = web.ROOT, web.BIN
BOUNDARY = "dope-bench-boundary"


def photos_of(build: Path, n: int) -> list[bytes]:
    rows = [r.split(",") for r in (build / "catalog.csv").read_text().splitlines()[1:]]
    thumbs = [r[4] for r in rows if r[3] == "query" and r[4]][:n]
    return [(build / "images" / t).read_bytes() for t in thumbs]


def start_service(build: Path, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = web.free_port()
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(BIN / "python"), "-m", "engine", "serve", "--build",
                                 str(build), "--bind", f"127.0.0.1:{port}", "--workers",
                                 str(workers)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "DOPE_SERVICE_SECRET": ""})
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                sys.exit(log.read_text())
            time.sleep(0.1)
    sys.exit(f"the service did not start:\n{log.read_text()}")


def post(url: str, body: bytes, content_type: str) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()
        assert answer.status in (200, 201), answer.status
    return time.perf_counter() - started


def multipart(photo: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"photo\"; "
            f"filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + photo + \
        f"\r\n--{BOUNDARY}--\r\n".encode()


def ms(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50_ms": round(1000 * statistics.median(values), 1),
            "p95_ms": round(1000 * values[min(len(values) - 1, int(0.95 * len(values)))], 1)}


def service_figures(url: str, photos: list[bytes], workers: int) -> dict:
    search = url + "/v1/search?k=5&features=1"
    post(search, photos[0], "image/png")  # warm
    latency = [post(search, p, "image/png") for p in photos]
    clients = 2 * workers
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda p: post(search, p, "image/png"), photos * 2))
    return {"workers": workers, **ms(latency),
            "photos_per_second": round(2 * len(photos) / (time.perf_counter() - started), 2),
            "clients": clients}


def web_figures(build: Path, service_url: str, photos: list[bytes], work: Path) -> dict:
    env = web.server_env(work / "dope.sqlite3", work / "images")
    env.update(DOPE_SERVICE_URL=service_url, DOPE_ADDRESS_PHOTO_BURST="0")
    web.flask_cli(env, "db", "upgrade")
    web.flask_cli(env, "import-build", str(build))
    proc, address = web.start_gunicorn("webapp:create_app()", env, 1, work / "web.log")
    try:
        passes = []
        for _ in range(2):
            direct, through = [], []
            for p in photos:
                direct.append(post(service_url + "/v1/search?k=5&features=1", p, "image/png"))
                through.append(post(f"http://{address}/api/try/photos", multipart(p),
                                     f"multipart/form-data; boundary={BOUNDARY}"))
            passes.append({"service": ms(direct), "web": ms(through),
                           "overhead_p50_ms": round(1000 * (statistics.median(through)
                                                            - statistics.median(direct)), 1)})
    finally:
        web.stop(proc)
    return {"first_pass": passes[0], "second_pass": passes[1]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", type=Path, default=ROOT / "build" / "default")
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default="bench-tryout.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dope-try-"))
    photos = photos_of(args.build, args.photos)
    report = {"machine": f"{platform.node()} {os.cpu_count()} CPUs", "photos": len(photos),
              "build": str(args.build), "service": []}
    for n in (int(x) for x in args.workers.split(",")):
        proc, url = start_service(args.build, n, work / f"service-{n}.log")
        try:
            report["service"].append(service_figures(url, photos, n))
            if n == 1:
                report["web"] = web_figures(args.build, url, photos, work)
        finally:
            web.stop(proc)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
