"""Snapshots: every known subject in the allowed or denied set as of a seq, streamed as CSV,
NDJSON or Parquet (sorted by user_id) for offline joins."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from consent_client.signatures import Digest
from service.readindex import codes as cd
from service.readindex.follow import ready_index
from service.reads import decisions
from service.reads.asof import IN_CHUNK, PointInTime, decide, event_time
from service.reads.consistent import read_transaction
from service.reads.streaming import ByteSink
from service.runtime.extensions import db
from service.runtime.models import Subject

PAGE = 10_000
# Every Parquet row group but the last holds exactly this many rows (see parquet_stream): about
# 5 MB of Arrow data held per stream, and a third smaller files than 100,000-row groups.
ROW_GROUP = 250_000
UNKNOWN = cd.make("unknown", False)
BASIS_NAMES = pa.array(cd.BASES, pa.string())
SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("basis", pa.string(), nullable=False),
    ]
)


def _user_id_order() -> sa.ColumnElement[str]:
    # Byte order on every backend, whatever the PostgreSQL database's default collation.
    if db.session.get_bind().dialect.name == "postgresql":
        return Subject.user_id.collate("C")
    return Subject.user_id.expression


def _database_pages(purpose: str, seq: int, want_allowed: bool) -> Iterator[pa.Table]:
    """Pages of subjects known as of seq, in user_id byte order, resolved by the database."""
    pit = PointInTime(seq, event_time(seq))
    order = _user_id_order()
    last: str | None = None
    while True:
        query = sa.select(Subject.user_id).where(Subject.registered_seq <= seq)
        if last is not None:
            query = query.where(order > last)
        with read_transaction(consistent=False):
            ids = list(db.session.execute(query.order_by(order).limit(PAGE)).scalars())
        if not ids:
            return
        codes = cd.as_codes([cd.encode(r) for r in decide(purpose, pit, ids)])
        yield _page(pa.array(ids, pa.string()), codes, want_allowed)
        last = ids[-1]


def _page(ids: pa.Array, codes: npt.NDArray[np.uint8], want_allowed: bool) -> pa.Table:
    """The rows of one page that are known subjects in the wanted set, with their basis."""
    keep = cd.known(codes) & (cd.allowed(codes) == want_allowed)
    picked = np.flatnonzero(keep)
    bases = pa.DictionaryArray.from_arrays(pa.array(cd.basis_indices(codes[picked])), BASIS_NAMES)
    return pa.table(
        [ids.take(pa.array(picked)), pc.cast(bases, pa.string())], schema=SNAPSHOT_SCHEMA
    )


def pages(purpose: str, seq: int, want_allowed: bool) -> Iterator[pa.Table]:
    """Pages of (user_id, basis) for subjects known as of seq and in the wanted set."""
    index = ready_index()
    if index is None or not index.built_seq <= seq <= index.seq:
        yield from _database_pages(purpose, seq, want_allowed)
        return
    for ids, codes, stale in index.snapshot_pages(purpose, seq):
        if stale:
            texts = ids.take(pa.array(stale)).to_pylist()
            codes[stale] = decisions.codes_from_database(purpose, seq, texts)
            # Subjects registered after seq are no one's as of it, even where a `*` basis
            # (not_offered) answers never-seen IDs with a basis of its own.
            later = _registered_after(texts, seq)
            if later:
                codes[[i for i, t in zip(stale, texts, strict=True) if t in later]] = UNKNOWN
        yield _page(ids, codes, want_allowed)


def _registered_after(user_ids: list[str], seq: int) -> set[str]:
    """Those of the IDs that were not registered yet as of seq."""
    found: set[str] = set()
    with read_transaction(consistent=False):
        for i in range(0, len(user_ids), IN_CHUNK):
            found.update(
                db.session.execute(
                    sa.select(Subject.user_id).where(
                        Subject.user_id.in_(user_ids[i : i + IN_CHUNK]),
                        Subject.registered_seq > seq,
                    )
                ).scalars()
            )
    return found


def csv_stream(tables: Iterator[pa.Table]) -> Iterator[bytes]:
    """CSV with a header line: user_id,basis."""
    yield b"user_id,basis\r\n"
    for table in tables:
        buf = io.StringIO()
        csv.writer(buf).writerows(
            zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
        )
        yield buf.getvalue().encode()


def ndjson_stream(tables: Iterator[pa.Table]) -> Iterator[bytes]:
    """One JSON object per line: {"user_id": ..., "basis": ...}."""
    for table in tables:
        yield "".join(
            json.dumps({"user_id": u, "basis": b}, separators=(",", ":")) + "\n"
            for u, b in zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)
        ).encode()


def parquet_stream(tables: Iterator[pa.Table]) -> Iterator[bytes]:
    """A Parquet file written row group by row group; a cut stream lacks the footer.

    Every row group but the last holds exactly ROW_GROUP rows in one chunk, so the bytes depend
    on the rows alone, never on the pages they came in: the index and the database page
    differently, and a snapshot's signed digest must hold whichever of them answers.
    """
    sink = ByteSink()
    writer = pq.ParquetWriter(sink, SNAPSHOT_SCHEMA, compression="zstd")
    pending = SNAPSHOT_SCHEMA.empty_table()
    for table in tables:
        pending = pa.concat_tables([pending, table])
        while pending.num_rows >= ROW_GROUP:
            writer.write_table(pending.slice(0, ROW_GROUP).combine_chunks())
            pending = pending.slice(ROW_GROUP)
            yield sink.take()
    if pending.num_rows:
        writer.write_table(pending.combine_chunks())
    writer.close()
    yield sink.take()


def encode(tables: Iterator[pa.Table], fmt: str) -> Iterator[bytes]:
    """The bytes of pages of rows in a snapshot format."""
    if fmt == "csv":
        return csv_stream(tables)
    if fmt == "ndjson":
        return ndjson_stream(tables)
    return parquet_stream(tables)


def stream(purpose: str, seq: int, set_name: str, fmt: str) -> Iterator[bytes]:
    """The snapshot's bytes in the requested format."""
    return encode(pages(purpose, seq, set_name == "allowed"), fmt)


def digest(purpose: str, seq: int, set_name: str, fmt: str) -> Digest:
    """SHA-256, size and rows of exactly the bytes `stream` answers with for the same arguments,
    computed by streaming the same pages into the hash (nothing is held)."""
    rows = 0

    def counted(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        nonlocal rows
        for table in tables:
            rows += table.num_rows
            yield table

    hasher = hashlib.sha256()
    size = 0
    for chunk in encode(counted(pages(purpose, seq, set_name == "allowed")), fmt):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(hasher.hexdigest(), size, rows)
