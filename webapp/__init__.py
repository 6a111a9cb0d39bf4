"""Dope or Nope web app: blind voting on visual-search pairs and an honest leaderboard."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from webapp import config as config_module
from webapp.extensions import db, migrate
from webapp.http import SessionInterface, register_error_handlers, security_headers
from webapp.play import fastsql

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config=None):
    """Create and configure the Dope or Nope app."""
    app = Flask(__name__, instance_relative_config=True,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(config_module.DEFAULTS)
    app.config.update(config_module.from_environ())  # DOPE_DEMO=1 among them
    if test_config is not None:
        app.config.from_mapping(test_config)
    config_module.finish(app.config, app.instance_path)
    os.makedirs(app.instance_path, exist_ok=True)
    os.makedirs(app.config["DOPE_IMAGE_DIR"], exist_ok=True)

    db.init_app(app)
    fastsql.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))

    from webapp.views import api, game, leaderboard, team, tryout
    for blueprint in (game.bp, api.bp, leaderboard.bp, team.bp, tryout.bp, tryout.api):
        app.register_blueprint(blueprint)

    from webapp import cli
    cli.init_app(app)

    from webapp.play.tokens import csrf_token
    app.jinja_env.globals["csrf_token"] = csrf_token
    register_error_handlers(app)
    app.after_request(security_headers)
    app.session_interface = SessionInterface()
    from webapp.play import fastpath
    fastpath.init_app(app)
    proxies = app.config["DOPE_TRUSTED_PROXIES"]
    if proxies > 0:
        # Outermost, so that the fast path and every view see the client's address.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    return app
