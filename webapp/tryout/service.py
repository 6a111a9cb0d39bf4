"""The engine's query service, over HTTP (the seam: the web app never imports the engine).

`search(photo)` posts the photo's bytes to `POST /v1/search` and returns its answer;
`thumbnail(image_id)` fetches a catalog item's picture. The service refusing the photo
is a PhotoRefused with its status and message (4xx, passed on to the visitor); the
service unreachable, slow or failing is ServiceDown (503 for the visitor, never 500).
Standard library only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from flask import current_app

SECRET_HEADER = "X-Dope-Service-Secret"


class ServiceDown(RuntimeError):
    """The query service cannot answer now."""


class PhotoRefused(ValueError):
    """The query service refused the photo: `status` (4xx) and its message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _request(path: str, body: bytes | None = None, content_type: str | None = None,
             timeout: float | None = None):
    config = current_app.config
    request = urllib.request.Request(config["DOPE_SERVICE_URL"].rstrip("/") + path, data=body,
                                     method="POST" if body is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    if config["DOPE_SERVICE_SECRET"]:
        request.add_header(SECRET_HEADER, config["DOPE_SERVICE_SECRET"])
    try:
        with urllib.request.urlopen(request, timeout=timeout or config["DOPE_SERVICE_TIMEOUT"]) \
                as answer:
            return answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        data = exc.read()
        if 400 <= exc.code < 500 and exc.code != 401:
            raise PhotoRefused(exc.code, _message(data)) from None
        raise ServiceDown(f"the query service answered {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ServiceDown(f"the query service cannot be reached ({exc})") from None


def _message(data: bytes) -> str:
    try:
        return str(json.loads(data)["message"])
    except (ValueError, KeyError, TypeError):
        return "the photo was refused"


def search(photo: bytes, content_type: str, k: int, *, keep: bool) -> dict:
    """Return the service's answer for a photo: every variant's k nearest catalog items,
    the photo's features, and (keep) the photo as searched, upright, without metadata."""
    query = urllib.parse.urlencode({"k": k, "features": 1, **({"keep": 1} if keep else {})})
    data, _ = _request(f"/v1/search?{query}", photo, content_type)
    try:
        answer = json.loads(data)
        answer["variants"].items()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ServiceDown("the query service gave an answer that is not a search") from None
    return answer


def thumbnail(image_id: str) -> bytes:
    """Return a catalog item's thumbnail bytes (PNG or JPEG)."""
    try:
        data, _ = _request("/v1/thumbnails/" + urllib.parse.quote(image_id, safe=""))
    except PhotoRefused:
        raise ServiceDown(f"the query service has no picture of {image_id}") from None
    return data


def health(timeout: float = 1.5) -> dict:
    """Return the service's health answer; ServiceDown when it gives none quickly."""
    try:
        data, _ = _request("/v1/health", timeout=timeout)
        return json.loads(data)
    except (PhotoRefused, ValueError) as exc:
        raise ServiceDown(f"the query service is not answering ({exc})") from None
