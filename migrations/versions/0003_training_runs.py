"""Training runs: the runs, the members each used (encoded, written once), their remediations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

All three tables are append-only like the event log: a run's facts, its members and each
remediation are written once, in the transaction of their event, and never changed; triggers
refuse UPDATE and DELETE on both backends. On PostgreSQL the member blobs are stored out of
line without TOAST compression: they are compressed already, so pglz would only spend CPU.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APPEND_ONLY = ("runs", "run_members", "run_remediations")
BLOBS = ("numbers", "strings", "codes")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=48), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("dataset_uri", sa.Text(), nullable=True),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=True),
        sa.Column("dataset_rows_in", sa.BigInteger(), nullable=True),
        sa.Column("dataset_rows_kept", sa.BigInteger(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.Column("registered_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.key"], name=op.f("fk_runs_purpose_purposes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("name", name=op.f("uq_runs_name")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_runs_purpose_registered_seq", ["purpose", "registered_seq"], unique=False
        )
        batch_op.create_index("ix_runs_registered_seq", ["registered_seq"], unique=False)

    op.create_table(
        "run_members",
        sa.Column("run_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("not_allowed", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("numbers", sa.LargeBinary(), nullable=False),
        sa.Column("strings", sa.LargeBinary(), nullable=False),
        sa.Column("codes", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_members_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_members")),
    )
    op.create_table(
        "run_remediations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(length=100), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.CheckConstraint(
            "action IN ('retrained', 'excluded_from_next', 'unlearned', 'retained')",
            name=op.f("ck_run_remediations_action"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_remediations_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_remediations")),
    )
    with op.batch_alter_table("run_remediations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_run_remediations_run_id_recorded_seq", ["run_id", "recorded_seq"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        for column in BLOBS:
            op.execute(f"ALTER TABLE run_members ALTER COLUMN {column} SET STORAGE EXTERNAL")
    for table in APPEND_ONLY:
        _create_append_only_guard(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        _drop_append_only_guard(table)
    with op.batch_alter_table("run_remediations", schema=None) as batch_op:
        batch_op.drop_index("ix_run_remediations_run_id_recorded_seq")
    op.drop_table("run_remediations")
    op.drop_table("run_members")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_registered_seq")
        batch_op.drop_index("ix_runs_purpose_registered_seq")
    op.drop_table("runs")


def _create_append_only_guard(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{table} are append-only: % refused', TG_OP;
            END;
            $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only: {action} refused'); END"
            )


def _drop_append_only_guard(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
