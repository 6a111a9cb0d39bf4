"""Default configuration; the environment and create_app(test_config) override it."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

DEV_SECRET_KEY = "dev-only-not-secret"
DEMO_TEAM_PASSWORD = "dope-demo"

DEFAULTS = {
    "SECRET_KEY": None,
    "SQLALCHEMY_DATABASE_URI": None,  # instance/dope.sqlite3 unless DATABASE_URL is set
    "SQLALCHEMY_ENGINE_OPTIONS": None,  # pool_pre_ping for server databases (finish())
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "DOPE_IMAGE_DIR": None,  # instance/images
    "DOPE_CONTROL_SHARE": 0.1,
    # Of the other pairs, the share chosen by the adaptive top-two rule on the newest
    # fit (webapp/stats/allocation.py); the rest are uniform. Chosen on the tuning seeds of
    # bench/allocation.py (docs/benchmarks.md, "Adaptive against uniform").
    "DOPE_ADAPTIVE_SHARE": 0.65,
    # Each of a voter's first DOPE_GOLD_FIRST_PAIRS pairs is, with DOPE_GOLD_FIRST_SHARE,
    # a random-control pair outside the mixture ("gold"): about one per voter, so that
    # the many who cast a handful of votes leave evidence of whether they look
    # (webapp/stats/looking.py). Its votes never enter the estimates. 0 turns it off.
    "DOPE_GOLD_FIRST_PAIRS": 3,
    "DOPE_GOLD_FIRST_SHARE": 0.34,
    # Seconds between fits (webapp/jobs/fit.py) that requests for the leaderboard or team
    # page start when votes came in since the last; 0: only `flask fit` fits.
    "DOPE_FIT_INTERVAL": 60,
    "DOPE_TOKEN_TTL": 900,  # seconds a pair token stays valid
    "DOPE_MAX_VOTES_PER_HOUR": 600,
    "DOPE_MAX_PAIRS_PER_HOUR": 1800,
    "DOPE_MIN_VOTE_INTERVAL_MS": 250,
    # A vote sent sooner after its pair than anyone can look at two pictures is refused
    # (429 too_fast, Retry-After: the rest of the interval).
    "DOPE_MIN_DECISION_MS": 300,
    # Pairs served per client address (webapp/play/limits.py), and so votes (a vote needs a
    # served pair's token): a burst, a sustained rate per second and an hourly cap.
    # About five people at full speed behind one NAT play unhindered; one script
    # dropping its cookie gets ~120 pairs at once, then 2.5 a second, 4,000 an hour.
    # A burst of 0 turns the limit off.
    "DOPE_ADDRESS_PAIR_BURST": 120,
    "DOPE_ADDRESS_PAIR_RATE": 2.5,
    "DOPE_ADDRESS_PAIRS_PER_HOUR": 4000,
    "DOPE_LOGIN_BURST": 5,
    "DOPE_LOGIN_RATE": 0.0167,  # one more attempt a minute
    "DOPE_LOGINS_PER_HOUR": 30,
    # Proxies in front of the app whose X-Forwarded-For to trust (werkzeug's ProxyFix);
    # 0 means clients connect directly and their socket address counts.
    "DOPE_TRUSTED_PROXIES": 0,
    "DOPE_MAX_BODY_BYTES": 4096,
    "DOPE_TEAM_PASSWORD": None,
    "DOPE_DEMO": False,
    "DOPE_FAST_PATH": True,  # webapp/play/fastpath.py; 0 sends every request through Flask
    # The try-it-out page (webapp/tryout): the engine's query service (`python -m engine
    # serve`), its shared secret (X-Dope-Service-Secret) and how long to wait for it; the
    # matches asked per variant; the largest photo accepted.
    "DOPE_SERVICE_URL": "http://127.0.0.1:8100",
    "DOPE_SERVICE_SECRET": "",
    "DOPE_SERVICE_TIMEOUT": 20.0,
    "DOPE_TRY_K": 5,
    "DOPE_MAX_PHOTO_BYTES": 15 * 2**20,
    "DOPE_PHOTO_DIR": None,  # instance/photos: photos kept with consent, never served
    # Photos searched per client address: each costs the service a full pass of every
    # network, so far fewer than pairs.
    "DOPE_ADDRESS_PHOTO_BURST": 10,
    "DOPE_ADDRESS_PHOTO_RATE": 0.05,
    "DOPE_ADDRESS_PHOTOS_PER_HOUR": 120,
}


class ConfigError(RuntimeError):
    """The app cannot start with this configuration."""


def _coerce(value: str, default):
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def normalise_database_url(url: str) -> str:
    """Point postgres:// and postgresql:// URLs at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def from_environ(environ=os.environ) -> dict:
    """Return the settings the environment gives, coerced to the defaults' types."""
    out = {}
    for key, default in DEFAULTS.items():
        if key.startswith("DOPE_") and key in environ:
            try:
                out[key] = _coerce(environ[key], default)
            except ValueError as exc:
                raise ConfigError(f"{key}={environ[key]!r} is not a valid value") from exc
    secret = environ.get("SECRET_KEY") or environ.get("DOPE_SECRET_KEY")
    if secret:
        out["SECRET_KEY"] = secret
    if environ.get("DATABASE_URL"):
        out["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(environ["DATABASE_URL"])
    return out


def dev_mode(config, environ=os.environ) -> bool:
    """Return True when a dev fallback secret is acceptable."""
    flag = environ.get("FLASK_DEBUG", "").lower() in ("1", "true")
    return flag or bool(config.get("DOPE_DEMO")) or bool(config.get("TESTING"))


DEV_KEY_WARNING = "Using the dev fallback SECRET_KEY; never do this in production."
DEMO_PASSWORD_WARNING = f"Demo mode: the team page password is {DEMO_TEAM_PASSWORD!r}."
# Set by gunicorn's master (gunicorn.conf.py) once it has logged the warnings below,
# so that its workers do not each log them again.
WARNINGS_SAID = "DOPE_DEV_WARNINGS_SAID"


def dev_warnings(config, environ=os.environ) -> list[str]:
    """Return the warnings an app with these settings logs at start-up."""
    out = []
    if not config.get("SECRET_KEY") and dev_mode(config, environ):
        out.append(DEV_KEY_WARNING)
    if not config.get("DOPE_TEAM_PASSWORD") and config.get("DOPE_DEMO"):
        out.append(DEMO_PASSWORD_WARNING)
    return out


def finish(config, instance_path: str, environ=os.environ) -> None:
    """Fill derived defaults and refuse to run without a secret outside dev."""
    warnings = dev_warnings(config, environ)
    if not config.get("SECRET_KEY"):
        if not dev_mode(config, environ):
            raise ConfigError(
                "SECRET_KEY is not set. Set SECRET_KEY in the environment "
                "(or FLASK_DEBUG=1 / DOPE_DEMO=1 for a local dev fallback).")
        config["SECRET_KEY"] = DEV_SECRET_KEY
    if not config.get("SQLALCHEMY_DATABASE_URI"):
        path = os.path.join(instance_path, "dope.sqlite3")
        config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + path
    config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(config["SQLALCHEMY_DATABASE_URI"])
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if not config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # A server restart drops pooled connections; a file database never does, and
        # the ping would cost a round trip on every request.
        options.setdefault("pool_pre_ping", True)
    config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    if not config.get("DOPE_IMAGE_DIR"):
        config["DOPE_IMAGE_DIR"] = os.path.join(instance_path, "images")
    if not config.get("DOPE_PHOTO_DIR"):
        config["DOPE_PHOTO_DIR"] = os.path.join(instance_path, "photos")
    if not config.get("DOPE_TEAM_PASSWORD") and config.get("DOPE_DEMO"):
        config["DOPE_TEAM_PASSWORD"] = DEMO_TEAM_PASSWORD
    if not environ.get(WARNINGS_SAID):
        for message in warnings:
            logger.warning(message)
