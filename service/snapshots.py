"""Snapshots: every known subject in the allowed or denied set as of a seq, streamed as CSV,
NDJSON or Parquet (sorted by user_id) for offline joins."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from service.asof import PointInTime, decide
from service.extensions import db
from service.models import Subject
from service.streaming import ByteSink

PAGE = 10_000
ROW_GROUP = 100_000
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
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


def rows(purpose: str, pit: PointInTime, want_allowed: bool) -> Iterator[list[tuple[str, str]]]:
    """Pages of (user_id, basis) for subjects known as of pit, in user_id byte order."""
    order = _user_id_order()
    last: str | None = None
    while True:
        query = sa.select(Subject.user_id).where(Subject.registered_seq <= pit.seq)
        if last is not None:
            query = query.where(order > last)
        ids = list(db.session.execute(query.order_by(order).limit(PAGE)).scalars())
        db.session.rollback()
        if not ids:
            return
        page: list[tuple[str, str]] = [
            (u, str(r.basis))
            for u, r in zip(ids, decide(purpose, pit, ids), strict=True)
            if r.allowed is want_allowed
        ]
        if page:
            yield page
        last = ids[-1]


def csv_stream(pages: Iterator[list[tuple[str, str]]]) -> Iterator[bytes]:
    """CSV with a header line: user_id,basis."""
    yield b"user_id,basis\r\n"
    for page in pages:
        buf = io.StringIO()
        csv.writer(buf).writerows(page)
        yield buf.getvalue().encode()


def ndjson_stream(pages: Iterator[list[tuple[str, str]]]) -> Iterator[bytes]:
    """One JSON object per line: {"user_id": ..., "basis": ...}."""
    for page in pages:
        yield "".join(
            json.dumps({"user_id": u, "basis": b}, separators=(",", ":")) + "\n" for u, b in page
        ).encode()


def parquet_stream(pages: Iterator[list[tuple[str, str]]]) -> Iterator[bytes]:
    """A Parquet file written row group by row group; a cut stream lacks the footer."""
    sink = ByteSink()
    writer = pq.ParquetWriter(sink, SNAPSHOT_SCHEMA, compression="zstd")
    pending: list[tuple[str, str]] = []

    def flush() -> None:
        writer.write_table(
            pa.table(
                [pa.array([u for u, _ in pending]), pa.array([b for _, b in pending])],
                schema=SNAPSHOT_SCHEMA,
            )
        )
        pending.clear()

    for page in pages:
        pending.extend(page)
        if len(pending) >= ROW_GROUP:
            flush()
            yield sink.take()
    if pending:
        flush()
    writer.close()
    yield sink.take()


def stream(purpose: str, pit: PointInTime, set_name: str, fmt: str) -> Iterator[bytes]:
    """The snapshot's bytes in the requested format."""
    pages = rows(purpose, pit, set_name == "allowed")
    if fmt == "csv":
        return csv_stream(pages)
    if fmt == "ndjson":
        return ndjson_stream(pages)
    return parquet_stream(pages)
