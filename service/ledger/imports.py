"""Importing a batch of subjects and their choices: one transaction under the head lock, written
with COPY on PostgreSQL and executemany on SQLite, its events beside its rows.

A batch takes the head lock once, skips the subjects the ledger already has (registered through
the API, or by an earlier run of the same import), numbers the rest's events from the head,
writes subjects, choices and events, moves the head and commits: all of it or nothing.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from service.domain import imports
from service.domain.clock import utcnow
from service.ledger.import_progress import Progress, Totals
from service.ledger.import_source import Digest, Source
from service.ledger.transaction import HEAD_ID, lock_head
from service.reads import restrictions
from service.reads.consistent import read_transaction
from service.reads.state import policies
from service.runtime.extensions import db
from service.runtime.models import LedgerHead

ROLE = "admin"
DEFAULT_BATCH_SIZE = 100_000
# The PostgreSQL advisory lock every running import holds (shared) from start to end: the
# servers' read indexes wait for the bulk to have landed before rebuilding (see readindex).
IMPORT_LOCK = int.from_bytes(b"import", "big")
_CSV = pa_csv.WriteOptions(include_header=False)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What a run of the import did (this run only), how long it took, and the ledger head."""

    totals: Totals
    resumed_after: int  # rows an earlier run had committed
    seconds: float
    head: int | None

    @property
    def rate(self) -> float:
        """Rows per second over this run."""
        return self.totals.rows / self.seconds if self.seconds > 0 else 0.0


def import_file(
    source: Source,
    progress_path: Path,
    actor: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[BatchOutcome], object] | None = None,
) -> ImportSummary:
    """Import the rows after those a progress file says are committed, batch by batch.

    Each batch commits or leaves nothing; the progress file is written after each commit. A
    malformed row raises RowError naming it, with the batches before its own committed. A
    batch committed but not yet recorded (the process was killed in between) is done again on
    the rerun, and its subjects, now known to the ledger, are skipped.
    """
    started = time.monotonic()
    with read_transaction(consistent=False):
        columns = imports.Columns.of(source.names, list(policies()))
    with announced() as maintenance, ThreadPoolExecutor(1) as hashing:
        # The digest reads the whole input: it is made beside the first batch when there is
        # no progress to check it against yet.
        digest = hashing.submit(Digest.of, source.path)
        progress = None
        if progress_path.exists():
            progress = Progress.load(progress_path, source.path, digest.result())
        start = progress.rows_committed if progress is not None else 0
        run = Totals()
        analysed = 0
        for first_row, table in source.batches(start, batch_size):
            rows = imports.check_rows(table, first_row, columns)
            outcome = write_batch(rows, actor)
            if progress is None:
                progress = Progress.load(progress_path, source.path, digest.result())
            _count(run, outcome)
            _count(progress.totals, outcome)
            progress.rows_committed += outcome.rows
            progress.head = outcome.head
            progress.save(progress_path)
            if run.imported >= 2 * analysed + batch_size:
                maintenance.analyse()
                analysed = run.imported
            if on_batch is not None:
                on_batch(outcome)
        if progress is None:
            progress = Progress.load(progress_path, source.path, digest.result())
        progress.complete = True
        progress.save(progress_path)
        # The servers may rebuild from here on; the last statistics are made beside that.
        maintenance.finished()
        if run.imported > analysed:
            maintenance.analyse()
    return ImportSummary(run, start, time.monotonic() - started, progress.head)


