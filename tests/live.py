"""A real gunicorn server on a free port with its own database, for end-to-end tests over sockets.

The server runs exactly as `make run` runs it (bench.server starts it), on a database of its own:
a SQLite file in a temporary directory, or — when the suite runs on PostgreSQL — a fresh
PostgreSQL database created beside the test database and dropped afterwards, so the per-test
truncation of the shared test database never pulls the ledger out from under its read index.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import make_url

from bench.server import Server, gunicorn
from service import create_app
from service.ledger.keys import create_key
from service.runtime.extensions import db
from tests.conftest import ON_POSTGRES, PG_URL, USER_TOKEN_SECRET, app_config, migrate_to_head
from tests.factories import user_token

ROLES = ("app", "pipeline", "support", "admin")


@dataclass
class LiveServer:
    """A running server: its base URL, one token per role, and an app on the same database."""

    server: Server
    database_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:port."""
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server.port

    def app(self) -> Flask:
        """A Flask app on the server's database, for arranging state or reading it directly."""
        return create_app({**app_config(self.database_url), "CONSENT_INDEX": "off"})

    def make_key(self, role: str, name: str | None = None) -> str:
        """Create a key on the server's database and return its token."""
        app = self.app()
        with app.app_context():
            _, token = create_key(name or f"{role}-{uuid.uuid4().hex[:8]}", role)
            db.engine.dispose()
        return token

    def user_token(self, user_id: str, *, minutes: float = 5) -> str:
        """A user token for user_id that the server accepts (its HS256 secret is the tests')."""
        return user_token(user_id, minutes=minutes)

    def log(self) -> str:
        """Everything the server has logged so far."""
        try:
            return self.server.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def own_database(directory: Path) -> Iterator[str]:
    """A fresh database migrated to head, removed on exit: a SQLite file, or a PostgreSQL one."""
    if not ON_POSTGRES:
        url = f"sqlite:///{directory / 'live.db'}"
        migrate_to_head(url)
        yield url
        return
    base = make_url(PG_URL)
    name = f"{base.database}_live_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        migrate_to_head(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def live_server(
    directory: Path, *, database_port: int | None = None, **environ: str
) -> Iterator[LiveServer]:
    """Start gunicorn on its own fresh database with one key per role; stop and clean up after.

    `environ` adds CONSENT_* settings for the server (e.g. CONSENT_INDEX_POLL_SECONDS="0.05");
    its user tokens are checked with the tests' secret unless `environ` says otherwise.
    `database_port` makes the server reach PostgreSQL through that local port (a TCP proxy the
    test controls); the test itself still reaches the database directly.
    """
    with own_database(directory) as url:
        served = url
        if database_port is not None:
            served = (
                make_url(url)
                .set(host="127.0.0.1", port=database_port)
                .render_as_string(hide_password=False)
            )
        live_tokens: dict[str, str] = {}
        environ = {"CONSENT_USER_TOKEN_SECRET": USER_TOKEN_SECRET, **environ}
        saved = {k: os.environ.get(k) for k in environ}
        os.environ.update(environ)
        try:
            with gunicorn(directory, "live", database_url=served) as server:
                live = LiveServer(server, url, live_tokens)
                for role in ROLES:
                    live.tokens[role] = live.make_key(role, f"live-{role}")
                yield live
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
