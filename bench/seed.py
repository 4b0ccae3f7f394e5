"""Seed a fresh database with a population and every event the service would have written for it.

Run as `python -m bench.seed --database-url URL --subjects N`; it prints a JSON summary (with
the tokens of a pipeline and an app key) on its last line.
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from flask_migrate import upgrade

from bench.population import (
    DEFAULT_SEED,
    GRANTED,
    ID_BASE,
    JURISDICTIONS,
    NO_CHOICE,
    PURPOSE,
    STATE_NAMES,
    Population,
)
from service import create_app
from service.domain import events as ev
from service.domain.clock import utcnow
from service.ledger import keys as api_keys
from service.ledger import purposes
from service.ledger.transaction import Actor
from service.reads.consistent import head_seq
from service.runtime.config import normalise_database_url
from service.runtime.extensions import db
from service.runtime.readiness import MIGRATIONS_DIR

SEED_ACTOR = Actor("bench-seed", "admin")
PIPELINE_KEY_NAME = "bench"
APP_KEY_NAME = "bench-app"
DEFAULTS = {"EEA": "denied", "*": "granted"}
UNKNOWN_SUBJECT = "denied"
CHOICE_SOURCE = "settings"
OVERRIDE_REASONS = ("Regulator request", "Minor's account", "Complaint upheld")
OVERRIDE_LIFETIME = timedelta(days=365)
BLOCK = 200_000
# Seeded events are spaced one microsecond apart after the purpose's creation.
EVENT_SPACING_US = 1

SUBJECT_COLUMNS = (
    "user_id", "jurisdiction", "erased", "registered_seq", "updated_seq", "erased_seq",
    "created_at", "updated_at",
)  # fmt: skip
CHOICE_COLUMNS = ("user_id", "purpose", "state", "source", "version", "updated_seq", "updated_at")
OVERRIDE_COLUMNS = (
    "id", "user_id", "purpose", "state", "reason", "ticket", "placed_by", "placed_seq",
    "placed_at", "expires_at", "lifted_seq", "lifted_at", "lifted_by", "lift_reason",
    "expired_seq",
)  # fmt: skip
EVENT_COLUMNS = (
    "seq", "at", "kind", "user_id", "purpose", "before", "after", "actor", "role", "reason",
    "ticket", "request_id", "data",
)  # fmt: skip
STATE_TEXT = pa.array([None, "granted", "denied"], pa.string())


@dataclass(frozen=True)
class SeedSummary:
    """What a seeding run made: sizes, the ledger head, timings and the keys' tokens."""

    subjects: int
    events: int
    overrides: int
    allowed_subjects: int
    head_seq: int
    seconds: float
    pipeline_token: str
    app_token: str


@dataclass(frozen=True)
class EventPlan:
    """Where each subject's events fall in the global sequence and in time."""

    population: Population
    first_seq: int
    start_us: int

    @cached_property
    def registered_seq(self) -> np.ndarray:
        """The seq of each subject's subject_registered event (its first)."""
        per = self.population.events_per_subject
        return self.first_seq + np.cumsum(per) - per

    @property
    def last_seq(self) -> int:
        """The seq of the last seeded event."""
        return self.first_seq + self.population.event_count - 1

    def at_us(self, seq: np.ndarray | int) -> Any:
        """Microseconds since the epoch of the event numbered seq: non-decreasing with seq."""
        return self.start_us + (seq - self.first_seq + 1) * EVENT_SPACING_US

    @property
    def last_at(self) -> datetime:
        """The time of the last seeded event."""
        return datetime.fromtimestamp(0, UTC) + timedelta(
            microseconds=int(self.at_us(self.last_seq))
        )

    @cached_property
    def override_ids(self) -> dict[int, int]:
        """Override id by subject index, numbered 1, 2, ... in seq order."""
        return {int(i): k + 1 for k, i in enumerate(self.population.override_index)}

    def override_expiry(self, k: int) -> datetime | None:
        """The expires_at of the k-th override: a year after seeding, or none."""
        if not self.population.override_expiring[k]:
            return None
        return (
            datetime.fromtimestamp(0, UTC)
            + timedelta(microseconds=self.start_us)
            + OVERRIDE_LIFETIME
        )


