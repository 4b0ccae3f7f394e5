"""Restrictions, purposes' legal bases and notices, and the notice version a choice was made under.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Restrictions keep their row when lifted (the lift is recorded on it, like an override's).
Notices are append-only: a published version is what users were shown and never changes;
triggers refuse UPDATE and DELETE on both backends.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "restrictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("authority", sa.String(length=200), nullable=False),
        sa.Column("instrument", sa.String(length=200), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("jurisdictions", sa.JSON(), nullable=False),
        sa.Column("window_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("time_basis", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(length=100), nullable=False),
        sa.Column("placed_by", sa.String(length=100), nullable=False),
        sa.Column("placed_seq", sa.BigInteger(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_seq", sa.BigInteger(), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=100), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "time_basis IS NULL OR time_basis IN ('processed', 'created')",
            name=op.f("ck_restrictions_time_basis"),
        ),
        sa.CheckConstraint(
            "(window_from IS NULL) = (window_to IS NULL) AND "
            "(window_from IS NULL) = (time_basis IS NULL)",
            name=op.f("ck_restrictions_window_complete"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restrictions")),
    )
    with op.batch_alter_table("restrictions", schema=None) as batch_op:
        batch_op.create_index("ix_restrictions_placed_seq", ["placed_seq"], unique=False)

    op.create_table(
        "notices",
        sa.Column("purpose", sa.String(length=48), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("published_seq", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["purpose"], ["purposes.key"], name=op.f("fk_notices_purpose_purposes")
        ),
        sa.PrimaryKeyConstraint("purpose", "version", name=op.f("pk_notices")),
    )
    with op.batch_alter_table("purposes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("legal_bases", sa.JSON(), nullable=False, server_default="{}")
        )
    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notice_version", sa.String(length=32), nullable=True))
    _create_append_only_guard("notices")


def downgrade() -> None:
    _drop_append_only_guard("notices")
    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.drop_column("notice_version")
    with op.batch_alter_table("purposes", schema=None) as batch_op:
        batch_op.drop_column("legal_bases")
    op.drop_table("notices")
    with op.batch_alter_table("restrictions", schema=None) as batch_op:
        batch_op.drop_index("ix_restrictions_placed_seq")
    op.drop_table("restrictions")


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
