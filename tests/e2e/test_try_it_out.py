"""Try it out, end to end: a real engine build, the real query service (`python -m engine
serve`, gunicorn), the real web app (gunicorn) and real Chromium. A catalog picture is
uploaded through the page's file input, cropped in the browser, searched, and its
matches judged blind (a nope with a reason, "show me the next one", dopes) until done;
the votes land in the database, nothing the browser receives names a variant, and with
the service stopped the page and the API say so (503, never 500)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

import pytest
from e2e_harness import BIN, ROOT, flask_cli, free_port, running_server, stop_process
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

FMNIST = "/usr/share/datasets/fashion-mnist"
HINTS = ("variant", "slug", "network", "layer", "metric", "distance", "rank", "category")


@pytest.fixture(scope="module")
def engine_build(tmp_path_factory):
    if not os.path.isdir(FMNIST):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path_factory.mktemp("engine") / "b"
    subprocess.run([sys.executable, "-m", "engine", "-q", "build", "--catalog", "fashion-mnist",
                    "--limit", "200", "--queries", "20", "--image-size", "32", "--variants",
                    "offline", "--device", "cpu", "--seed", "0", "--no-tsne", "--out", str(out)],
                   cwd=ROOT, check=True, timeout=400)
    return out


def start_service(build, port, log_path):
    log = open(log_path, "wb")  # noqa: SIM115 (closed when the process is stopped)
    proc = subprocess.Popen([str(BIN / "python"), "-m", "engine", "serve", "--build", str(build),
                             "--bind", f"127.0.0.1:{port}"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "DOPE_SERVICE_SECRET": ""})
    for _ in range(480):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2):
                return proc
        except OSError:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.25)
    raise RuntimeError(log_path.read_text())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: a decompression bomb's header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                               8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def bad_files():
    jpeg = io.BytesIO()
    Image.new("RGB", (200, 200), (9, 99, 199)).save(jpeg, "JPEG")
    return [("empty", b"", "image/jpeg", 400),
            ("not an image", b"hello, not a picture", "image/png", 415),
            ("20k x 20k PNG", png_header_only(20000, 20000), "image/png", 413),
            ("truncated JPEG", jpeg.getvalue()[:len(jpeg.getvalue()) // 2], "image/jpeg", 422),
            ("wrong content type", jpeg.getvalue(), "text/plain", 415)]


def post_photo(url, data, kind):
    boundary = "e2e-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; "
            f"filename=\"p\"\r\nContent-Type: {kind}\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/api/try/photos", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def query_picture(build, tmp_path):
    """A query's picture (not a catalog item: the variants disagree on it), as a
    visitor's photo (a PNG file)."""
    rows = [line.split(",") for line in (build / "catalog.csv").read_text().splitlines()[1:]]
    thumb = next(r[4] for r in rows if r[3] == "query" and r[4])
    photo = tmp_path / "photo.png"
    photo.write_bytes((build / "images" / thumb).read_bytes())
    return photo


def export_is_what_retraining_reads(web, build, tmp_path, votes: int) -> None:
    """The vote export carries the photo's record, and retraining takes the photo: every
    feature row and white-box family this build has, at its length."""
    from engine.formats.builddir import open_build
    from engine.formats.votes import read_votes
    from engine.retrain.photos import photo_rows

    path = tmp_path / "votes.jsonl"
    flask_cli(web.env, "export-votes", str(path))
    found = read_votes(path)
    photo_votes = [v for v in found.votes if v.source == "photo"]
    assert len(photo_votes) == votes and len(found.photos) == 1
    rows = photo_rows(open_build(build), found.photos, [v.query_id for v in photo_votes])
    assert len(rows) == 1 and not rows.set_aside


def test_a_photo_from_the_page_to_the_votes(engine_build, browser, tmp_path):
    port = free_port()
    service = start_service(engine_build, port, tmp_path / "service.log")
    slugs = [v["slug"] for v in json.loads((engine_build / "manifest.json").read_text())
             ["variants"]]
    try:
        with running_server(tmp_path / "web", build=engine_build,
                            env={"DOPE_SERVICE_URL": f"http://127.0.0.1:{port}",
                                 "DOPE_ADDRESS_PHOTO_BURST": 100}) as web:
            context = browser.new_context(viewport={"width": 390, "height": 844},
                                          is_mobile=True, has_touch=True)
            page, bodies, errors = context.new_page(), [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: bodies.append((r.url, r)))
            page.goto(web.url + "/try")
            assert page.get_attribute("[data-file]", "capture") == "environment"
            page.set_input_files("[data-file]", str(query_picture(engine_build, tmp_path)))
            page.wait_for_selector("[data-preview]:not([hidden])")
            assert page.eval_on_selector("[data-preview-img]", "i => i.naturalWidth") > 0
            page.click("[data-search]")
            page.wait_for_selector("[data-try][data-state='judging']", timeout=60000)
            page.click("[data-verdict='nope']")
            page.wait_for_selector("[data-after-nope]:not([hidden])")
            with page.expect_response("**/api/try/reason"):
                page.click("[data-reason='colour']")
            page.click("[data-more]")
            page.wait_for_selector("[data-try][data-state='judging']")
            while page.get_attribute("[data-try]", "data-state") != "done":
                page.click("[data-verdict='dope']")
                page.wait_for_function("s => document.querySelector('[data-try]')"
                                       ".getAttribute('data-state') !== 'judging' || "
                                       "!document.querySelector(\"[data-verdict='dope']\").disabled",
                                       arg=None, timeout=30000)
                time.sleep(0.2)
            rows = web.query("SELECT rank, verdict, nope_reason FROM upload_vote ORDER BY id")
            api = [(u.split("/api/")[1], r.status, r.body()[:120]) for u, r in bodies
                   if "/api/" in u]
            assert rows[0] == (1, "nope", "colour") and rows[1][0] >= 2, (rows, api)
            assert all(v == "dope" for _, v, _ in rows[1:])
            firsts = {i for (i,) in web.query("SELECT image_id FROM upload_match WHERE rank = 1")}
            judged = [i for (i,) in web.query("SELECT image_id FROM upload_vote")]
            assert len(judged) == len(set(judged)) and firsts <= set(judged)  # each once
            assert web.query("SELECT photo_file FROM upload") == [(None,)]  # no consent
            export_is_what_retraining_reads(web, engine_build, tmp_path, len(rows))
            for url, response in bodies:
                if "/api/try" in url or url.endswith("/try"):
                    text = response.body().decode(errors="replace")
                    for word in slugs + list(HINTS if "/api/" in url else ()):
                        assert word not in text, (url, word)
            assert not errors, errors
            for name, data, kind, status in bad_files():  # through both servers
                got = post_photo(web.url, data, kind)
                assert got[0] == status and got[1]["message"], (name, got)
            stop_process(service)  # the search goes down: a 503, and the page says so
            page.goto(web.url + "/try")
            assert page.is_visible("[data-down]") and "resting" in page.inner_text("[data-down]")
            down = post_photo(web.url, bad_files()[-1][1], "image/jpeg")
            assert down[0] == 503 and "resting" in down[1]["message"]
            context.close()
    finally:
        stop_process(service)
