"""`crowd play`: simulated voters play a running server over HTTP, as browsers do.

Each simulated person keeps its own cookies, sends the page's Origin, asks
`GET /api/pair`, looks at the pair for a human decision time (unless fast) and
sends `POST /api/vote` with the verdict and that decision time. It tells which
catalog images it was shown only from the image URLs and the build's thumbnails
(file names are content hashes): it never reads the server's database. A 429 or
503 is retried after its Retry-After; a 404 (no pairs left for that voter) ends
that voter. Only servers on this machine (loopback) are played, and the run is
bounded by the vote count, a request budget and a time limit.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from engine.crowd.simulate import JudgedBuild, Population, Voter, new_voter, resolve_target

USER_AGENT = "dope-or-nope-crowd/1"
REQUEST_TIMEOUT = 30
MAX_WAIT = 60.0  # the longest Retry-After the player sleeps at once
REQUESTS_PER_VOTE = 20  # request budget: at most this many per vote asked for, plus 100


class PlayError(RuntimeError):
    """The server cannot be played (not loopback, unreachable, not a Dope or Nope server)."""


def loopback_url(url: str) -> tuple[str, int, str]:
    """Return (host, port, origin) of an http URL on this machine, or raise ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--url must be http://HOST:PORT of a server on this machine, "
                         f"not {url!r}")
    host = parts.hostname
    try:
        port = parts.port or 80
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port)}
    except (OSError, ValueError) as exc:
        raise ValueError(f"--url {url!r}: cannot resolve {host!r} ({exc})") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"--url {url!r}: crowd play only plays servers on this machine "
                         "(loopback: 127.0.0.0/8, ::1, localhost)")
    return host, port, f"http://{parts.netloc}"


@dataclass
class Answer:
    status: int
    body: dict
    retry_after: float


@dataclass
class Browser:
    """One simulated person's HTTP client: its own cookies, the page's Origin."""

    host: str
    port: int
    origin: str
    forwarded_for: str | None = None
    cookies: dict = field(default_factory=dict)

    def request(self, method: str, path: str, body: dict | None = None) -> Answer:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json",
                   "Origin": self.origin, "Referer": self.origin + "/play"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.forwarded_for:
            headers["X-Forwarded-For"] = self.forwarded_for
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
            retry = response.headers.get("Retry-After")
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        return Answer(response.status, parsed if isinstance(parsed, dict) else {},
                      _seconds(retry))

    def drop_cookies(self) -> None:
        self.cookies.clear()


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


def image_index(judged: JudgedBuild) -> dict[str, str]:
    """Return {thumbnail file name: image id} for the build's images."""
    return {img.thumbnail: img.image_id for img in judged.build.images.values() if img.thumbnail}


@dataclass
class PlayResult:
    votes_cast: int = 0
    statuses: Counter = field(default_factory=Counter)
    unknown_images: int = 0
    voters: int = 0
    identities: int = 0
    elapsed_s: float = 0.0
    stopped: str = ""
    leaderboard: dict = field(default_factory=dict)

    @property
    def votes_per_s(self) -> float:
        return self.votes_cast / self.elapsed_s if self.elapsed_s else 0.0


