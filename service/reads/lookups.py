"""Pipeline lookups: one ID, a batch of IDs, and streamed filters (newline text or Arrow IPC)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import compress
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consent_client.wire import ALLOWED_COLUMN, ARROW_STREAM, MAX_BATCH, NUMERIC_LIMIT
from service.domain import validation
from service.domain.errors import PayloadTooLarge, ValidationFailed
from service.readindex import codes as cd
from service.reads import decisions
from service.reads.streaming import ByteSink
from service.web import metrics

FILTER_CHUNK = 50_000
READ_BLOCK = 1 << 20
ALLOWED_SCHEMA = pa.schema([pa.field(ALLOWED_COLUMN, pa.bool_(), nullable=False)])


def lookup(purpose: str, user_id: str, as_of: str | None) -> dict[str, Any]:
    """One decision: {user_id, purpose, allowed, state, basis, as_of, legal_basis,
    notice_version}.

    A never-seen ID answers the purpose's unknown_subject state.
    """
    user_id = validation.user_id(user_id)
    seq = decisions.seq_for(as_of, purpose)
    answer = decisions.answer_of(purpose, seq, user_id)
    code = answer.code
    metrics.count_code(purpose, code)
    return {
        "user_id": user_id,
        "purpose": purpose,
        "allowed": code.allowed,
        "state": code.state,
        "basis": code.basis,
        "as_of": seq,
        "legal_basis": answer.legal_basis,
        "notice_version": answer.notice_version,
    }


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
    # seq_checked() also checks the purpose existed then: an empty batch must not answer 200 for a
    # purpose that does not exist (found by the contract fuzzer).
    seq = decisions.seq_checked(purpose, as_of)
    mask = counted(purpose, decisions.codes(purpose, seq, pa.array(ids, pa.string())))
    return {
        "purpose": purpose,
        "as_of": seq,
        "allowed": list(compress(ids, mask)),
        "denied": list(compress(ids, ~mask)),
    }


def counted(purpose: str, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """allowed(codes), with the decisions counted for /metrics."""
    metrics.count_codes(purpose, codes)
    return cd.allowed(codes)


def read_lines(stream: IO[bytes]) -> Iterator[tuple[list[bytes], bool]]:
    """Newline-separated IDs from a byte stream, in lists of at most FILTER_CHUNK, each with
    whether its block was pure ASCII (as every well-formed ID is)."""
    rest = b""
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            break
        # CRLF ends a line too; done on the joined text so a pair split across reads is seen.
        text = (rest + block).replace(b"\r\n", b"\n")
        parts = text.split(b"\n")
        rest = parts.pop()
        ascii_only = text.isascii()
        for i in range(0, len(parts), FILTER_CHUNK):
            yield parts[i : i + FILTER_CHUNK], ascii_only
    if rest:
        yield [rest.removesuffix(b"\r")], rest.isascii()


def _as_ids(lines: list[bytes], ascii_only: bool) -> pa.Array:
    """Lines as an Arrow string array; a line that cannot be an ID becomes null."""
    if ascii_only:
        return pa.array(lines, pa.string())  # the index itself tells IDs from other text
    raw = pa.array(lines, pa.binary())
    ok = pc.fill_null(pc.match_substring_regex(raw, validation.USER_ID_PATTERN), False)
    return pc.cast(pc.if_else(ok, raw, pa.scalar(None, pa.binary())), pa.string())


def filter_text(purpose: str, seq: int, stream: IO[bytes]) -> Iterator[bytes]:
    """Stream back the allowed IDs, in input order; malformed and blank lines are dropped."""
    for chunk, ascii_only in read_lines(stream):
        mask = counted(purpose, decisions.codes(purpose, seq, _as_ids(chunk, ascii_only)))
        kept = list(compress(chunk, mask))
        if kept:
            yield b"\n".join(kept) + b"\n"


def _arrow_codes(purpose: str, seq: int, column: pa.Array) -> npt.NDArray[np.uint8]:
    """Codes for one Arrow column of IDs: integers as numbers, strings as text."""
    if pa.types.is_integer(column.type):
        # Numeric IDs are digit strings: -7 is no numeric ID (and must not match the ID "-7").
        values = pc.fill_null(pc.cast(column, pa.int64(), safe=False), -1).to_numpy()
        small = (values >= 0) & (values < NUMERIC_LIMIT)
        out = cd.full(len(values), cd.INVALID)
        if small.any():
            out[small] = decisions.number_codes(purpose, seq, values[small])
        large = np.flatnonzero(values >= NUMERIC_LIMIT)
        if len(large):  # 19-digit IDs are valid, just not kept as numbers
            text = pc.cast(column.take(pa.array(large)), pa.string())
            out[large] = decisions.codes(purpose, seq, text)
        return out
    text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    return decisions.codes(purpose, seq, text)


def open_arrow(stream: IO[bytes]) -> pa.RecordBatchStreamReader:
    """Open an Arrow IPC stream of one ID column, or raise a 422 saying what is wrong."""
    try:
        reader = pa.ipc.open_stream(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationFailed(
            f"The body is not an Arrow IPC stream: {exc}",
            errors={"body": [f"Expected an Arrow IPC stream ({ARROW_STREAM})."]},
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


def filter_arrow(purpose: str, seq: int, reader: pa.RecordBatchStreamReader) -> Iterator[bytes]:
    """Answer each input batch with a batch of one boolean column `allowed`, aligned to it."""
    sink = ByteSink()
    writer = pa.ipc.new_stream(sink, ALLOWED_SCHEMA)
    yield sink.take()
    for batch in reader:
        mask = counted(purpose, _arrow_codes(purpose, seq, batch.column(0)))
        writer.write_batch(pa.record_batch([pa.array(mask, pa.bool_())], schema=ALLOWED_SCHEMA))
        yield sink.take()
    writer.close()
    yield sink.take()
