"""Tables of the ledger: current state, the append-only event log, keys and idempotency records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

from service.domain.runs import REMEDIATION_ACTIONS
from service.runtime.extensions import Base

STATES = ("granted", "denied")
ROLES = ("app", "pipeline", "support", "admin")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, on SQLite too."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; naive values are refused because their zone is a guess."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the backend handed back."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table(model: type[Base]) -> sa.Table:
    """A model's table, for Core statements that write many rows at once."""
    return cast(sa.Table, model.__table__)


def _state_check(column: str, nullable: bool = False) -> sa.CheckConstraint:
    cond = f"{column} IN ('granted', 'denied')"
    if nullable:
        cond = f"{column} IS NULL OR {cond}"
    return sa.CheckConstraint(cond, name=column)


class LedgerHead(Base):
    """The single row holding the last seq handed out; locking it serialises writers."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Event(Base):
    """One append-only entry of the ledger, numbered by the global seq."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_user_id_seq", "user_id", "seq"),
        sa.Index("ix_events_purpose_seq", "purpose", "seq"),
        sa.Index("ix_events_at", "at"),
        _state_check("before", nullable=True),
        _state_check("after", nullable=True),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    user_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    purpose: Mapped[str | None] = mapped_column(sa.String(48), nullable=True)
    before: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    after: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    actor: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    role: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    ticket: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)


class Purpose(Base):
    """What consent is for, with its default policy."""

    __tablename__ = "purposes"
    __table_args__ = (_state_check("unknown_subject"),)

    key: Mapped[str] = mapped_column(sa.String(48), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    description: Mapped[str] = mapped_column(sa.Text, nullable=False, default="")
    defaults: Mapped[dict[str, str]] = mapped_column(sa.JSON, nullable=False)
    unknown_subject: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    # selector -> consent | legitimate_interest | not_offered; empty: consent everywhere.
    legal_bases: Mapped[dict[str, str]] = mapped_column(
        sa.JSON, nullable=False, default=dict, server_default="{}"
    )
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    created_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    updated_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Global Privacy Control: a Sec-GPC: 1 request records `denied` (source gpc) for a user
    # without a choice of their own.
    honours_gpc: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, default=False, server_default=sa.false()
    )


class Subject(Base):
    """A user known to the ledger."""

    __tablename__ = "subjects"

    user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    jurisdiction: Mapped[str | None] = mapped_column(sa.String(2), nullable=True)
    erased: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    registered_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    updated_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    erased_seq: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Choice(Base):
    """A user's own explicit state for one purpose."""

    __tablename__ = "choices"
    __table_args__ = (_state_check("state"), sa.Index("ix_choices_purpose", "purpose"))

    user_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("subjects.user_id"), primary_key=True
    )
    purpose: Mapped[str] = mapped_column(
        sa.String(48), sa.ForeignKey("purposes.key"), primary_key=True
    )
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    updated_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The version of the purpose's notice the user was shown when they chose, if said.
    notice_version: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)


