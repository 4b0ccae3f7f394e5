"""Engine set-up per backend: SQLite pragmas and write locking, PostgreSQL timeouts."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import Engine, event

from service.runtime.extensions import db

WRITE_OPTION = "consent_write"


def engine_options(url: str, timeout_seconds: float) -> dict[str, Any]:
    """Engine options for a URL: bounded waits, so an outage becomes a 503 rather than a hang."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        millis = int(timeout_seconds * 1000)
        options["connect_args"] = {
            "connect_timeout": max(1, int(timeout_seconds)),
            "options": f"-c statement_timeout={millis * 2} -c lock_timeout={millis}",
            "application_name": "consent-ledger",
        }
    return options


def _configure_sqlite(engine: Engine, timeout_seconds: float) -> None:
    busy_ms = int(timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so we can emit BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # Writers take the write lock up front (waiting on busy_timeout); a deferred transaction
        # that reads first and writes later could fail with SQLITE_BUSY instead of waiting.
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def init_app(app: Flask) -> None:
    """Install per-backend engine hooks on the app's engine."""
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, app.config["CONSENT_DB_TIMEOUT_SECONDS"])
