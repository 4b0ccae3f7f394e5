"""Building the read index: one consistent read of the state tables, parsed by Arrow in C++.

Both backends hand rows over as CSV text (PostgreSQL with COPY, SQLite with group_concat over
rowid ranges), so no per-row Python objects are made for the millions of subjects and choices.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from service.domain import events as ev
from service.domain.clock import EPOCH
from service.domain.policy import OverrideFacts, Policy
from service.readindex.codes import CodeArray
from service.readindex.directory import IntArray, numeric_mask
from service.readindex.index import JURISDICTIONS, ConsentIndex
from service.reads import restrictions
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import Event, LedgerHead, Override, Purpose

FETCH = 100_000
SQLITE_SPAN = 500_000
# Heap pages per query when reading a PostgreSQL table (8 KiB each: about 300,000 subjects).
PG_PAGE_SPAN = 4096
TID_RANGE_VERSION = 140000
JURISDICTION_VALUES = pa.array(JURISDICTIONS[1:], pa.string())


def build() -> ConsentIndex:
    """Build an index from one consistent read of the state tables at the ledger head."""
    index = ConsentIndex()
    session = db.session
    with read_transaction():
        if session.get_bind().dialect.name == "postgresql":
            # Reading every subject is long by design; only this transaction's limit is lifted.
            session.execute(sa.text("SET LOCAL statement_timeout = 0"))
        head = session.execute(sa.select(LedgerHead.seq, LedgerHead.at)).one()
        index.seq = index.built_seq = int(head.seq)
        index.at = head.at or EPOCH
        _load_subjects(index)
        histories = _policy_histories()
        for p in session.execute(sa.select(Purpose.key, Purpose.created_seq)):
            index.add_purpose_arrays(p.key, p.created_seq, histories[p.key])
        _load_choices(index)
        _load_overrides(index)
        _load_restrictions(index)
        for pi in index.purposes.values():
            index.recompute_all(pi)
    _release_build_memory()
    return index


def _release_build_memory() -> None:
    """Hand the build's freed buffers back to the OS: a worker's resident memory is then the
    index itself, not the high-water mark of reading it."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _table_batches(table: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A table's columns (named by schema) as Arrow record batches, in the session's transaction.

    Both backends hand the rows over as CSV text that Arrow parses in C++, a few megabytes per
    round trip, so no per-row Python objects (or calls) are made: PostgreSQL aggregates the
    rows of a range of heap pages per query (a TID range scan), SQLite those of a rowid range.
    (No value here can hold a comma: IDs, codes and states are validated.)
    """
    dbapi: Any = db.session.connection().connection.dbapi_connection
    if db.session.get_bind().dialect.name == "postgresql":
        if dbapi.info.server_version < TID_RANGE_VERSION:
            yield from _copied_batches(dbapi, table, schema)
            return
        yield from _page_range_batches(dbapi, table, schema)
        return
    row = " || ',' || ".join(f"coalesce({c}, '')" for c in schema.names)
    cursor = dbapi.cursor()
    try:
        top = cursor.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0]
        for lo in range(0, top, SQLITE_SPAN):
            text = cursor.execute(
                f"SELECT group_concat({row}, char(10)) FROM {table} WHERE rowid > ? AND rowid <= ?",
                (lo, lo + SQLITE_SPAN),
            ).fetchone()[0]
            if text:
                yield from _parse_csv(io.BytesIO(text.encode() + b"\n"), schema)
    finally:
        cursor.close()


def _page_range_batches(dbapi: Any, table: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """PostgreSQL's rows as CSV text, one string_agg over PG_PAGE_SPAN heap pages per query.

    (COPY TO STDOUT would hand them over one row per driver call: five times slower.) The
    table's size is read inside the snapshot, so every row it sees lies in those pages; the
    last range is left open all the same.
    """
    row = " || ',' || ".join(f"coalesce({c}::text, '')" for c in schema.names)
    text_of = f"convert_to(string_agg({row}, E'\\n'), 'UTF8')"
    query = f"SELECT {text_of} FROM {table} WHERE ctid >= %s::tid"
    with dbapi.cursor() as cursor:
        pages = cursor.execute(
            "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", (table,)
        ).fetchone()[0]
        for lo in range(0, pages + 1, PG_PAGE_SPAN):
            # Two statements, not one with an optional bound: a generic plan must keep the
            # TID range scan.
            if lo + PG_PAGE_SPAN <= pages:
                found = cursor.execute(
                    query + " AND ctid < %s::tid", (f"({lo},0)", f"({lo + PG_PAGE_SPAN},0)")
                )
            else:
                found = cursor.execute(query, (f"({lo},0)",))
            text = found.fetchone()[0]
            if text:
                yield from _parse_csv(io.BytesIO(bytes(text) + b"\n"), schema)


def _copied_batches(dbapi: Any, table: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """PostgreSQL before 14 (no TID range scans): COPY ... TO STDOUT."""
    columns = ", ".join(schema.names)
    with (
        dbapi.cursor() as cursor,
        cursor.copy(f"COPY (SELECT {columns} FROM {table}) TO STDOUT (FORMAT csv)") as copy,
    ):
        reader = _CopyReader(copy)
        if reader.peek():  # Arrow refuses an empty CSV; an empty table has no batches
            yield from _parse_csv(reader, schema)


def _parse_csv(source: Any, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    yield from pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=1 << 22),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema,
            true_values=["t", "true", "1"],
            false_values=["f", "false", "0"],
            # Only the empty string is null: an ID such as "NULL" or "NaN" is an ID.
            null_values=[""],
            strings_can_be_null=True,
        ),
    )


class _CopyReader:
    """A file-like view of a psycopg COPY ... TO STDOUT, for Arrow's CSV reader."""

    def __init__(self, copy: Any) -> None:
        self.copy, self.pending, self.closed = copy, bytearray(), False

    def peek(self) -> bytes:
        """Whatever the first read would return (at least one block, if there is one)."""
        if not self.pending:
            self.pending += self.copy.read() or b""
        return bytes(self.pending)

    def read(self, size: int = -1) -> bytes:
        # Appending to a bytearray and cutting from its front keeps this linear in the data.
        while size < 0 or len(self.pending) < size:
            block = self.copy.read()
            if not block:
                break
            self.pending += block
        if size < 0 or size > len(self.pending):
            size = len(self.pending)
        out = bytes(self.pending[:size])
        del self.pending[:size]
        return out

    def close(self) -> None:
        self.closed = True


