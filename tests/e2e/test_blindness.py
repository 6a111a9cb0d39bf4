"""Blindness: nothing a voter's browser receives names or hints at the variant.

A real Chromium plays 50 votes against a real gunicorn while every response is kept:
HTML, CSS, JS, JSON, image bytes, every header, every Set-Cookie. Signed is not
secret: the voter cookie and pair tokens must have their exact plain formats (ids,
a time and a MAC), and any itsdangerous-style value (a Flask session cookie) is
decoded and searched too.
The checker is then run on that corpus, and shown to catch leaks planted in it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from e2e_checks import voter_id_of, wait_for_votes
from e2e_harness import VOTER_COOKIE, decode_signed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

VOTES = 50
IMAGE_PATH = re.compile(r"^/images/([0-9a-f]{64})\.(png|jpg|jpeg|webp)$")
# A pair token is <random nonce>.<voter id>.<issue time, hex seconds>.<HMAC-SHA256>.
PAIR_TOKEN = re.compile(r"^[0-9a-f]{32}\.[0-9a-f]{32}\.[0-9a-f]{1,12}\.[A-Za-z0-9_-]{43}$")
STATIC_TYPES = ("text/css", "javascript", "image/svg")
TEXT_TYPES = ("text/", "json", "javascript", "xml")
# Words that would tell a voter what kind of thing picked the match, whatever the build.
GENERIC_HINTS = {"variant", "slug", "network", "layer", "metric", "pair_id", "variant_id",
                 "distance", "rank", "category", "control"}


@dataclass
class Served:
    """One response as the browser got it."""

    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers if k.lower() == "content-type"), "").lower()

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass
class Hints:
    """What must never reach a voter: long ones anywhere, short ones in dynamic text."""

    long: set[str]
    short: set[str]
    secret_ids: set[int] = field(default_factory=set)


def hints_from_manifest(manifest: dict) -> Hints:
    """Variant slugs, names, networks, layers, metrics and their parts; category names."""
    long, short = set(), set()
    for v in manifest["variants"]:
        values = [v["slug"], v["name"], v.get("network"), v.get("layer"), v.get("metric")]
        parts = re.split(r"[.\-_\s]+", v["slug"] + " " + (v.get("network") or ""))
        for value in [*values, *parts]:
            if value and len(value) >= 2:
                (long if len(value) > 3 else short).add(value.lower())
    short |= {c.lower() for c in manifest["categories"]} | GENERIC_HINTS
    return Hints(long=long, short=short)


def _find_words(text: str, words: set[str]) -> list[str]:
    low = text.lower()
    return [w for w in sorted(words)
            if re.search(r"(?<![a-z0-9])" + re.escape(w) + r"(?![a-z0-9])", low)]


def _ids_in(payload_text: str, secret_ids: set[int]) -> list[int]:
    """Return secret ids that appear as values in a decoded JSON payload."""
    try:
        payload = json.loads(payload_text)
    except ValueError:
        return sorted({int(n) for n in re.findall(r"\d+", payload_text)} & secret_ids)
    found, stack = set(), [payload]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, bool):
            continue
        elif isinstance(x, int) and x in secret_ids:
            found.add(x)
        elif isinstance(x, str) and x.isdigit() and int(x) in secret_ids:
            found.add(int(x))
    return sorted(found)


def _dynamic_strings(item: Served) -> list[tuple[str, str, bool]]:
    """Return (where, text, was_signed) for a response's dynamic parts, signed values decoded."""
    out = []
    for name, value in item.headers:
        if name.lower() == "set-cookie":
            cookie_value = value.split(";", 1)[0].split("=", 1)[-1]
            out.append((f"{item.url} Set-Cookie", value, False))
            decoded = decode_signed(cookie_value)
            if decoded is not None:
                out.append((f"{item.url} Set-Cookie decoded", decoded, True))
        else:
            out.append((f"{item.url} header {name}", value, False))
    if "json" in item.content_type:
        stack = [json.loads(item.body or b"null")]
        while stack:
            x = stack.pop()
            if isinstance(x, dict):
                stack.extend(x.values())
                out.append((f"{item.url} JSON keys", " ".join(map(str, x.keys())), False))
            elif isinstance(x, list):
                stack.extend(x)
            elif isinstance(x, str):
                decoded = decode_signed(x) if x.count(".") >= 2 else None
                if decoded is None:
                    out.append((f"{item.url} JSON value", x, False))
                else:  # a signed token: its payload is read; its base64 and signature are
                    # random, and a short hint ("l2") turns up in them by chance
                    out.append((f"{item.url} JSON value decoded", decoded, True))
    elif "html" in item.content_type:
        out.append((f"{item.url} HTML", item.body.decode("utf-8", "replace"), False))
    return out