def _times(us: np.ndarray, postgres: bool) -> pa.Array:
    """Timestamps as text: SQLAlchemy's SQLite format (naive UTC), or with +00 for PostgreSQL."""
    text = pc.strftime(pa.array(us, pa.timestamp("us", tz="UTC")), format="%Y-%m-%d %H:%M:%S")
    return pc.binary_join_element_wise(text, pa.scalar("+00"), "") if postgres else text


def _ids(indices: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(indices + ID_BASE, pa.int64()), pa.string())


def _constant(value: Any, count: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), count)


def _states(granted: np.ndarray) -> pa.Array:
    return pc.take(STATE_TEXT, pa.array(np.where(granted, 1, 2), pa.int8()))


def subjects_block(plan: EventPlan, lo: int, hi: int, postgres: bool) -> pa.Table:
    """Rows of `subjects` for subject indices [lo, hi)."""
    pop = plan.population
    count = hi - lo
    seq = plan.registered_seq[lo:hi]
    at = _times(plan.at_us(seq), postgres)
    return pa.table(
        [
            _ids(np.arange(lo, hi)),
            pc.take(pa.array(JURISDICTIONS, pa.string()), pa.array(pop.jurisdiction[lo:hi])),
            pa.array(np.zeros(count, dtype=bool)),
            pa.array(seq),
            pa.array(seq),
            pa.nulls(count, pa.int64()),
            at,
            at,
        ],
        names=SUBJECT_COLUMNS,
    )


def choices_block(plan: EventPlan, lo: int, hi: int, postgres: bool) -> pa.Table:
    """Rows of `choices` for the subjects in [lo, hi) that made an explicit choice."""
    pop = plan.population
    index = lo + np.flatnonzero(pop.choice[lo:hi] != NO_CHOICE)
    seq = plan.registered_seq[index] + 1
    count = len(index)
    return pa.table(
        [
            _ids(index),
            _constant(PURPOSE, count, pa.string()),
            _states(pop.choice[index] == GRANTED),
            _constant(CHOICE_SOURCE, count, pa.string()),
            _constant(1, count, pa.int32()),
            pa.array(seq),
            _times(plan.at_us(seq), postgres),
        ],
        names=CHOICE_COLUMNS,
    )


def _override_seq(plan: EventPlan) -> np.ndarray:
    pop = plan.population
    index = pop.override_index
    seq: np.ndarray = plan.registered_seq[index] + 1 + (pop.choice[index] != NO_CHOICE)
    return seq


def overrides_table(plan: EventPlan, postgres: bool) -> pa.Table:
    """Every row of `overrides` (there are few), ids 1, 2, ... in seq order."""
    pop = plan.population
    count = len(pop.override_index)
    seq = _override_seq(plan)
    expiries = [plan.override_expiry(k) for k in range(count)]
    expiry_us = [None if e is None else int(e.timestamp() * 1_000_000) for e in expiries]
    expires_at = pa.array(expiry_us, pa.int64())
    expires_text = pc.if_else(
        pc.is_null(expires_at),
        pa.scalar(None, pa.string()),
        _times(pc.fill_null(expires_at, 0).to_numpy(), postgres),
    )
    return pa.table(
        [
            pa.array(np.arange(1, count + 1), pa.int64()),
            _ids(pop.override_index),
            _constant(PURPOSE, count, pa.string()),
            _states(pop.override_state == GRANTED),
            pa.array([OVERRIDE_REASONS[k % len(OVERRIDE_REASONS)] for k in range(count)]),
            pa.array([f"BENCH-{k + 1}" for k in range(count)]),
            _constant(SEED_ACTOR.name, count, pa.string()),
            pa.array(seq),
            _times(plan.at_us(seq), postgres),
            expires_text,
            pa.nulls(count, pa.int64()),
            pa.nulls(count, pa.string()),
            pa.nulls(count, pa.string()),
            pa.nulls(count, pa.string()),
            pa.nulls(count, pa.int64()),
        ],
        names=OVERRIDE_COLUMNS,
    )


