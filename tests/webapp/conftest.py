import shutil
import threading
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest
from buildmaker import write_build
from tryout_standin import Quiet, StandInService

from webapp import create_app
from webapp.extensions import db
from webapp.jobs.builds import import_build

# Every limit still runs (its statements too), with budgets no test reaches.
PERMISSIVE = {"DOPE_MIN_VOTE_INTERVAL_MS": 0, "DOPE_MAX_VOTES_PER_HOUR": 100000,
              "DOPE_MAX_PAIRS_PER_HOUR": 100000, "DOPE_MIN_DECISION_MS": 0,
              "DOPE_ADDRESS_PAIR_BURST": 10**9, "DOPE_ADDRESS_PAIR_RATE": 1e6,
              "DOPE_ADDRESS_PAIRS_PER_HOUR": 10**9}


def make_app(tmp_path, **overrides):
    config = {"TESTING": True, "SECRET_KEY": "test-secret",
              "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'test.sqlite3'}",
              "DOPE_IMAGE_DIR": str(tmp_path / "images"), "DOPE_CONTROL_SHARE": 0.0,
              "DOPE_GOLD_FIRST_PAIRS": 0, "DOPE_FIT_INTERVAL": 0,
              **PERMISSIVE, **overrides}
    app = create_app(config)
    with app.app_context():
        db.create_all()
    return app


def make_loaded_app(tmp_path, build, **overrides):
    """make_app, with the build imported."""
    app = make_app(tmp_path, **overrides)
    with app.app_context():
        import_build(build, app.config["DOPE_IMAGE_DIR"])
    return app


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def build_template(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("template") / "build")


@pytest.fixture
def build_dir(tmp_path, build_template):
    """A fresh copy of the small test build, free to change or delete."""
    return Path(shutil.copytree(build_template, tmp_path / "build"))


@pytest.fixture
def loaded(app, build_dir):
    """The app with the small test build imported."""
    with app.app_context():
        import_build(build_dir, app.config["DOPE_IMAGE_DIR"])
    return app


def cast(client, verdict="dope", **extra):
    """Fetch a pair and vote on it; return (pair response, vote response)."""
    pair = client.get("/api/pair")
    assert pair.status_code == 200, pair.json
    vote = client.post("/api/vote", json={"token": pair.json["token"], "verdict": verdict,
                                          **extra})
    return pair, vote


@pytest.fixture
def service(build_dir):
    """A stand-in for the engine's query service on a real local port
    (tests/webapp/tryout_standin.py), answering from the test build's catalog."""
    stand_in = StandInService(build_dir)
    server = make_server("127.0.0.1", 0, stand_in, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_port}"
    yield stand_in
    server.shutdown()
    server.server_close()
