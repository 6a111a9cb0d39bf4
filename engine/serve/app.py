"""The query service's WSGI app: `POST /v1/search`, `GET /v1/health`.

Plain WSGI (the engine never imports the web app's Flask): one Searcher, loaded once
(under gunicorn `--preload`, before the workers fork, so they share it).

    POST /v1/search?k=10[&features=1][&keep=1]   body: the photo's bytes (JPEG, PNG, WebP)
        200 {"build_id", "k", "seconds",
             "variants": {slug: [{"image_id", "category", "distance"}]},
             "features": {key: base64 little-endian float16 row}   (features=1: every
                 feature key the variants use, and whitebox.<family>: what retraining reads)
             "photo": base64 JPEG, upright, without metadata}      (keep=1)
        400 / 413 / 415 / 422 {"error", "message"}: engine.serve.photos says why
    GET /v1/thumbnails/<image id>   a catalog item's thumbnail (PNG or JPEG); 404 unknown
    GET /v1/health           200 {"status": "ok", "build_id", "variants", "load_seconds"}

With DOPE_SERVICE_SECRET set, every request must carry it in `X-Dope-Service-Secret`
(else 401): required when the service listens beyond loopback (engine.cli.serve).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from urllib.parse import parse_qs

import numpy as np

from engine.serve.photos import MAX_BYTES, PhotoError, clean_jpeg, read_photo
from engine.serve.searcher import MAX_K, Searcher

SECRET_HEADER = "HTTP_X_DOPE_SERVICE_SECRET"
THUMBNAILS = "/v1/thumbnails/"
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Content Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Content", 500: "Internal Server Error"}


class QueryService:
    """The WSGI callable around one Searcher."""

    def __init__(self, searcher: Searcher, secret: str | None = None, thumbnails=None):
        self.searcher, self.secret, self.thumbnails = searcher, secret or None, thumbnails

    def __call__(self, environ, start_response):
        try:
            status, body = self.route(environ)
        except PhotoError as exc:
            status, body = exc.status, _error("bad_photo", str(exc))
        data, kind = body if isinstance(body, tuple) else (json.dumps(body).encode(),
                                                           "application/json")
        start_response(f"{status} {REASONS[status]}",
                       [("Content-Type", kind), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store" if kind == "application/json"
                         else "public, max-age=86400")])
        return [data]

    def route(self, environ) -> tuple[int, dict]:
        if self.secret and not hmac.compare_digest(
                environ.get(SECRET_HEADER, "").encode(), self.secret.encode()):
            return 401, _error("unauthorized", "missing or wrong X-Dope-Service-Secret")
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == "/v1/health":
            return (200, self.health()) if method in ("GET", "HEAD") else \
                (405, _error("method_not_allowed", "GET /v1/health"))
        if path == "/v1/search":
            return self.search(environ) if method == "POST" else \
                (405, _error("method_not_allowed", "POST a photo to /v1/search"))
        if path.startswith(THUMBNAILS) and self.thumbnails is not None:
            found = self.thumbnails.get(path[len(THUMBNAILS):]) if method == "GET" else None
            return (200, found) if found else \
                (404, _error("not_found", "no catalog item with that image id"))
        return 404, _error("not_found", "routes: POST /v1/search, GET /v1/health, "
                                        "GET /v1/thumbnails/<image id>")

    def health(self) -> dict:
        s = self.searcher
        return {"status": "ok", "build_id": s.build_id, "load_seconds": s.load_seconds,
                "variants": s.slugs, "catalog": len(s.catalog_rows)}

    def search(self, environ) -> tuple[int, dict]:
        started = time.perf_counter()
        query = environ.get("QUERY_STRING", "")
        k, asked = _k(query), parse_qs(query)
        photo = read_photo(_body(environ))
        features = self.searcher.embedder.embed([photo])
        answer = self.searcher.search_features(features, 1, k)[0]
        out = {"build_id": self.searcher.build_id, "k": k, "variants": answer}
        if asked.get("features") == ["1"]:
            out["features"] = photo_features(features)
        if asked.get("keep") == ["1"]:  # the photo as searched: upright, no metadata
            out["photo"] = base64.b64encode(clean_jpeg(photo)).decode()
        return 200, {**out, "seconds": round(time.perf_counter() - started, 4)}


def photo_features(features: dict[str, np.ndarray]) -> dict[str, str]:
    """Return what retraining reads of one photo: each network feature row and each
    white-box family (the embedder's rows), as base64 little-endian float16."""
    return {key: base64.b64encode(np.ascontiguousarray(rows[0], dtype="<f2").tobytes())
            .decode() for key, rows in features.items()}


def _k(query: str) -> int:
    values = parse_qs(query).get("k", ["10"])
    try:
        k = int(values[0])
    except ValueError:
        raise PhotoError(400, f"k must be a whole number, not {values[0]!r}") from None
    if not 1 <= k <= MAX_K:
        raise PhotoError(400, f"k must be between 1 and {MAX_K}")
    return k


def _body(environ) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise PhotoError(400, "Content-Length is not a number") from None
    if length > MAX_BYTES:
        raise PhotoError(413, f"the photo is {length:,} bytes; at most {MAX_BYTES:,}")
    return environ["wsgi.input"].read(length) if length else b""


def _error(code: str, message: str) -> dict:
    return {"error": code, "message": message}


def from_env() -> QueryService:
    """gunicorn's app factory: the build in DOPE_SERVICE_BUILD, the device in
    DOPE_SERVICE_DEVICE (cpu), the secret in DOPE_SERVICE_SECRET."""
    from engine.serve.thumbnails import Thumbnails

    searcher = Searcher(os.environ["DOPE_SERVICE_BUILD"],
                        device=os.environ.get("DOPE_SERVICE_DEVICE", "cpu"))
    return QueryService(searcher, os.environ.get("DOPE_SERVICE_SECRET"),
                        Thumbnails(searcher.build))