class Player:
    """Plays N votes with V simulated people at a time (threads), bounded in time."""

    def __init__(self, judged: JudgedBuild, population: Population, url: str, *,
                 votes: int, voters: int, seed: int, fast: bool, max_seconds: float,
                 forwarded_for: bool = False):
        self.judged, self.population = judged, population
        self.host, self.port, self.origin = loopback_url(url)
        self.votes, self.voters, self.seed, self.fast = votes, voters, seed, fast
        self.deadline = time.monotonic() + max_seconds
        self.forwarded_for = forwarded_for
        self.files = image_index(judged)
        self.target_pairs = judged.target_pairs(resolve_target(judged, population)) \
            if "adversary" in population.mix else set()
        self.lock = threading.Lock()
        self.result = PlayResult()
        self.asked = 0
        self.request_budget = REQUESTS_PER_VOTE * votes + 100
        self.requests = 0
        self.address_counter = 0

    # -- bookkeeping shared by the threads

    def _take_vote_slot(self) -> bool:
        with self.lock:
            if self.asked >= self.votes or time.monotonic() > self.deadline:
                return False
            self.asked += 1
            return True

    def _give_back_slot(self) -> None:
        with self.lock:
            self.asked -= 1

    def _count(self, status: int) -> bool:
        """Count one request; return False when the request budget is spent."""
        with self.lock:
            self.result.statuses[status] += 1
            self.requests += 1
            return self.requests < self.request_budget

    def _new_address(self) -> str:
        # 198.18.0.0/15 is reserved for benchmarks (RFC 2544): never a real client.
        with self.lock:
            self.address_counter += 1
            n = self.address_counter
        return f"198.{18 + (n >> 16) % 2}.{(n >> 8) & 255}.{n & 255}"

    def _browser(self) -> Browser:
        return Browser(self.host, self.port, self.origin,
                       self._new_address() if self.forwarded_for else None)

    # -- one request, retried after 429/503 while time remains

    def _ask(self, browser: Browser, method: str, path: str, body=None) -> Answer | None:
        while True:
            try:
                answer = browser.request(method, path, body)
            except (OSError, http.client.HTTPException):
                if not self._count(0) or time.monotonic() > self.deadline:
                    return None
                time.sleep(0.2)
                continue
            if not self._count(answer.status):
                return None
            if answer.status not in (429, 503):
                return answer
            wait = min(answer.retry_after, MAX_WAIT)
            if time.monotonic() + wait > self.deadline:
                return None
            time.sleep(wait)

    def _shown(self, pair: dict) -> tuple[str, str] | None:
        try:
            names = [pair[k]["url"].rsplit("/", 1)[-1] for k in ("query", "match")]
        except (KeyError, TypeError, AttributeError):
            return None
        ids = [self.files.get(n) for n in names]
        return (ids[0], ids[1]) if None not in ids else None

    def _vote_once(self, voter: Voter, browser: Browser, rng: random.Random) -> bool:
        """Fetch a pair and judge it; return False when this voter is done."""
        answer = self._ask(browser, "GET", "/api/pair")
        if answer is None or answer.status != 200:
            return False
        shown = self._shown(answer.body)
        if shown is None:
            with self.lock:
                self.result.unknown_images += 1
            verdict = "skip"
        else:
            look = self.judged.look(*shown)
            verdict = voter.decide(look, shown in self.target_pairs, self.population.params, rng)
        ms = voter.decision_ms(self.population.params, rng)
        if not self.fast:
            time.sleep(min(ms / 1000, max(0.0, self.deadline - time.monotonic())))
        answer = self._ask(browser, "POST", "/api/vote", {
            "token": answer.body.get("token"), "verdict": verdict, "decision_ms": ms})
        if answer is None:
            return False
        if answer.status == 201:
            voter.cast += 1
            with self.lock:
                self.result.votes_cast += 1
        return True

    def _play_voter(self, voter: Voter, rng: random.Random) -> None:
        browser = self._browser()
        every = self.population.params["adversary"]["cookie_every"]
        with self.lock:
            self.result.voters += 1
            self.result.identities += 1
        while voter.cast < voter.budget and self._take_vote_slot():
            if voter.kind == "adversary" and voter.cast and voter.cast % every == 0:
                browser = self._browser()  # a new cookie jar (and, behind a proxy, address)
                with self.lock:
                    self.result.identities += 1
            cast_before = voter.cast
            keep_going = self._vote_once(voter, browser, rng)
            if voter.cast == cast_before:
                self._give_back_slot()
            if not keep_going:
                break

    def _seat(self, seat: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + seat)
        idle = 0
        while self.asked < self.votes and time.monotonic() < self.deadline and idle < 50 \
                and self.requests < self.request_budget:
            voter = new_voter(self.population, rng)
            self._play_voter(voter, rng)
            idle = idle + 1 if voter.cast == 0 else 0

    def play(self) -> PlayResult:
        """Play until N votes are cast or time or requests run out; return the figures."""
        check_server(self.host, self.port)
        start = time.monotonic()
        threads = [threading.Thread(target=self._seat, args=(i,), daemon=True)
                   for i in range(self.voters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        r = self.result
        r.elapsed_s = time.monotonic() - start
        r.stopped = ("votes" if r.votes_cast >= self.votes else
                     "time" if time.monotonic() > self.deadline else
                     "requests" if self.requests >= self.request_budget else "pairs")
        r.leaderboard = self._browser().request("GET", "/api/leaderboard").body
        return r


def check_server(host: str, port: int) -> None:
    """Raise PlayError unless a Dope or Nope server answers /api/leaderboard there."""
    try:
        answer = Browser(host, port, f"http://{host}:{port}").request("GET", "/api/leaderboard")
    except (OSError, http.client.HTTPException) as exc:
        raise PlayError(f"cannot reach http://{host}:{port}/ ({exc}); is the server "
                        "running?") from None
    if answer.status != 200 or "variants" not in answer.body:
        raise PlayError(f"http://{host}:{port}/api/leaderboard answered {answer.status} "
                        "without a leaderboard: is this a Dope or Nope server?")
