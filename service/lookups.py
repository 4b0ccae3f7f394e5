"""Pipeline lookups: one ID, a batch of IDs, and streamed filters (newline text or Arrow IPC)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc

from service import validation
from service.asof import PointInTime, decide, point_in_time
from service.errors import PayloadTooLarge, ValidationFailed
from service.streaming import ByteSink

MAX_BATCH = 10_000
FILTER_CHUNK = 10_000
READ_BLOCK = 1 << 20
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ALLOWED_SCHEMA = pa.schema([pa.field("allowed", pa.bool_(), nullable=False)])


def decision_document(user_id: str, purpose: str, pit: PointInTime) -> dict[str, Any]:
    """The decision for one ID as of pit: {user_id, purpose, allowed, state, basis, as_of}."""
    res = decide(purpose, pit, [user_id])[0]
    return {
        "user_id": user_id,
        "purpose": purpose,
        "allowed": res.allowed,
        "state": res.state,
        "basis": res.basis,
        "as_of": pit.seq,
    }


def lookup(purpose: str, user_id: str, as_of: str | None) -> dict[str, Any]:
    """One decision; a never-seen ID answers the purpose's unknown_subject state."""
    user_id = validation.user_id(user_id)
    return decision_document(user_id, purpose, point_in_time(as_of))


def batch_ids(raw: Sequence[object]) -> list[str]:
    """Validate a batch of IDs (strings, or non-negative integers for numeric IDs)."""
    if len(raw) > MAX_BATCH:
        raise PayloadTooLarge(
            f"{len(raw)} user_ids in one request; at most {MAX_BATCH}. "
            "Split the batch, or stream any number through POST /v1/filter/{purpose}."
        )
    ids: list[str] = []
    bad: dict[str, list[str]] = {}
    for i, value in enumerate(raw):
        numeric = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**64
        text = str(value) if numeric else value
        if isinstance(text, str) and validation.is_user_id(text):
            ids.append(text)
        elif len(bad) < 100:
            shown = value[:80] if isinstance(value, str) else type(value).__name__
            bad[f"user_ids.{i}"] = [f"{shown!r} is not a valid user ID."]
    if bad:
        names = ", ".join(msgs[0].split(" is not")[0] for msgs in list(bad.values())[:5])
        raise ValidationFailed(
            f"{len(bad)} malformed user ID(s), e.g. {names}; "
            f"each must be {validation.USER_ID_RULE}.",
            errors=bad,
        )
    return ids


def batch_lookup(purpose: str, raw_ids: Sequence[object], as_of: str | None) -> dict[str, Any]:
    """Split a batch into allowed and denied; each distinct input ID lands in exactly one list."""
    ids = list(dict.fromkeys(batch_ids(raw_ids)))
    pit = point_in_time(as_of)
    resolutions = decide(purpose, pit, ids)
    return {
        "purpose": purpose,
        "as_of": pit.seq,
        "allowed": [u for u, r in zip(ids, resolutions, strict=True) if r.allowed],
        "denied": [u for u, r in zip(ids, resolutions, strict=True) if not r.allowed],
    }


def allowed_mask(purpose: str, pit: PointInTime, ids: Sequence[str | None]) -> list[bool]:
    """For each entry, True only if it is a well-formed ID the ledger allows as of pit."""
    valid = [u for u in ids if u is not None and validation.is_user_id(u)]
    allowed = {u for u, r in zip(valid, decide(purpose, pit, valid), strict=True) if r.allowed}
    return [u in allowed for u in ids]


def _lines(stream: IO[bytes]) -> Iterator[list[bytes]]:
    """Newline-separated IDs from a byte stream, in lists of at most FILTER_CHUNK."""
    rest = b""
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            break
        parts = (rest + block).split(b"\n")
        rest = parts.pop()
        for i in range(0, len(parts), FILTER_CHUNK):
            yield parts[i : i + FILTER_CHUNK]
    if rest:
        yield [rest]


def _decode(line: bytes) -> str | None:
    line = line.rstrip(b"\r")
    try:
        return line.decode("ascii")
    except UnicodeDecodeError:
        return None  # not an ID; fail closed: it will never be emitted


def filter_text(purpose: str, pit: PointInTime, stream: IO[bytes]) -> Iterator[bytes]:
    """Stream back the allowed IDs, in input order; malformed and blank lines are dropped."""
    for chunk in _lines(stream):
        ids = [_decode(line) for line in chunk]
        mask = allowed_mask(purpose, pit, ids)
        kept = [line.rstrip(b"\r") for line, ok in zip(chunk, mask, strict=True) if ok]
        if kept:
            yield b"\n".join(kept) + b"\n"


def _arrow_ids(column: pa.Array | pa.ChunkedArray) -> list[str | None]:
    if pa.types.is_integer(column.type):
        # Numeric IDs are digit strings: -7 is no numeric ID (and must not match the ID "-7").
        text = pc.cast(column, pa.string())
        column = pc.if_else(pc.less(column, 0), pa.scalar(None, pa.string()), text)
    elif pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = pc.cast(column, pa.string())
    elif not pa.types.is_string(column.type):
        raise ValidationFailed(
            f"The Arrow column is {column.type}; send a single column of string or int64 IDs.",
            errors={"body": ["Column type must be string or int64."]},
        )
    return column.to_pylist()  # type: ignore[no-any-return]


def open_arrow(stream: IO[bytes]) -> pa.RecordBatchStreamReader:
    """Open an Arrow IPC stream of one ID column, or raise a 422 saying what is wrong."""
    try:
        reader = pa.ipc.open_stream(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationFailed(
            f"The body is not an Arrow IPC stream: {exc}",
            errors={
                "body": ["Expected an Arrow IPC stream (application/vnd.apache.arrow.stream)."]
            },
        ) from None
    if len(reader.schema) != 1:
        raise ValidationFailed(
            f"The Arrow stream has {len(reader.schema)} columns; send exactly one (the IDs).",
            errors={"body": ["Exactly one column."]},
        )
    field = reader.schema.field(0)
    if not (
        pa.types.is_integer(field.type)
        or pa.types.is_string(field.type)
        or pa.types.is_large_string(field.type)
    ):
        raise ValidationFailed(
            f"The Arrow column is {field.type}; send string or int64 IDs.",
            errors={"body": ["Column type must be string or int64."]},
        )
    return reader


def filter_arrow(
    purpose: str, pit: PointInTime, reader: pa.RecordBatchStreamReader
) -> Iterator[bytes]:
    """Answer each input batch with a batch of one boolean column `allowed`, aligned to it."""
    sink = ByteSink()
    writer = pa.ipc.new_stream(sink, ALLOWED_SCHEMA)
    yield sink.take()
    for batch in reader:
        ids = _arrow_ids(batch.column(0))
        mask: list[bool] = []
        for i in range(0, len(ids), FILTER_CHUNK):
            mask.extend(allowed_mask(purpose, pit, ids[i : i + FILTER_CHUNK]))
        writer.write_batch(pa.record_batch([pa.array(mask, pa.bool_())], schema=ALLOWED_SCHEMA))
        yield sink.take()
    writer.close()
    yield sink.take()
