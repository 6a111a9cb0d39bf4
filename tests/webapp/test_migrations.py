import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from webapp import create_app
from webapp.extensions import db
from webapp.jobs.builds import import_build


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
                               "vote", "rate_bucket", "fit_result", "upload",
                               "upload_match", "upload_vote"}
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


def triggers(app) -> dict[str, str]:
    with db.engine.connect() as connection:
        return dict(connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").all())


def test_vote_trigger_is_the_same_from_models_and_migrations(tmp_path):
    migrated = fresh_app(tmp_path / "a")
    created = fresh_app(tmp_path / "b")
    with migrated.app_context():
        upgrade()
        from_migration = triggers(migrated)
    with created.app_context():
        db.create_all()
        from_models = triggers(created)
    assert set(from_migration) == {"vote_counted"}
    assert from_migration == from_models


def test_vote_trigger_counts_and_spends_and_upgrade_recounts(tmp_path, build_dir):
    app = fresh_app(tmp_path)

    def vote(c, nonce, verdict):
        c.exec_driver_sql("INSERT INTO issued_token (nonce, voter_id, pair_id, issued_at, used) "
                          "VALUES (?, 'w', 1, '2026-01-01', 0)", (nonce,))
        c.exec_driver_sql("INSERT INTO vote (pair_id, variant_id, voter_id, verdict, created_at, "
                          "token_nonce) SELECT 1, variant_id, 'w', ?, '2026-01-01', ? "
                          "FROM pair WHERE id = 1", (verdict, nonce))

    def counts():
        with db.engine.connect() as c:
            return c.exec_driver_sql("SELECT dope_count, nope_count, skip_count FROM variant "
                                     "JOIN pair ON pair.variant_id = variant.id "
                                     "WHERE pair.id = 1").one()

    with app.app_context():
        # Import with today's schema, then go back to before the trigger (the models
        # would not read a 0002 database: they have later columns).
        upgrade()
        import_build(build_dir, app.config["DOPE_IMAGE_DIR"])
        downgrade(revision="0002_drop_redundant_indexes")
        with db.engine.begin() as c:
            c.exec_driver_sql("INSERT INTO voter (id, created_at, window_votes, votes_cast) "
                              "VALUES ('w', '2026-01-01', 0, 0)")
            vote(c, "n1", "dope")
            vote(c, "n2", "nope")
        assert counts() == (0, 0, 0)  # before 0003 nothing counted them
        upgrade()
        assert counts() == (1, 1, 0)  # 0003 recounts
        with db.engine.begin() as c:
            vote(c, "n3", "skip")
        assert counts() == (1, 1, 1)  # the trigger counts a vote however it is stored
        with db.engine.connect() as c:
            assert c.exec_driver_sql("SELECT nonce FROM issued_token WHERE used = 1 "
                                     "ORDER BY nonce").scalars().all() == ["n3"]
        downgrade(revision="0002_drop_redundant_indexes")
        assert triggers(app) == {}
