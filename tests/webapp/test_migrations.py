import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from webapp import create_app
from webapp.extensions import db


def fresh_app(tmp_path):
    return create_app({"TESTING": True, "SECRET_KEY": "t",
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'm.sqlite3'}",
                       "DOPE_IMAGE_DIR": str(tmp_path / "images")})


def tables(app):
    return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(tmp_path):
    app = fresh_app(tmp_path)
    with app.app_context():
        upgrade()
        assert tables(app) == {"build", "variant", "image", "pair", "voter", "issued_token",
                               "vote"}
        downgrade(revision="base")
        assert tables(app) == set()
        upgrade()
        assert "vote" in tables(app)


def test_models_and_migrations_agree(tmp_path):
    app = fresh_app(tmp_path)
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []


def test_sqlite_pragmas(tmp_path):
    app = fresh_app(tmp_path)
    with app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_flask_db_upgrade_command(tmp_path):
    app = fresh_app(tmp_path)
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert "vote" in tables(app)