class Maintenance:
    """The import's own connection beside its batches: it tells the servers an import is
    writing (PostgreSQL: a shared advisory lock, released however the process ends; SQLite has
    nothing to tell it with), and refreshes the planner's statistics as the tables grow."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.announced = False

    def announce(self) -> None:
        """Tell the servers an import is writing (PostgreSQL only)."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(sa.text("SELECT pg_advisory_lock_shared(:key)"), {"key": IMPORT_LOCK})
            self.conn.commit()
            self.announced = True

    def finished(self) -> None:
        """Tell the servers this import writes no more (once; the server also forgets it when
        the connection ends)."""
        if self.announced:
            self.conn.execute(
                sa.text("SELECT pg_advisory_unlock_shared(:key)"), {"key": IMPORT_LOCK}
            )
            self.conn.commit()
            self.announced = False

    def analyse(self) -> None:
        """Statistics of the tables an import grows: without them, after a bulk load the
        planner takes the ledger for as small as it was and may scan millions of rows where
        an index probe would do (a head read answered by the database took over 10 s)."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(sa.text("ANALYZE subjects, choices, events"))
        else:
            # A sample per index is enough to choose between them, and keeps it quick.
            self.conn.exec_driver_sql("PRAGMA analysis_limit = 1000")
            for table in ("subjects", "choices", "events"):
                self.conn.exec_driver_sql(f"ANALYZE {table}")
        self.conn.commit()


@contextmanager
def announced() -> Iterator[Maintenance]:
    """While the block runs, tell the servers an import is writing; the block gets the
    import's maintenance connection."""
    with db.engine.connect() as conn:
        maintenance = Maintenance(conn)
        maintenance.announce()
        try:
            yield maintenance
        finally:
            maintenance.finished()


def import_running() -> bool:
    """Whether some `consent import` is writing to this database now (always False on SQLite,
    which cannot tell)."""
    if db.engine.dialect.name != "postgresql":
        return False
    with read_transaction(consistent=False):
        return bool(
            db.session.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND "
                    "granted AND database = (SELECT oid FROM pg_database WHERE datname = "
                    "current_database()) AND classid = CAST(:hi AS oid) AND "
                    "objid = CAST(:lo AS oid) AND objsubid = 1)"
                ),
                {"hi": IMPORT_LOCK >> 32, "lo": IMPORT_LOCK & 0xFFFFFFFF},
            ).scalar_one()
        )


def _count(totals: Totals, outcome: BatchOutcome) -> None:
    totals.rows += outcome.rows
    totals.imported += outcome.imported
    totals.skipped += outcome.skipped
    totals.choices += outcome.choices
    totals.events += outcome.events


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one committed batch did."""

    rows: int
    imported: int  # subjects registered
    skipped: int  # rows whose subject the ledger had (or an earlier row of the batch named)
    choices: int
    events: int
    head: int


def write_batch(rows: imports.Rows, actor: str) -> BatchOutcome:
    """Register the batch's new subjects with their choices, and every event of them, in one
    transaction; on any failure nothing of the batch is written.

    The rows are written as if every subject were new, the common case of a day-one import,
    where looking each ID up first would cost a probe per row for nothing: the subjects'
    primary key checks it anyway. Only when it finds one the ledger has (a rerun, users the
    API registered) is the batch taken back to a savepoint, its known IDs looked up and the
    rest written.
    """
    session = db.session
    try:
        locked = lock_head()
        now = utcnow()
        # Event times never go backwards, so "as of time T" maps to one seq.
        at = max(now, locked.at) if locked.at is not None else now
        backend = _Postgres() if session.get_bind().dialect.name == "postgresql" else _SQLite()
        backend.prepare()
        fresh = rows.take(rows.first_occurrences())
        facts = imports.LedgerFacts(int(locked.seq), at, policies(), restrictions.facts())
        plan = imports.plan(fresh, facts, (actor, ROLE), backend.time_text(at))
        dbapi = _dbapi()
        dbapi.execute("SAVEPOINT import_batch")
        try:
            backend.write(plan)
        except Exception as exc:
            if not backend.known_subject(exc):
                raise
            dbapi.execute("ROLLBACK TO SAVEPOINT import_batch")
            known = backend.existing(fresh.user_ids)
            fresh = fresh.take(~pc.is_in(fresh.user_ids, value_set=known).to_numpy(False))
            plan = imports.plan(fresh, facts, (actor, ROLE), backend.time_text(at))
            backend.write(plan)
        if plan.events.num_rows:
            session.execute(
                sa.update(LedgerHead).where(LedgerHead.id == HEAD_ID).values(seq=plan.head, at=at)
            )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return BatchOutcome(
        rows=len(rows),
        imported=len(fresh),
        skipped=len(rows) - len(fresh),
        choices=plan.choices.num_rows,
        events=plan.events.num_rows,
        head=plan.head,
    )


def _dbapi() -> Any:
    """The driver's connection under the session's, in the session's transaction."""
    return db.session.connection().connection.dbapi_connection