class Restriction(Base):
    """An order denying purposes for the subjects of some jurisdictions, optionally only for
    content inside a time window; the row stays when it is lifted."""

    __tablename__ = "restrictions"
    __table_args__ = (
        sa.CheckConstraint(
            "time_basis IS NULL OR time_basis IN ('processed', 'created')", name="time_basis"
        ),
        sa.CheckConstraint(
            "(window_from IS NULL) = (window_to IS NULL) AND "
            "(window_from IS NULL) = (time_basis IS NULL)",
            name="window_complete",
        ),
        sa.Index("ix_restrictions_placed_seq", "placed_seq"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    authority: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    instrument: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    purposes: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False)
    jurisdictions: Mapped[list[str]] = mapped_column(sa.JSON, nullable=False)
    window_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    window_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    time_basis: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    ticket: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    placed_by: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    placed_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    lifted_seq: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    lift_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class Notice(Base):
    """One published version of a purpose's notice (what users are shown); never changed."""

    __tablename__ = "notices"

    purpose: Mapped[str] = mapped_column(
        sa.String(48), sa.ForeignKey("purposes.key"), primary_key=True
    )
    version: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    text: Mapped[str] = mapped_column(sa.Text, nullable=False)
    url: Mapped[str | None] = mapped_column(sa.String(2000), nullable=True)
    published_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    published_by: Mapped[str] = mapped_column(sa.String(100), nullable=False)


class Override(Base):
    """Support's decision for one user and purpose; the row stays after it is lifted."""

    __tablename__ = "overrides"
    __table_args__ = (
        _state_check("state"),
        sa.Index("ix_overrides_user_id_purpose", "user_id", "purpose"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("subjects.user_id"), nullable=False
    )
    purpose: Mapped[str] = mapped_column(
        sa.String(48), sa.ForeignKey("purposes.key"), nullable=False
    )
    state: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    ticket: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    placed_by: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    placed_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lifted_seq: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lifted_by: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    lift_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    expired_seq: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)


class ApiKey(Base):
    """A bearer key: only the SHA-256 of the token is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (
        sa.CheckConstraint("role IN ('app', 'pipeline', 'support', 'admin')", name="role"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), nullable=False, unique=True)
    role: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdempotencyRecord(Base):
    """The first answer to a write sent with an Idempotency-Key, replayed on retries."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        sa.UniqueConstraint("key_name", "idempotency_key"),
        # Pruning deletes the oldest records past the TTL, batch by batch.
        sa.Index("ix_idempotency_records_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    key_name: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    method: Mapped[str] = mapped_column(sa.String(8), nullable=False)
    path: Mapped[str] = mapped_column(sa.String(512), nullable=False)
    request_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    headers: Mapped[dict[str, str]] = mapped_column(sa.JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Run(Base):
    """A training run and the ledger answer (purpose, as_of) it used; never changed once written."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.Index("ix_runs_purpose_registered_seq", "purpose", "registered_seq"),
        sa.Index("ix_runs_registered_seq", "registered_seq"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), nullable=False, unique=True)
    purpose: Mapped[str] = mapped_column(
        sa.String(48), sa.ForeignKey("purposes.key"), nullable=False
    )
    as_of: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    dataset_uri: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    dataset_sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    dataset_rows_in: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    dataset_rows_kept: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    registered_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    registered_by: Mapped[str] = mapped_column(sa.String(100), nullable=False)


class RunMembers(Base):
    """The distinct user IDs a run used, encoded compactly (service/domain/members.py), with
    each one's decision code as of the run's as_of; written once, never changed."""

    __tablename__ = "run_members"

    run_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("runs.id"), primary_key=True, autoincrement=False
    )
    members: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    not_allowed: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    numbers: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    strings: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    codes: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    recorded_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    recorded_by: Mapped[str] = mapped_column(sa.String(100), nullable=False)


class RunRemediation(Base):
    """Support's declaration that a run's affected members up to through_seq are handled."""

    __tablename__ = "run_remediations"
    __table_args__ = (
        sa.CheckConstraint(
            "action IN (" + ", ".join(f"'{a}'" for a in REMEDIATION_ACTIONS) + ")", name="action"
        ),
        sa.Index("ix_run_remediations_run_id_recorded_seq", "run_id", "recorded_seq"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("runs.id"), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    through_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    ticket: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    recorded_seq: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    recorded_by: Mapped[str] = mapped_column(sa.String(100), nullable=False)


class SigningKey(Base):
    """An Ed25519 key the ledger signs records and snapshot digests with.

    The newest unretired key signs; every key not yet expired stays published for checking.
    The private key is kept only while the key may still sign.
    """

    __tablename__ = "signing_keys"
    __table_args__ = (sa.Index("ix_signing_keys_created_at", "created_at"),)

    kid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(sa.JSON, nullable=False)
    private_key: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UsedToken(Base):
    """A user token's `jti` already exchanged on /me: refused if seen again before it expires."""

    __tablename__ = "used_tokens"
    __table_args__ = (sa.Index("ix_used_tokens_expires_at", "expires_at"),)

    jti: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
