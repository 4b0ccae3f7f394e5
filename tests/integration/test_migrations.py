"""Alembic migrations build the models' schema, undo cleanly, and guard the event log."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade

from service.domain import events as ev
from service.ledger import notices, purposes
from service.ledger.transaction import Actor, LedgerWrite
from service.runtime.extensions import db
from service.runtime.readiness import MIGRATIONS_DIR

LEDGER_TABLES = {
    "api_keys",
    "choices",
    "events",
    "idempotency_records",
    "ledger_head",
    "notices",
    "overrides",
    "purposes",
    "restrictions",
    "signing_keys",
    "used_tokens",
    "subjects",
    "runs",
    "run_members",
    "run_remediations",
}


def schema_diff() -> list[Any]:
    """What autogenerate would change to make the live database match the models."""
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        return list(compare_metadata(ctx, db.metadata))


def table_names() -> set[str]:
    """Tables present in the live database, read afresh."""
    with db.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_models_and_migrations_agree(app: Flask) -> None:
    with app.app_context():
        assert schema_diff() == []


def test_downgrade_to_base_and_upgrade_to_head_both_work(app: Flask) -> None:
    with app.app_context():
        try:
            downgrade(directory=str(MIGRATIONS_DIR), revision="base")
            assert table_names() == {"alembic_version"}
        finally:
            # Other tests share this database on PostgreSQL: always leave it at head.
            upgrade(directory=str(MIGRATIONS_DIR), revision="head")

        assert table_names() == LEDGER_TABLES | {"alembic_version"}
        with db.engine.connect() as conn:
            head = conn.execute(sa.text("SELECT id, seq FROM ledger_head")).all()
        assert [tuple(row) for row in head] == [(1, 0)]
        assert schema_diff() == []


def test_events_are_append_only_in_the_database(app: Flask) -> None:
    with app.app_context():
        with LedgerWrite(Actor("tester", "admin")) as write:
            write.append(ev.KeyCreated(name="tester", role="admin"), reason="original")
            seq = write.head

        for statement in (
            "UPDATE events SET reason = 'rewritten' WHERE seq = :seq",
            "DELETE FROM events WHERE seq = :seq",
        ):
            with (
                pytest.raises(sa.exc.DBAPIError, match="append-only"),
                db.engine.begin() as conn,
            ):
                conn.execute(sa.text(statement), {"seq": seq})

        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT seq, kind, reason FROM events WHERE seq = :seq"), {"seq": seq}
            ).all()
        assert [tuple(row) for row in rows] == [(seq, "key_created", "original")]


def test_published_notices_are_append_only_in_the_database(app: Flask) -> None:
    with app.app_context():
        purposes.create(Actor("tester", "admin"), "model_training", "Training", "", {"*": "denied"})
        notices.publish(Actor("tester", "admin"), "model_training", "1", "What users see.")
        for statement in (
            "UPDATE notices SET text = 'rewritten' WHERE version = '1'",
            "DELETE FROM notices WHERE version = '1'",
        ):
            with (
                pytest.raises(sa.exc.DBAPIError, match="append-only"),
                db.engine.begin() as conn,
            ):
                conn.execute(sa.text(statement))
        assert notices.list_for("model_training")[0]["text"] == "What users see."