def _event_table(
    plan: EventPlan,
    seq: np.ndarray,
    index: np.ndarray,
    kind: str,
    before: pa.Array,
    after: pa.Array,
    data: pa.Array,
    postgres: bool,
    reason: pa.Array | None = None,
    ticket: pa.Array | None = None,
) -> pa.Table:
    count = len(seq)
    return pa.table(
        [
            pa.array(seq, pa.int64()),
            _times(plan.at_us(seq), postgres),
            _constant(kind, count, pa.string()),
            _ids(index),
            _constant(PURPOSE, count, pa.string()),
            before,
            after,
            _constant(SEED_ACTOR.name, count, pa.string()),
            _constant(SEED_ACTOR.role, count, pa.string()),
            reason if reason is not None else pa.nulls(count, pa.string()),
            ticket if ticket is not None else pa.nulls(count, pa.string()),
            pa.nulls(count, pa.string()),
            data,
        ],
        names=EVENT_COLUMNS,
    )


# Payloads come from the event types themselves, so seeded rows are exactly what the service
# writes (one JSON text per jurisdiction or choice, taken per row by Arrow).
REGISTERED_DATA = pa.array(
    [
        json.dumps(ev.SubjectRegistered(user_id="-", jurisdiction=j).to_data())
        for j in JURISDICTIONS
    ],
    pa.string(),
)
CHOICE_DATA = pa.array(
    [
        json.dumps(
            ev.ChoiceSet(
                user_id="-",
                purpose=PURPOSE,
                state=str(STATE_NAMES.get(c)),
                previous=None,
                source=CHOICE_SOURCE,
                version=1,
            ).to_data()
        )
        if c in STATE_NAMES
        else "null"
        for c in range(3)
    ],
    pa.string(),
)


def events_block(plan: EventPlan, lo: int, hi: int, postgres: bool) -> pa.Table:
    """Rows of `events` for subjects [lo, hi), in seq order, exactly as the service writes them.

    Registration: unknown_subject -> the jurisdiction's default. A choice: default -> choice.
    An override: choice (or default) -> override. One purpose exists, so one event each.
    """
    pop = plan.population
    index = np.arange(lo, hi)
    seq = plan.registered_seq[lo:hi]
    parts = [
        _event_table(
            plan,
            seq,
            index,
            ev.Kind.SUBJECT_REGISTERED.value,
            _constant(UNKNOWN_SUBJECT, hi - lo, pa.string()),
            _states(pop.default_granted[lo:hi]),
            pc.take(REGISTERED_DATA, pa.array(pop.jurisdiction[lo:hi])),
            postgres,
        )
    ]
    chose = lo + np.flatnonzero(pop.choice[lo:hi] != NO_CHOICE)
    parts.append(
        _event_table(
            plan,
            plan.registered_seq[chose] + 1,
            chose,
            ev.Kind.CHOICE_SET.value,
            _states(pop.default_granted[chose]),
            _states(pop.choice[chose] == GRANTED),
            pc.take(CHOICE_DATA, pa.array(pop.choice[chose])),
            postgres,
        )
    )
    in_block = np.flatnonzero((pop.override_index >= lo) & (pop.override_index < hi))
    if len(in_block):
        table = overrides_table(plan, postgres)
        index = pop.override_index[in_block]
        data = [
            json.dumps(
                ev.OverridePlaced(
                    user_id="-",
                    purpose=PURPOSE,
                    override_id=int(k) + 1,
                    state=STATE_NAMES[int(pop.override_state[k])],
                    expires_at=plan.override_expiry(int(k)),
                ).to_data()
            )
            for k in in_block
        ]
        parts.append(
            _event_table(
                plan,
                _override_seq(plan)[in_block],
                index,
                ev.Kind.OVERRIDE_PLACED.value,
                _states(pop.before_override_granted[index]),
                _states(pop.override_state[in_block] == GRANTED),
                pa.array(data, pa.string()),
                postgres,
                reason=table.column("reason").take(pa.array(in_block)).combine_chunks(),
                ticket=table.column("ticket").take(pa.array(in_block)).combine_chunks(),
            )
        )
    events = pa.concat_tables(parts)
    return events.take(pc.sort_indices(events, [("seq", "ascending")]))


def blocks(size: int) -> Iterator[tuple[int, int]]:
    """Subject index ranges of at most BLOCK subjects."""
    for lo in range(0, size, BLOCK):
        yield lo, min(size, lo + BLOCK)


