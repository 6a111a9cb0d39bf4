"""Fixtures for end-to-end tests: real gunicorn, real PostgreSQL, real Chromium.

Nothing is mocked; the machinery lives in e2e_harness.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from buildmaker import write_build
from e2e_harness import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PostgresServer,
    as_postgres_user,
    free_port,
    pg_bindir,
    running_server,
    stop_postgres,
    wait_for_postgres,
)

# ---------------------------------------------------------------- builds and servers


@pytest.fixture(scope="session")
def game_build(tmp_path_factory) -> Path:
    """80 queries x 5 variants (4 + the random control): enough for any browser test."""
    return write_build(tmp_path_factory.mktemp("build") / "default", n_queries=80, n_catalog=160)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, game_build):
    """A real gunicorn (2 workers) on a fresh SQLite file with the game build imported."""
    with running_server(tmp_path_factory.mktemp("server"), build=game_build) as server:
        yield server


# ---------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on a free port of 127.0.0.1, started by the test."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) are not installed; "
                    "`make setup` installs Debian's postgresql")
    pytest.importorskip("psycopg", reason="psycopg 3 is needed to talk to PostgreSQL")
    base = Path(tempfile.mkdtemp(prefix="dope-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    datadir, sockdir = base / "data", base
    init = subprocess.run(
        as_postgres_user([str(bindir / "initdb"), "-D", str(datadir), "-U", "dope",
                          "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"]),
        capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    log = open(base / "postgres.log", "wb")  # noqa: SIM115 (closed in teardown)
    # fsync off: these tests kill web workers, never the machine, so durability
    # against power loss is not what they measure.
    proc = subprocess.Popen(
        as_postgres_user([str(bindir / "postgres"), "-D", str(datadir), "-p", str(port),
                          "-k", str(sockdir), "-c", "listen_addresses=127.0.0.1",
                          "-c", "fsync=off", "-c", "max_connections=200"]),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = PostgresServer("127.0.0.1", port, "dope", datadir, proc)
    try:
        wait_for_postgres(server, base)
        yield server
    finally:
        stop_postgres(server)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; never downloads a browser."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}; `make setup` installs Debian's chromium")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for screenshots (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
