"""The query service: its routes and refusals (a stand-in searcher), and end to end, a
real gunicorn over a small real build answering with every variant's matches."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from engine.builder.catalog import DEFAULT_PATHS, load_catalog
from engine.builder.whitebox import whitebox_row
from engine.cli.main import main
from engine.formats.builddir import thumbnail_bytes
from engine.serve.app import QueryService

ROOT = Path(__file__).resolve().parents[3]


class StandIn:
    """A searcher that answers without networks: what the app does around it."""

    build_id, load_seconds, catalog_rows, slugs = "b1", 0.1, [0, 1, 2], ["a", "b"]

    def __init__(self):
        self.embedder = self

    def embed(self, photos):
        return {"n.l": np.full((len(photos), 3), 0.5, np.float16),
                "whitebox.lbp": np.full((len(photos), 2), 0.25, np.float32)}

    def search_features(self, features, photos, k):
        return [{"a": [{"image_id": "x", "distance": 0.0}] * k, "b": []}
                for _ in range(photos)]


def call(app, method, path, body=b"", query="", headers=None):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               **(headers or {})}
    got = {}
    data = b"".join(app(environ, lambda status, hdrs: got.update(status=status)))
    return int(got["status"].split()[0]), json.loads(data)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 9, 9)).save(out, "PNG")
    return out.getvalue()


def test_routes_answers_and_refusals():
    app = QueryService(StandIn())
    assert call(app, "GET", "/v1/health")[1]["variants"] == ["a", "b"]
    status, body = call(app, "POST", "/v1/search", png(), "k=2")
    assert status == 200 and len(body["variants"]["a"]) == 2 and body["k"] == 2
    assert call(app, "POST", "/v1/search", png(), "k=0")[0] == 400
    assert call(app, "POST", "/v1/search", png(), "k=x")[0] == 400
    assert call(app, "POST", "/v1/search", b"")[0] == 400
    assert call(app, "POST", "/v1/search", b"%PDF-1.4")[0] == 415
    assert call(app, "GET", "/v1/search")[0] == 405
    assert "features" not in body and "photo" not in body
    body = call(app, "POST", "/v1/search", png(), "k=1&features=1&keep=1")[1]
    row = np.frombuffer(base64.b64decode(body["features"]["n.l"]), "<f2")
    assert row.tolist() == [0.5, 0.5, 0.5]
    assert set(body["features"]) == {"n.l", "whitebox.lbp"}
    kept = Image.open(io.BytesIO(base64.b64decode(body["photo"])))
    assert kept.format == "JPEG" and kept.size == (16, 16) and not kept.getexif()
    assert call(app, "GET", "/elsewhere")[0] == 404


def test_a_shared_secret_is_required_when_set():
    app = QueryService(StandIn(), secret="s3cret")
    assert call(app, "GET", "/v1/health")[0] == 401
    assert call(app, "GET", "/v1/health", headers={"HTTP_X_DOPE_SERVICE_SECRET": "no"})[0] == 401
    assert call(app, "GET", "/v1/health",
                headers={"HTTP_X_DOPE_SERVICE_SECRET": "s3cret"})[0] == 200


@pytest.mark.parametrize("bind, secret, error", [
    ("0.0.0.0:8100", None, "needs a shared secret"),
    ("127.0.0.1", None, "is not HOST:PORT"),
    ("127.0.0.1:99999", None, "is not HOST:PORT"),
    ("example:8100", "s", "not an IP address"),
])
def test_serve_refuses_a_bad_bind(bind, secret, error, tmp_path, monkeypatch):
    if secret:
        monkeypatch.setenv("DOPE_SERVICE_SECRET", secret)
    else:
        monkeypatch.delenv("DOPE_SERVICE_SECRET", raising=False)
    result = CliRunner().invoke(main, ["serve", "--build", str(tmp_path), "--bind", bind])
    assert result.exit_code == 2 and error in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, data=None):
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_PATHS["fashion-mnist"].is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_a_catalog_image_sent_as_a_photo_finds_itself_with_every_variant(tmp_path):
    from engine.builder.pipeline import build
    from engine.formats.state import BuildOptions

    opts = BuildOptions(limit=200, queries=20, image_size=32, device="cpu",
                        variants="offline", seed=0)
    build(tmp_path / "b", opts, tsne=False)
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (the server's lifetime)
    server = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--build",
                               str(tmp_path / "b"), "--bind", f"127.0.0.1:{port}"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "DOPE_SERVICE_SECRET": ""})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                status, health = _get(url + "/v1/health")
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        assert status == 200 and len(health["variants"]) == 7
        catalog = load_catalog(opts.catalog, opts.catalog_path, limit=opts.limit,
                               queries=opts.queries, seed=opts.seed)
        for row in catalog.catalog_indices[:3]:
            out = io.BytesIO()
            catalog[int(row)].save(out, "PNG")
            status, body = _get(url + "/v1/search?k=3&features=1", out.getvalue())
            assert status == 200 and set(body["variants"]) == set(health["variants"])
            # what retraining reads of a photo is what it computes of a catalog image
            for family, expected in whitebox_row(catalog[int(row)]).items():
                got = np.frombuffer(base64.b64decode(body["features"][f"whitebox.{family}"]),
                                    "<f2")
                assert np.allclose(got, expected, atol=1e-3), family
            for slug, found in body["variants"].items():
                assert found[0]["image_id"] == catalog.image_id[int(row)], slug
                # itself, up to float16 rounding: far nearer than the next item
                assert found[0]["distance"] <= 1e-3 * max(1.0, found[1]["distance"]), slug
        assert _get(url + "/v1/search", b"not an image")[0] == 415
        # a match's picture, made as the build makes thumbnails, for any catalog item
        row = int(catalog.catalog_indices[-1])
        with urllib.request.urlopen(f"{url}/v1/thumbnails/{catalog.image_id[row]}") as r:
            assert r.headers["Content-Type"] == "image/png"
            assert r.read() == thumbnail_bytes(catalog[row])[0]
        assert _get(url + "/v1/thumbnails/no-such-item")[0] == 404
        assert found[0]["category"] in catalog.categories
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
