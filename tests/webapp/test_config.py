import pytest

from webapp import create_app
from webapp.config import ConfigError, from_environ, normalise_database_url


@pytest.fixture
def production_env(monkeypatch, tmp_path):
    for name in ("SECRET_KEY", "DOPE_SECRET_KEY", "FLASK_DEBUG", "DOPE_DEMO", "DATABASE_URL",
                 "DOPE_TEAM_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'p.sqlite3'}")
    return monkeypatch


def test_refuses_to_start_without_secret_key(production_env, tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"DOPE_IMAGE_DIR": str(tmp_path / "images")})


@pytest.mark.parametrize("flag", ["FLASK_DEBUG", "DOPE_DEMO"])
def test_dev_fallback_only_in_dev_modes(production_env, tmp_path, flag):
    production_env.setenv(flag, "1")
    app = create_app({"DOPE_IMAGE_DIR": str(tmp_path / "images")})
    assert app.config["SECRET_KEY"]


def test_demo_mode_has_a_team_password(production_env, tmp_path):
    production_env.setenv("DOPE_DEMO", "1")
    app = create_app({"DOPE_IMAGE_DIR": str(tmp_path / "images")})
    assert app.config["DOPE_TEAM_PASSWORD"]


def test_environment_overrides(production_env, tmp_path):
    production_env.setenv("SECRET_KEY", "s3cret")
    production_env.setenv("DOPE_CONTROL_SHARE", "0.25")
    production_env.setenv("DOPE_MAX_VOTES_PER_HOUR", "7")
    app = create_app({"DOPE_IMAGE_DIR": str(tmp_path / "images")})
    assert app.config["SECRET_KEY"] == "s3cret"
    assert app.config["DOPE_CONTROL_SHARE"] == 0.25
    assert app.config["DOPE_MAX_VOTES_PER_HOUR"] == 7


def test_bad_environment_value_is_named():
    with pytest.raises(ConfigError, match="DOPE_TOKEN_TTL"):
        from_environ({"DOPE_TOKEN_TTL": "soon"})


@pytest.mark.parametrize(("url", "expected"), [
    ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("postgresql://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
])
def test_database_url_uses_psycopg3(url, expected):
    assert normalise_database_url(url) == expected


def test_default_database_is_sqlite_in_instance(production_env, tmp_path):
    production_env.delenv("DATABASE_URL")
    production_env.setenv("SECRET_KEY", "x")
    app = create_app({"DOPE_IMAGE_DIR": str(tmp_path / "images")})
    assert app.config["SQLALCHEMY_DATABASE_URI"].endswith("instance/dope.sqlite3")
