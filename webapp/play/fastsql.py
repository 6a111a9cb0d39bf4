"""Run the game's hot-path statements straight on the request's DB-API connection.

Each statement is an ordinary SQLAlchemy Core statement, compiled once per dialect,
so the SQL and every dialect's quirks (parameter style, casts, booleans, how SQLite
stores a DateTime) stay SQLAlchemy's. Executing the compiled string on the DB-API
cursor then skips the Session, Connection and Result layers, which cost more per
statement than SQLite itself takes to run it (see docs/benchmarks.md).

A request uses one pooled DB-API connection (`connection()`) and is done with it at
teardown, where whatever it left uncommitted is rolled back: on SQLite the thread
keeps the connection for its next request; otherwise it goes back to the pool.
Driver errors are re-raised as SQLAlchemy's exception classes (IntegrityError,
OperationalError...), so the handlers written for the ORM path keep working, and a
connection found dead is invalidated.
"""

from __future__ import annotations

import contextlib
import operator
import threading

import sqlalchemy as sa
from flask import Flask, g

from webapp.extensions import db


class Prepared:
    """A Core statement compiled once per dialect, run on a DB-API connection."""

    __slots__ = ("statement", "_compiled")

    def __init__(self, statement):
        self.statement = statement
        self._compiled: dict[str, tuple] = {}

    def _compile(self, dialect) -> tuple:
        compiled = self.statement.compile(dialect=dialect)
        fixed, processors = {}, {}
        for bind, name in compiled.bind_names.items():
            if not bind.required:
                fixed[name] = bind.effective_value
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        if not compiled.positional:
            arguments = None
        elif len(compiled.positiontup) == 1:
            name = compiled.positiontup[0]
            arguments = lambda values: (values[name],)  # noqa: E731
        else:
            arguments = operator.itemgetter(*compiled.positiontup) if compiled.positiontup \
                else (lambda values: ())
        entry = self._compiled[dialect.name] = (compiled.string, fixed,
                                                tuple(processors.items()), arguments)
        return entry

    def execute(self, conn, params: dict | None = None):
        """Execute on a pooled DB-API connection; return the DB-API cursor."""
        dialect = db.engine.dialect
        sql, fixed, processors, arguments = (self._compiled.get(dialect.name)
                                             or self._compile(dialect))
        values = {**fixed, **params} if params else dict(fixed)
        for name, process in processors:
            values[name] = process(values[name])
        args = arguments(values) if arguments is not None else values
        cursor = conn.cursor()
        try:
            cursor.execute(sql, args)
        except dialect.loaded_dbapi.Error as exc:
            _drop_if_disconnected(conn, dialect, exc, cursor)
            raise sa.exc.DBAPIError.instance(sql, args, exc, dialect.loaded_dbapi.Error,
                                             dialect=dialect) from exc
        return cursor


def _drop_if_disconnected(conn, dialect, exc, cursor=None) -> None:
    """A dead connection (a database server restart) is invalidated, never pooled again."""
    try:
        if dialect.is_disconnect(exc, conn.dbapi_connection, cursor):
            conn.invalidate(exc)
    except Exception:  # noqa: BLE001 - the original error is what the caller reports
        pass


class _Held:
    """A SQLite connection a thread keeps between requests (returned when it ends)."""

    __slots__ = ("engine", "conn")

    def __init__(self, engine):
        self.engine, self.conn = engine, engine.raw_connection()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def __del__(self):
        self.close()


_held = threading.local()


def connection():
    """Return this request's pooled DB-API connection, checking one out if needed.

    On SQLite each thread (a sync gunicorn worker has one) keeps its connection from
    one request to the next: checking one out of the pool and back costs more than
    some of the statements. A file database never drops a connection. A database
    server can (a restart), so there every request checks out, with the pool's ping.
    """
    conn = g.get("_dope_dbapi")
    if conn is None:
        engine = db.engine
        if engine.dialect.name != "sqlite":
            conn = engine.raw_connection()
        else:
            held = getattr(_held, "slot", None)
            if held is None or held.engine is not engine or not held.conn.is_valid:
                if held is not None:
                    held.close()
                held = _held.slot = _Held(engine)
            conn = held.conn
        g._dope_dbapi = conn
    return conn


def commit() -> None:
    _finish("commit")


def rollback() -> None:
    """Roll back the request's transaction; a connection that cannot is dropped quietly
    (rollback runs on error paths, which must answer, not fail again)."""
    try:
        _finish("rollback")
    except sa.exc.DBAPIError:
        release()


def _finish(action: str) -> None:
    conn = g.get("_dope_dbapi")
    if conn is None:
        return
    dialect = db.engine.dialect
    try:
        getattr(conn, action)()
    except dialect.loaded_dbapi.Error as exc:
        _drop_if_disconnected(conn, dialect, exc)
        raise sa.exc.DBAPIError.instance(action.upper(), (), exc, dialect.loaded_dbapi.Error,
                                         dialect=dialect) from exc


def release(exc=None) -> None:
    """End the request's use of its connection: roll back what is still open and keep
    it (SQLite, see connection()) or give it back to the pool."""
    conn = g.pop("_dope_dbapi", None)
    held = getattr(_held, "slot", None)
    if conn is not None and held is not None and held.conn is conn:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - a connection that cannot roll back is dropped
            _held.slot = None
            with contextlib.suppress(Exception):
                conn.invalidate()
    elif conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection is simply not pooled
            with contextlib.suppress(Exception):
                conn.invalidate()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(release)
