"""A run's member lists streamed as of a seq: the affected members and the violations, as text,
NDJSON or Parquet."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from service.readindex import codes as cd
from service.reads.affected import NO_SEQ, affected
from service.reads.consistent import read_transaction
from service.reads.members import decode_codes, members_of
from service.reads.runs import pinned_run, require_members
from service.reads.streaming import ByteSink
from service.runtime.extensions import db
from service.runtime.models import RunMembers

MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
BASIS_NAMES = pa.array([*cd.BASES], pa.string())
AFFECTED_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("basis", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=True),
    ]
)
VIOLATIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("basis", pa.string(), nullable=False),
    ]
)


def _basis(codes: cd.CodeArray) -> pa.Array:
    names = pa.DictionaryArray.from_arrays(pa.array(cd.basis_indices(codes)), BASIS_NAMES)
    return pc.cast(names, pa.string())


def affected_stream(run_id: int, as_of: str | None, fmt: str) -> tuple[int, Iterator[bytes]]:
    """The seq and the bytes of the run's affected members as of it: {user_id, basis, seq}."""
    run, recorded, seq = pinned_run(run_id, as_of)
    require_members(run, recorded, seq)
    members = members_of(run.id)

    def tables() -> Iterator[pa.Table]:
        for part in affected(run.purpose, run.as_of, seq, members):
            seqs = pa.array(part.seqs, pa.int64(), mask=part.seqs == NO_SEQ)
            yield pa.table([part.ids, _basis(part.codes), seqs], schema=AFFECTED_SCHEMA)

    return seq, _encoded(tables(), AFFECTED_SCHEMA, fmt)


def violations_stream(run_id: int, as_of: str | None, fmt: str) -> tuple[int, Iterator[bytes]]:
    """The seq, and the members not allowed as of the run's as_of (what the ledger said then,
    kept beside the members when they were recorded): {user_id, basis}."""
    run, recorded, seq = pinned_run(run_id, as_of)
    recorded = require_members(run, recorded, seq)
    members = members_of(run.id)
    with read_transaction(consistent=False):
        blob = db.session.execute(
            sa.select(RunMembers.codes).where(RunMembers.run_id == run.id)
        ).scalar_one()
    codes = decode_codes(blob, recorded.members)

    def tables() -> Iterator[pa.Table]:
        for start in range(0, len(codes), 1 << 20):
            part = codes[start : start + (1 << 20)]
            at = np.flatnonzero(~cd.allowed(part)) + start
            yield pa.table([members.ids(at), _basis(codes[at])], schema=VIOLATIONS_SCHEMA)

    return seq, _encoded(tables(), VIOLATIONS_SCHEMA, fmt)


def _encoded(tables: Iterator[pa.Table], schema: pa.Schema, fmt: str) -> Iterator[bytes]:
    if fmt == "parquet":
        return _parquet(tables, schema)
    if fmt == "ndjson":
        return _ndjson(tables)
    return _text(tables)


def _text(tables: Iterator[pa.Table]) -> Iterator[bytes]:
    """One member a line, its fields separated by tabs (an empty seq: none)."""
    for table in tables:
        if table.num_rows:
            columns = [pc.fill_null(pc.cast(c, pa.string()), "") for c in table.columns]
            yield _lines(pc.binary_join_element_wise(*columns, "\t"))


def _ndjson(tables: Iterator[pa.Table]) -> Iterator[bytes]:
    """One JSON object a line. Built by Arrow, not json.dumps: user IDs and bases hold only
    characters JSON needs no escape for (validation.USER_ID_PATTERN), and seqs are numbers."""
    for table in tables:
        if not table.num_rows:
            continue
        parts: list[Any] = []
        for i, name in enumerate(table.column_names):
            column = table.column(i)
            opening = "{" if i == 0 else ","
            if pa.types.is_integer(column.type):
                parts += [f'{opening}"{name}":', pc.fill_null(pc.cast(column, pa.string()), "null")]
            else:
                parts += [f'{opening}"{name}":"', column, '"']
        parts.append("}")
        yield _lines(pc.binary_join_element_wise(*parts, ""))


def _lines(texts: pa.ChunkedArray | pa.Array) -> bytes:
    """The strings, each followed by a newline, as one bytes object (no Python string each)."""
    lined = pc.binary_join_element_wise(texts, "", "\n")
    chunks = lined.chunks if isinstance(lined, pa.ChunkedArray) else [lined]
    out = []
    for chunk in chunks:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)
        begin, end = offsets[chunk.offset], offsets[chunk.offset + len(chunk)]
        out.append(chunk.buffers()[2].slice(begin, end - begin).to_pybytes())
    return b"".join(out)


def _parquet(tables: Iterator[pa.Table], schema: pa.Schema) -> Iterator[bytes]:
    """A Parquet file, row group by row group; a cut stream lacks its footer."""
    sink = ByteSink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    yield sink.take()
    for table in tables:
        if table.num_rows:
            writer.write_table(table)
            yield sink.take()
    writer.close()
    yield sink.take()
