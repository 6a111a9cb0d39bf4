"""Try it out, end to end: a real engine build, the real query service (`python -m engine
serve`, gunicorn), the real web app (gunicorn) and real Chromium. A catalog picture is
uploaded through the page's file input, cropped in the browser, searched, and its
matches judged blind (a nope with a reason, "show me the next one", dopes) until done;
the votes land in the database, nothing the browser receives names a variant, and with
the service stopped the page and the API say so (503, never 500)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from e2e_harness import BIN, ROOT, free_port, running_server, stop_process

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


def query_picture(build, tmp_path):
    """A query's picture (not a catalog item: the variants disagree on it), as a
    visitor's photo (a PNG file)."""
    rows = [line.split(",") for line in (build / "catalog.csv").read_text().splitlines()[1:]]
    thumb = next(r[4] for r in rows if r[3] == "query" and r[4])
    photo = tmp_path / "photo.png"
    photo.write_bytes((build / "images" / thumb).read_bytes())
    return photo


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
            assert rows[0] == (1, "nope", "colour") and rows[1][0] >= 2
            firsts = web.query("SELECT COUNT(DISTINCT image_id) FROM upload_match WHERE rank = 1")
            assert all(v == "dope" for _, v, _ in rows[1:])
            assert len([r for r in rows if r[0] == 1]) == firsts[0][0] > 1  # each once
            assert web.query("SELECT photo_file FROM upload") == [(None,)]  # no consent
            for url, response in bodies:
                if "/api/try" in url or url.endswith("/try"):
                    text = response.body().decode(errors="replace")
                    for word in slugs + list(HINTS if "/api/" in url else ()):
                        assert word not in text, (url, word)
            assert not errors, errors
            stop_process(service)  # the search goes down: a 503, and the page says so
            page.goto(web.url + "/try")
            assert page.is_visible("[data-down]") and "resting" in page.inner_text("[data-down]")
            request = urllib.request.Request(web.url + "/api/try/photos", data=b"x",
                                             headers={"Content-Type": "image/png"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request)
            assert refused.value.code == 415  # a bad body is refused before the service
            context.close()
    finally:
        stop_process(service)
