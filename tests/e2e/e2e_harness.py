"""The real parts end-to-end tests run against: gunicorn, PostgreSQL, Chromium.

Nothing is mocked. A server is a real `gunicorn 'webapp:create_app()'` process on a
free port of 127.0.0.1, on a fresh database, with a build from tests/buildmaker.py
imported through the real `flask --app webapp` commands.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("DOPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET_KEY = "e2e-test-secret-key-not-for-production"
# Limits that never get in a test's way unless the test asks for them.
# Every limit still runs (its statements too), with budgets no test reaches.
PERMISSIVE = {"DOPE_MAX_VOTES_PER_HOUR": "1000000", "DOPE_MAX_PAIRS_PER_HOUR": "1000000",
              "DOPE_MIN_VOTE_INTERVAL_MS": "0", "DOPE_MIN_DECISION_MS": "0",
              "DOPE_ADDRESS_PAIR_BURST": "1000000000", "DOPE_ADDRESS_PAIR_RATE": "1000000",
              "DOPE_ADDRESS_PAIRS_PER_HOUR": "1000000000"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Return the ids of a process's direct children (Linux /proc)."""
    out = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError), open(task) as f:
            out.extend(int(p) for p in f.read().split())
    return out


def decode_signed(value: str) -> str | None:
    """Return the readable payload of an itsdangerous-style signed value, if it has one.

    Flask session cookies and itsdangerous tokens are `payload.timestamp.signature`,
    the payload base64url JSON, zlib-compressed when the value starts with a dot.
    Signed is not secret: anything in the payload is visible to the voter.
    """
    compressed = value.startswith(".")
    head = value.lstrip(".").split(".", 1)[0]
    if not head:
        return None
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        if compressed:
            raw = zlib.decompress(raw)
        return raw.decode("utf-8")
    except (ValueError, zlib.error, UnicodeDecodeError):
        return None


VOTER_COOKIE = re.compile(r"^([0-9a-f]{32})\.[A-Za-z0-9_-]{43}$")


def voter_of_cookie(cookie_value: str) -> str:
    """Return the voter id in a signed `dope_voter` cookie value (`<voter id>.<mac>`)."""
    match = VOTER_COOKIE.match(cookie_value)
    assert match, f"not a voter cookie: {cookie_value!r}"
    return match.group(1)


def flask_cli(env: dict, *args: str) -> str:
    """Run `flask --app webapp ARGS` like a person would; return its output."""
    proc = subprocess.run([str(BIN / "flask"), "--app", "webapp", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@dataclass
class LiveServer:
    """A running gunicorn with its database and build."""

    url: str
    database_url: str
    build: Path
    env: dict
    proc: subprocess.Popen
    log_path: Path
    sqlite_path: Path | None = None
    workers: int = 2
    extra: dict = field(default_factory=dict)

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self):
        """Open a plain DB-API connection to the server's database (no ORM)."""
        if self.sqlite_path is not None:
            conn = sqlite3.connect(self.sqlite_path, timeout=30)
            return conn
        import psycopg

        return psycopg.connect(self.database_url, autocommit=True)

    def query(self, sql: str, params=()) -> list[tuple]:
        """Run one read query against the database and return all rows."""
        conn = self.connect()
        try:
            if self.sqlite_path is None:
                sql = sql.replace("?", "%s")
            cur = conn.cursor()
            cur.execute(sql, params)
            return cur.fetchall()
        finally:
            conn.close()


def wait_until_serving(server: LiveServer, timeout: float = 60) -> None:
    """Block until the server answers HTTP, or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/", timeout=2) as r:
                if r.status == 200 and len(server.worker_pids()) >= server.workers:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer within {timeout} s:\n{server.log()}")


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process we started (and its group), politely first."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def server_env(database_url: str, image_dir: Path, overrides: dict | None = None) -> dict:
    """Return the environment a test server runs with: no debug, a real secret."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOPE_", "FLASK_")) and k not in ("DATABASE_URL", "SECRET_KEY")}
    env.update(DATABASE_URL=database_url, SECRET_KEY=SECRET_KEY,
               DOPE_IMAGE_DIR=str(image_dir), PYTHONUNBUFFERED="1")
    env.update(PERMISSIVE)
    env.update({k: str(v) for k, v in (overrides or {}).items()})
    return env


@contextlib.contextmanager
def running_server(workdir: Path, *, build: Path, database_url: str | None = None,
                   workers: int = 2, env: dict | None = None):
    """Migrate, import `build`, serve it with gunicorn; yield a LiveServer; stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    sqlite_path = None
    if database_url is None:
        sqlite_path = workdir / "dope.sqlite3"
        database_url = f"sqlite:///{sqlite_path}"
    full_env = server_env(database_url, workdir / "images", env)
    flask_cli(full_env, "db", "upgrade")
    flask_cli(full_env, "import-build", str(build))
    port = free_port()
    log_path = workdir / "gunicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "webapp:create_app()"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveServer(url=f"http://127.0.0.1:{port}", database_url=database_url, build=build,
                        env=full_env, proc=proc, log_path=log_path, sqlite_path=sqlite_path,
                        workers=workers)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop_process(proc)


# ---------------------------------------------------------------- PostgreSQL


def pg_bindir() -> Path | None:
    """Return the directory holding Debian's initdb and postgres, or None."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if out:
            candidates.append(out)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "postgres").exists():
            return Path(c)
    return None


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: Path
    proc: subprocess.Popen

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, dbname: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url(dbname)


def as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


def wait_for_postgres(server: PostgresServer, base: Path, timeout: float = 60) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            log = (base / "postgres.log").read_text(errors="replace")
            raise RuntimeError(f"postgres exited with {server.proc.returncode}:\n{log}")
        try:
            psycopg.connect(server.url("postgres"), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise RuntimeError("postgres did not accept connections in time")


def stop_postgres(server: PostgresServer) -> None:
    """Fast shutdown: SIGINT to the postmaster itself (runuser may sit in between)."""
    pidfile = server.datadir / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, ProcessLookupError):
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