def find_leaks(served: list[Served], hints: Hints, extra_text: dict | None = None) -> list[str]:
    """Return every hint of a variant found in what was served; [] when blind."""
    leaks = []
    for item in served:
        raw = item.body.decode("latin-1")
        for w in _find_words(raw + "\n" + repr(item.headers), hints.long):
            leaks.append(f"{item.url}: names {w!r}")
        for where, text, was_signed in _dynamic_strings(item):
            leaks += [f"{where}: names {w!r}" for w in _find_words(text, hints.short | hints.long)]
            if was_signed:
                leaks += [f"{where}: carries id {i}" for i in _ids_in(text, hints.secret_ids)]
        if item.content_type.startswith("text/") and not any(
                t in item.content_type for t in STATIC_TYPES) and "html" not in item.content_type:
            leaks += [f"{item.url}: names {w!r}" for w in _find_words(raw, hints.short)]
        leaks += _structure_leaks(item)
    for where, text in (extra_text or {}).items():
        leaks += [f"{where}: names {w!r}" for w in _find_words(text, hints.short | hints.long)]
    return leaks


def _structure_leaks(item: Served) -> list[str]:
    """Pair JSON has exactly a token and two content-addressed image URLs."""
    path, leaks = item.path, []
    for name, value in item.headers:
        if name.lower() == "set-cookie" and value.startswith("dope_voter="):
            cookie = value.split(";", 1)[0].split("=", 1)[1]
            if not VOTER_COOKIE.match(cookie):
                leaks.append(f"{item.url}: voter cookie {cookie!r} is not <voter id>.<mac>")
    if path == "/api/pair" and item.status == 200:
        body = json.loads(item.body)
        if set(body) != {"token", "query", "match"}:
            leaks.append(f"{item.url}: pair JSON has keys {sorted(body)}")
        if not PAIR_TOKEN.match(str(body.get("token"))):
            leaks.append(f"{item.url}: token {body.get('token')!r} is not "
                         "<random nonce>.<voter id>.<issue time>.<mac>")
        for side in ("query", "match"):
            if not isinstance(body.get(side), dict) or set(body[side]) != {"url"}:
                leaks.append(f"{item.url}: {side} is {body.get(side)!r}, not just a url")
            elif not IMAGE_PATH.match(urlsplit(body[side]["url"]).path) or \
                    urlsplit(body[side]["url"]).query:
                leaks.append(f"{item.url}: {side} url {body[side]['url']!r} is not a content hash")
    m = IMAGE_PATH.match(path)
    if m and item.status == 200 and hashlib.sha256(item.body).hexdigest() != m.group(1):
        leaks.append(f"{item.url}: image bytes do not hash to the URL's name")
    return leaks


# ---------------------------------------------------------------- the real session