class _Postgres:
    """COPY the rows in as CSV that Arrow writes in C++: no Python object per row."""

    def prepare(self) -> None:
        # A batch of a million rows may take longer than a request's statement limit.
        db.session.execute(sa.text("SET LOCAL statement_timeout = 0"))

    @staticmethod
    def time_text(at: datetime) -> str:
        return at.astimezone(UTC).isoformat(sep=" ")

    @staticmethod
    def existing(user_ids: pa.StringArray) -> pa.StringArray:
        """The IDs the ledger already has, in one round trip: the batch's IDs go as one array
        literal (IDs need no escaping inside quotes: their characters are A-Z a-z 0-9 . _ : @ -).
        """
        if not len(user_ids):
            return pa.array([], pa.string())
        # One index probe per ID (LIMIT 1 inside LATERAL keeps the plan a nested loop): with
        # stale statistics after a bulk load, `= ANY(...)` may be planned as a full scan.
        with _dbapi().cursor() as cursor:
            found = cursor.execute(
                "SELECT i.user_id FROM unnest(%s::text[]) AS i(user_id) CROSS JOIN LATERAL "
                "(SELECT 1 FROM subjects s WHERE s.user_id = i.user_id LIMIT 1) AS known",
                (_quoted_list(user_ids, "{}"),),
            ).fetchall()
        return pa.array([r[0] for r in found], pa.string())

    @staticmethod
    def known_subject(exc: Exception) -> bool:
        """Whether a write failed on a subject the ledger has already."""
        return isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.table_name == "subjects"

    @staticmethod
    def write(plan: imports.BatchPlan) -> None:
        with _dbapi().cursor() as cursor:
            for name, table in plan.tables():
                out = io.BytesIO()
                pa_csv.write_csv(table, out, _CSV)
                columns = ", ".join(table.column_names)
                with cursor.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(out.getbuffer())


class _SQLite:
    """executemany over the rows, in the write transaction BEGIN IMMEDIATE opened."""

    def prepare(self) -> None:
        pass

    @staticmethod
    def time_text(at: datetime) -> str:
        # As SQLAlchemy stores a UTCDateTime on SQLite: naive UTC with microseconds.
        return at.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    @staticmethod
    def existing(user_ids: pa.StringArray) -> pa.StringArray:
        """The IDs the ledger already has, in one statement (the IDs as one JSON array; they
        need no escaping)."""
        if not len(user_ids):
            return pa.array([], pa.string())
        cursor = _dbapi().cursor()
        try:
            found = cursor.execute(
                "SELECT user_id FROM subjects WHERE user_id IN (SELECT value FROM json_each(?))",
                (_quoted_list(user_ids, "[]"),),
            ).fetchall()
        finally:
            cursor.close()
        return pa.array([r[0] for r in found], pa.string())

    @staticmethod
    def known_subject(exc: Exception) -> bool:
        """Whether a write failed on a subject the ledger has already."""
        return isinstance(exc, sqlite3.IntegrityError) and "subjects.user_id" in str(exc)

    @staticmethod
    def write(plan: imports.BatchPlan) -> None:
        cursor = _dbapi().cursor()
        try:
            for name, table in plan.tables():
                marks = ", ".join("?" * table.num_columns)
                values = [_python(column) for column in table.columns]
                cursor.executemany(
                    f"INSERT INTO {name} ({', '.join(table.column_names)}) VALUES ({marks})",
                    zip(*values, strict=True),
                )
        finally:
            cursor.close()


def _quoted_list(user_ids: pa.StringArray, brackets: str) -> str:
    """IDs as one list literal, each in double quotes, joined in C++ by Arrow."""
    quoted = pc.binary_join_element_wise('"', user_ids, '"', "")
    joined = pc.binary_join(pa.ListArray.from_arrays([0, len(quoted)], quoted), ",")[0]
    return f"{brackets[0]}{joined.as_py()}{brackets[1]}"


def _python(column: pa.ChunkedArray) -> list[Any]:
    """A column's values as Python objects SQLite stores as the ORM does (booleans as 0/1)."""
    values: list[Any]
    if column.type == pa.bool_():
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int8).tolist()
    else:
        values = column.to_pylist()
    return values