def _csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue()


def _bulk_tables(plan: EventPlan, postgres: bool) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """(table, columns, iterator of Arrow blocks) in foreign-key order."""
    size = plan.population.size
    yield (
        "subjects",
        SUBJECT_COLUMNS,
        (subjects_block(plan, lo, hi, postgres) for lo, hi in blocks(size)),
    )
    yield (
        "choices",
        CHOICE_COLUMNS,
        (choices_block(plan, lo, hi, postgres) for lo, hi in blocks(size)),
    )
    yield "overrides", OVERRIDE_COLUMNS, iter([overrides_table(plan, postgres)])
    yield "events", EVENT_COLUMNS, (events_block(plan, lo, hi, postgres) for lo, hi in blocks(size))


def copy_into_postgres(url: str, plan: EventPlan) -> None:
    """Bulk-load with COPY in one transaction, move the head, then VACUUM ANALYZE."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            for table, columns, parts in _bulk_tables(plan, postgres=True):
                with cur.copy(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
                ) as copy:
                    for part in parts:
                        copy.write(_csv(part))
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('overrides', 'id'), "
                "(SELECT coalesce(max(id), 0) + 1 FROM overrides), false)"
            )
            cur.execute(
                "UPDATE ledger_head SET seq = %s, at = %s WHERE id = 1",
                (plan.last_seq, plan.last_at),
            )
        conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in ("subjects", "choices", "overrides", "events"):
            conn.execute(f"VACUUM (ANALYZE) {table}")


def insert_into_sqlite(url: str, plan: EventPlan) -> None:
    """Bulk-load with executemany in one transaction, move the head, then ANALYZE."""
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        for table, columns, parts in _bulk_tables(plan, postgres=False):
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            for part in parts:
                values = [part.column(i).to_pylist() for i in range(part.num_columns)]
                conn.executemany(sql, zip(*values, strict=True))
        last_at = plan.last_at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute(
            "UPDATE ledger_head SET seq = ?, at = ? WHERE id = 1", (plan.last_seq, last_at)
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def seed(database_url: str, subjects: int, random_seed: int = DEFAULT_SEED) -> SeedSummary:
    """Migrate a fresh database; purpose and keys through the service, the rest in bulk."""
    started = time.monotonic()
    url = normalise_database_url(database_url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "CONSENT_EXPIRY_SWEEP_SECONDS": 0})
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR))
        purposes.create(
            SEED_ACTOR,
            PURPOSE,
            "Model training",
            "May this user's content be used to train our own AI models?",
            DEFAULTS,
            UNKNOWN_SUBJECT,
        )
        head, head_at = head_seq()
        db.session.rollback()
        db.engine.dispose()
    assert head_at is not None
    population = Population.generate(subjects, random_seed)
    start_us = int(head_at.timestamp() * 1_000_000)
    plan = EventPlan(population, head + 1, start_us)
    if url.startswith("postgresql"):
        copy_into_postgres(url, plan)
    else:
        insert_into_sqlite(url, plan)
    # Later writes (the keys below, the benchmark's own) must come after the seeded events in time.
    deadline = time.monotonic() + 60
    while utcnow() <= plan.last_at and time.monotonic() < deadline:
        time.sleep(0.01)
    with app.app_context():
        _, pipeline_token = api_keys.create_key(PIPELINE_KEY_NAME, "pipeline", SEED_ACTOR)
        _, app_token = api_keys.create_key(APP_KEY_NAME, "app", SEED_ACTOR)
        final_head, _ = head_seq()
        db.session.rollback()
        db.engine.dispose()
    return SeedSummary(
        subjects=subjects,
        events=population.event_count,
        overrides=len(population.override_index),
        allowed_subjects=int(population.allowed.sum()),
        head_seq=final_head,
        seconds=round(time.monotonic() - started, 2),
        pipeline_token=pipeline_token,
        app_token=app_token,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, seed, print the JSON summary as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", required=True, help="a fresh (empty) database")
    parser.add_argument("--subjects", type=int, required=True)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    summary = seed(args.database_url, args.subjects, args.seed)
    sys.stdout.write(json.dumps(asdict(summary)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
