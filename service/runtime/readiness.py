"""Readiness: is the database reachable, and is its schema at the newest migration?"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from service.runtime.extensions import db


def _migrations_dir() -> Path:
    """The Alembic scripts: service/migrations/ in an installed wheel (pyproject maps them there),
    else migrations/ at the top of the checkout (an editable install runs from it)."""
    package = Path(__file__).resolve().parents[1]
    shipped = package / "migrations"
    return shipped if shipped.is_dir() else package.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()


@functools.cache
def head_revisions() -> frozenset[str]:
    """The head revision(s) of the migration scripts shipped with this code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def check() -> dict[str, str]:
    """Return a check name -> 'ok' or a short reason; every value 'ok' means ready."""
    checks: dict[str, str] = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
            try:
                current = frozenset(
                    conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
                )
            except sa.exc.DBAPIError:
                current = frozenset()
    except sa.exc.DBAPIError as exc:
        checks["database"] = f"unreachable ({type(exc.orig).__name__})"
        return checks
    expected = head_revisions()
    checks["migrations"] = (
        "ok"
        if current == expected
        else f"at {','.join(sorted(current)) or 'nothing'}, head is {','.join(sorted(expected))}"
    )
    return checks