def _jurisdiction_codes(column: pa.Array) -> CodeArray:
    found = pc.index_in(column, value_set=JURISDICTION_VALUES)
    codes: CodeArray = (pc.fill_null(found, -1).to_numpy(zero_copy_only=False) + 1).astype(np.uint8)
    return codes


def _load_subjects(index: ConsentIndex) -> None:
    numeric_ids: list[IntArray] = []
    numeric_jur: list[CodeArray] = []
    numeric_erased: list[npt.NDArray[np.bool_]] = []
    strings: list[tuple[str, int, bool]] = []
    schema = pa.schema(
        [("user_id", pa.string()), ("jurisdiction", pa.string()), ("erased", pa.bool_())]
    )
    for batch in _table_batches("subjects", schema):
        ids = batch.column(0)
        jur = _jurisdiction_codes(batch.column(1))
        erased = batch.column(2).to_numpy(zero_copy_only=False).astype(np.bool_)
        numeric = numeric_mask(ids)
        numeric_ids.append(pc.cast(pc.filter(ids, pa.array(numeric)), pa.int64()).to_numpy())
        numeric_jur.append(jur[numeric])
        numeric_erased.append(erased[numeric])
        others = np.flatnonzero(~numeric).tolist()
        if others:
            texts = ids.take(pa.array(others)).to_pylist()
            strings.extend(
                (t, int(jur[i]), bool(erased[i])) for t, i in zip(texts, others, strict=True)
            )
    keys = np.concatenate(numeric_ids) if numeric_ids else np.empty(0, dtype=np.int64)
    order = index.ids.load(keys, [s[0] for s in strings])
    n = len(keys) + len(strings)
    index.n_rows = n
    index.grow(n)
    if len(keys):
        index.jur[: len(keys)] = np.concatenate(numeric_jur)[order]
        index.erased[: len(keys)] = np.concatenate(numeric_erased)[order]
    for i, (_, jur_code, erased_flag) in enumerate(strings):
        row = len(keys) + i
        index.jur[row] = jur_code
        index.erased[row] = erased_flag


def _policy_histories() -> dict[str, list[tuple[int, Policy]]]:
    histories: dict[str, list[tuple[int, Policy]]] = {}
    rows = db.session.execute(
        sa.select(Event.seq, Event.kind, Event.user_id, Event.purpose, Event.data)
        .where(Event.kind.in_(ev.POLICY_KINDS), Event.user_id.is_(None))
        .order_by(Event.seq)
    )
    for r in rows:
        event = ev.from_row(r)
        assert isinstance(event, ev.PolicyEvent)
        histories.setdefault(event.purpose, []).append((int(r.seq), event.policy))
    return histories


def _load_choices(index: ConsentIndex) -> None:
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("purpose", pa.string()),
            ("state", pa.string()),
            ("notice_version", pa.string()),
        ]
    )
    for batch in _table_batches("choices", schema):
        for key, p in index.purposes.items():
            mine = pc.equal(batch.column(1), key)
            ids = pc.filter(batch.column(0), mine)
            if not len(ids):
                continue
            granted = pc.equal(pc.filter(batch.column(2), mine), "granted").to_numpy(
                zero_copy_only=False
            )
            rows = index.ids.rows_for(ids)
            p.choice[rows] = np.where(granted, 1, 2).astype(np.int8)
            notices = pc.filter(batch.column(3), mine)
            if notices.null_count < len(notices):
                p.load_notices(rows, notices)


def _load_overrides(index: ConsentIndex) -> None:
    rows = db.session.execute(
        sa.select(
            Override.id,
            Override.user_id,
            Override.purpose,
            Override.state,
            Override.placed_seq,
            Override.expires_at,
            Override.placed_by,
            Override.ticket,
        ).where(Override.lifted_seq.is_(None))
    )
    for o in rows:
        row = index.ids.row_of(o.user_id)
        index.purposes[o.purpose].overrides.setdefault(row, []).append(
            OverrideFacts(o.id, o.state, o.placed_seq, o.expires_at, None, o.placed_by, o.ticket)
        )


def _load_restrictions(index: ConsentIndex) -> None:
    """Every restriction ever placed, lifted ones too, each with its own purpose's seqs."""
    for facts in restrictions.facts(seq=index.seq):
        for purpose in facts.purposes:
            index.purposes[purpose].restrictions.append(facts)
