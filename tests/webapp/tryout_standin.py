"""A stand-in for the engine's query service on a real local port: the protocol of
`python -m engine serve` (docs/webapp.md), answered from a test build's catalog without
networks, so the web side's HTTP client, refusals and storage are tested in seconds.
tests/webapp/tryout/test_try_e2e.py runs the real service."""

import base64
import hashlib
import io
import json
import random
from pathlib import Path
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler

from PIL import Image

MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class StandInService:
    def __init__(self, build: Path):
        self.manifest = json.loads((build / "manifest.json").read_text())
        rows = (build / "catalog.csv").read_text().splitlines()[1:]
        self.catalog = {r.split(",")[0]: r.split(",") for r in rows if ",catalog," in r}
        self.build, self.fail, self.searches = build, None, 0

    def __call__(self, environ, start_response):
        status, body, kind = self.route(environ)
        start_response(status, [("Content-Type", kind)])
        return [body]

    def route(self, environ):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if self.fail:
            return self.fail, b"{}", "application/json"
        if path == "/v1/health":
            return "200 OK", json.dumps({"status": "ok"}).encode(), "application/json"
        if path.startswith("/v1/thumbnails/"):
            row = self.catalog.get(path.rsplit("/", 1)[1])
            if row is None:
                return "404 Not Found", b"{}", "application/json"
            return "200 OK", (self.build / "images" / row[4]).read_bytes(), "image/png"
        if path == "/v1/search" and method == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            return self.search(body, parse_qs(environ["QUERY_STRING"]))
        return "404 Not Found", b"{}", "application/json"

    def search(self, body, query):
        if not body:
            return "400 Bad Request", _error("the request has no photo"), "application/json"
        if not body.startswith(MAGIC):
            return ("415 Unsupported Media Type", _error("not a JPEG, PNG or WebP image"),
                    "application/json")
        self.searches += 1
        rng = random.Random(hashlib.sha256(body).hexdigest())
        k = int(query["k"][0])
        ids = sorted(self.catalog)
        out = {"build_id": self.manifest["build_id"], "k": k, "variants": {
            v["slug"]: [{"image_id": i, "category": self.catalog[i][1], "distance": d / 10}
                        for d, i in enumerate(rng.sample(ids, k))]
            for v in self.manifest["variants"] if not v["control"]}}
        if query.get("features") == ["1"]:
            out["features"] = {"n.l": base64.b64encode(b"\x00\x3c" * 4).decode()}
        if query.get("keep") == ["1"]:
            jpeg = io.BytesIO()
            Image.new("RGB", (8, 8), (200, 10, 10)).save(jpeg, "JPEG")
            out["photo"] = base64.b64encode(jpeg.getvalue()).decode()
        return "200 OK", json.dumps(out).encode(), "application/json"


def _error(message):
    return json.dumps({"error": "bad_photo", "message": message}).encode()
