"""Demo mode under gunicorn: the dev warnings are said once, not once per worker."""

from __future__ import annotations

import pytest
import requests
from e2e_harness import running_server

from webapp import config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_demo_warnings_are_logged_once_with_several_workers(tmp_path, game_build):
    env = {"DOPE_DEMO": "1", "SECRET_KEY": ""}  # no secret: the demo's dev fallback
    with running_server(tmp_path, build=game_build, workers=3, env=env) as server:
        assert requests.get(server.url + "/api/pair", timeout=10).status_code == 200
        login = requests.get(server.url + "/team", timeout=10)
        assert login.status_code in (200, 401)
        log = server.log_path.read_text()
    assert log.count("Booting worker") == 3
    assert log.count(config.DEV_KEY_WARNING) == 1, log
    assert log.count(config.DEMO_PASSWORD_WARNING) == 1, log