@pytest.fixture(scope="module")
def blind_session(browser, live_server):
    """Play VOTES votes in Chromium; return (everything served, voter id, localStorage)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    pending, served = [], []
    page.on("response", lambda r: pending.append(r))

    def collect():
        while pending:
            r = pending.pop(0)
            try:
                body = r.body()
            except Exception:  # redirects and bodiless responses have none
                body = b""
            served.append(Served(r.url, r.status, [(h["name"], h["value"])
                                                   for h in r.headers_array()], body))

    page.goto(live_server.url + "/")
    collect()
    page.get_by_role("link", name="Play Dope or Nope").click()
    page.wait_for_selector("[data-game][data-state='ready'] .card.is-top")
    actions = ["ArrowRight", "ArrowLeft", "Dope", "s", "Nope", "ArrowDown", "Can't tell"]
    for i in range(VOTES):
        current = page.eval_on_selector(".card.is-top", "c => c.innerHTML")
        action = actions[i % len(actions)]
        if action.startswith(("Arrow", "s")):
            page.keyboard.press(action)
        else:
            page.get_by_role("button", name=action, exact=True).click()
        page.wait_for_function(
            "prev => { const c = document.querySelector('[data-state=ready] .card.is-top');"
            " return c && c.innerHTML !== prev; }", arg=current, timeout=15000)
        collect()
    page.wait_for_selector(f"[data-game][data-unsent='0'] #vote-count:text-is('{VOTES}')")
    collect()
    voter = voter_id_of(context, live_server)
    storage = page.evaluate("() => JSON.stringify(Object.assign({}, localStorage))")
    context.close()
    return served, voter, storage


@pytest.fixture(scope="module")
def hints(live_server, blind_session) -> Hints:
    _, voter, _ = blind_session
    h = hints_from_manifest(json.loads(Path(live_server.build, "manifest.json").read_text()))
    ids = live_server.query("SELECT id, pair_id FROM issued_token WHERE voter_id = ?", (voter,))
    variants = live_server.query("SELECT id FROM variant")
    images = live_server.query("SELECT id FROM image")
    h.secret_ids = {i for row in ids for i in row} | {v for (v,) in variants} \
        | {i for (i,) in images}
    return h


def test_fifty_votes_reveal_nothing_about_the_variant(live_server, blind_session, hints):
    served, voter, storage = blind_session
    votes = wait_for_votes(live_server, voter, VOTES)
    assert len({slug for _, _, slug, _ in votes}) >= 3  # several variants were really served
    kinds = {s.content_type.split(";")[0] for s in served}
    assert {"text/html", "text/css", "application/json"} <= kinds, kinds
    assert any("javascript" in k for k in kinds) and any(k.startswith("image/") for k in kinds)
    pairs = [s for s in served if s.path == "/api/pair"]
    assert len(pairs) >= VOTES + 1
    assert sum(1 for s in served if s.path == "/api/vote") >= VOTES
    assert any(h.lower() == "set-cookie" for s in served for h, _ in s.headers)
    assert find_leaks(served, hints, {"localStorage": storage}) == []


def test_vote_answers_carry_the_vote_id_not_the_pair(live_server, blind_session):
    served, voter, _ = blind_session
    acks = [json.loads(s.body) for s in served if s.path == "/api/vote" and s.status == 201]
    assert len(acks) == VOTES
    assert all(set(a) == {"id", "votes_cast"} for a in acks)
    ids = {i for (i,) in live_server.query("SELECT id FROM vote WHERE voter_id = ?", (voter,))}
    assert {a["id"] for a in acks} == ids
    assert sorted(a["votes_cast"] for a in acks) == list(range(1, VOTES + 1))


# ---------------------------------------------------------------- the checker can fail

def _with(served: list[Served], path: str, mutate) -> list[Served]:
    """Return a copy of the corpus where the first response at `path` is mutated."""
    out, done = [], False
    for s in served:
        if not done and s.path == path and s.status in (200, 201):
            s, done = mutate(Served(s.url, s.status, list(s.headers), s.body)), True
        out.append(s)
    assert done, f"no response for {path} in the corpus"
    return out


def _json_edit(edit):
    def mutate(s: Served) -> Served:
        body = json.loads(s.body)
        edit(body)
        s.body = json.dumps(body).encode()
        return s
    return mutate


def _planted_cases(served, hints, live_server):
    from itsdangerous import URLSafeTimedSerializer

    manifest = json.loads(Path(live_server.build, "manifest.json").read_text())
    real = next(v for v in manifest["variants"] if not v["control"])
    control = next(v for v in manifest["variants"] if v["control"])
    pair_id = min(hints.secret_ids)
    token = URLSafeTimedSerializer("k", salt="s").dumps({"n": "ab" * 16, "p": pair_id})
    big_cookie = URLSafeTimedSerializer("k", salt="cookie-session").dumps(
        {"voter": "0" * 32, "pad": "x" * 400, "v": real["name"]})
    assert big_cookie.startswith(".")  # the compressed form is decoded too
    image = next(s for s in served if IMAGE_PATH.match(s.path))
    return {
        "slug in pair JSON": _with(served, "/api/pair",
                                   _json_edit(lambda b: b.update(v=real["slug"]))),
        "control slug as a URL parameter": _with(served, "/api/pair", _json_edit(
            lambda b: b["match"].update(url=b["match"]["url"] + "?from=" + control["slug"]))),
        "pair id inside a signed token": _with(served, "/api/pair",
                                               _json_edit(lambda b: b.update(token=token))),
        "layer name in an extra key": _with(served, "/api/pair",
                                            _json_edit(lambda b: b.update(extra=real["layer"]))),
        "name in a compressed session cookie": _with(
            served, "/play", lambda s: (s.headers.append(("Set-Cookie", f"session={big_cookie};"
                                                          " HttpOnly; Path=/")), s)[1]),
        "metric in a response header": _with(
            served, "/api/vote", lambda s: (s.headers.append(("X-Why", real["metric"])), s)[1]),
        "network name in the script": _with(
            served, "/static/js/game.js",
            lambda s: (setattr(s, "body", s.body + f"// {real['network']}\n".encode()), s)[1]),
        "an image that is not its hash": _with(
            served, image.path, lambda s: (setattr(s, "body", s.body + b"\0"), s)[1]),
    }


def test_the_checker_finds_planted_leaks(live_server, blind_session, hints):
    served, _, _ = blind_session
    assert find_leaks(served, hints) == []  # so each leak below is the planted one
    for what, corpus in _planted_cases(served, hints, live_server).items():
        assert find_leaks(corpus, hints), f"the checker missed: {what}"


def test_the_checker_leaves_css_properties_alone(hints):
    css = Served("http://x/static/css/app.css", 200, [("Content-Type", "text/css")],
                 b".card { gap: 16px; }")
    assert "gap" in hints.short  # mobilenet_v2-imagenet.gap.l2 in the test build
    assert find_leaks([css], hints) == []
    as_json = Served("http://x/api/pair", 200, [("Content-Type", "application/json")],
                     b'{"token": "t", "query": {"url": "/images/x.png"}, "note": "gap"}')
    assert find_leaks([as_json], hints)
