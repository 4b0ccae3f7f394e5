"""Pipeline lookups: one ID, a batch of IDs, and streamed filters (newline text or Arrow IPC),
each ID optionally with the time of its content (see content_times.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from itertools import compress
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consent_client.wire import (
    ALLOWED_COLUMN,
    ARROW_STREAM,
    CONTENT_TIME_COLUMN,
    MAX_BATCH,
    NUMERIC_LIMIT,
    TIME_SEPARATOR,
)
from service.domain import validation
from service.domain.errors import PayloadTooLarge, ValidationFailed
from service.readindex import codes as cd
from service.readindex.directory import IntArray
from service.readindex.index import Times
from service.reads import content_times, decisions
from service.reads.streaming import ByteSink
from service.web import metrics

FILTER_CHUNK = 50_000
NEWLINE, TAB = ord("\n"), ord(TIME_SEPARATOR)
READ_BLOCK = 1 << 20
# An Arrow batch is answered this many rows at a time (the answer is still one batch per
# input batch): one batch of millions of rows made every step's temporaries tens of MB,
# fresh pages from the allocator each time. 256 Ki rows: batches of 256 Ki and 1 Mi rows
# were the fastest sizes measured, and the usual 100,000-row batch is not cut in two.
ARROW_SLICE = 1 << 18
ALLOWED_SCHEMA = pa.schema([pa.field(ALLOWED_COLUMN, pa.bool_(), nullable=False)])


def lookup(
    purpose: str, user_id: str, as_of: str | None, content_time: str | None = None
) -> dict[str, Any]:
    """One decision: {user_id, purpose, allowed, state, basis, as_of, restriction_id,
    legal_basis, notice_version}, for content of `content_time` when given (RFC 3339 with an
    offset).

    A never-seen ID answers the purpose's unknown_subject state.
    """
    user_id = validation.user_id(user_id)
    when = content_times.one(content_time)
    seq = decisions.seq_for(as_of, purpose)
    answer = decisions.answer_of(purpose, seq, user_id, when)
    code = answer.code
    metrics.count_code(purpose, code)
    return {
        "user_id": user_id,
        "purpose": purpose,
        "allowed": code.allowed,
        "state": code.state,
        "basis": code.basis,
        "as_of": seq,
        "restriction_id": None if answer.restriction is None else answer.restriction.id,
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


def batch_lookup(
    purpose: str,
    raw_ids: Sequence[object],
    as_of: str | None,
    raw_times: Sequence[object] | None = None,
) -> dict[str, Any]:
    """Split a batch into allowed and denied; each distinct input ID lands in exactly one list.

    With content times (aligned with the IDs), an ID sent more than once is allowed only if
    it is for every one of its times: fail closed, and still in exactly one list.
    """
    given = batch_ids(raw_ids)
    times = content_times.aligned(raw_times, len(raw_ids))
    # seq_checked() also checks the purpose existed then: an empty batch must not answer 200 for a
    # purpose that does not exist (found by the contract fuzzer).
    seq = decisions.seq_checked(purpose, as_of)
    if times is None:
        ids = list(dict.fromkeys(given))
        mask = counted(purpose, decisions.codes(purpose, seq, pa.array(ids, pa.string())))
    else:
        every = counted(purpose, decisions.codes(purpose, seq, pa.array(given, pa.string()), times))
        verdict: dict[str, bool] = {}
        for user_id, ok in zip(given, every.tolist(), strict=True):
            verdict[user_id] = verdict.get(user_id, True) and ok
        ids = list(verdict)
        mask = np.array(list(verdict.values()), dtype=np.bool_)
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


def read_blocks(stream: IO[bytes]) -> Iterator[bytes]:
    """A byte stream as blocks of whole lines, each ending with LF (CRLF becomes LF; a last
    line without a newline gets one)."""
    rest = b""
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            break
        # CRLF ends a line too; done on the joined text so a pair split across reads is seen.
        text = (rest + block).replace(b"\r\n", b"\n")
        cut = text.rfind(b"\n") + 1
        if cut:
            yield text[:cut]
        rest = text[cut:]
    if rest:
        yield rest.removesuffix(b"\r") + b"\n"


def _lines_of(block: bytes) -> Iterator[tuple[list[bytes], bool]]:
    parts = block.split(b"\n")
    parts.pop()  # after the block's last LF
    ascii_only = block.isascii()
    for i in range(0, len(parts), FILTER_CHUNK):
        yield parts[i : i + FILTER_CHUNK], ascii_only


def read_lines(stream: IO[bytes]) -> Iterator[tuple[list[bytes], bool]]:
    """Newline-separated IDs from a byte stream, in lists of at most FILTER_CHUNK, each with
    whether its block was pure ASCII (as every well-formed ID is)."""
    for block in read_blocks(stream):
        yield from _lines_of(block)


def _as_ids(lines: list[bytes], ascii_only: bool) -> pa.Array:
    """Lines as an Arrow string array; a line that cannot be an ID becomes null."""
    if ascii_only:
        return pa.array(lines, pa.string())  # the index itself tells IDs from other text
    return _binary_ids(pa.array(lines, pa.binary()), False)


def filter_text(purpose: str, seq: int, stream: IO[bytes]) -> Iterator[bytes]:
    """Stream back the allowed IDs, in input order; malformed and blank lines are dropped.

    A line `user_id<TAB>time` asks about content of that time (RFC 3339 with an offset; an
    empty time is none); the answer still holds the user_id alone. A well-formed ID with a
    time that is not one refuses the request with a 422 naming its line while nothing has
    been sent yet (see started()); after that, such a line is dropped as a malformed ID is.
    """
    line = 1
    sent = False
    for block in read_blocks(stream):
        if TIME_SEPARATOR.encode() in block:
            kept, lines = _timed_block(purpose, seq, block, line, strict=not sent)
            line += lines
            if kept:
                sent = True
                yield kept
            continue
        for chunk, ascii_only in _lines_of(block):
            line += len(chunk)
            mask = counted(purpose, decisions.codes(purpose, seq, _as_ids(chunk, ascii_only)))
            kept_lines = list(compress(chunk, mask))
            if kept_lines:
                sent = True
                yield b"\n".join(kept_lines) + b"\n"


def _timed_block(
    purpose: str, seq: int, block: bytes, first_line: int, *, strict: bool
) -> tuple[bytes, int]:
    """The allowed IDs of a block of lines some of which carry a time, and how many lines.

    The block is cut into IDs and times by offsets into its own bytes (no object per line):
    as Arrow binary values, line i is the ID [start, tab), the tab [tab, tab + 1), the time
    [tab + 1, end) and the newline [end, next start); a line without a tab has an empty tab
    and time at its end.
    """
    data = np.frombuffer(block, dtype=np.uint8)
    starts, mid, ends = _line_spans(data)
    has_tab = mid < ends
    n = len(ends)
    large = len(block) >= 2**31 - 1
    offsets = np.empty(4 * n + 1, dtype=np.int64 if large else np.int32)
    offsets[0 : 4 * n : 4] = starts
    offsets[1 : 4 * n : 4] = mid
    offsets[2 : 4 * n : 4] = mid + has_tab
    offsets[3 : 4 * n : 4] = ends
    offsets[4 * n] = len(block)
    kind = pa.large_binary() if large else pa.binary()
    parts = pa.Array.from_buffers(kind, 4 * n, [None, pa.py_buffer(offsets), pa.py_buffer(block)])
    raw_ids = parts.take(pa.array(np.arange(0, 4 * n, 4)))
    texts = parts.take(pa.array(np.arange(2, 4 * n, 4)))
    times, bad = content_times.parse_texts(texts)
    ids = _binary_ids(raw_ids, block.isascii())
    codes = decisions.codes(purpose, seq, ids, times)
    if bad is not None:
        wrong = np.flatnonzero(bad & (codes != cd.INVALID))
        if strict and len(wrong):
            raise content_times.bad_line(first_line + int(wrong[0]), texts[int(wrong[0])].as_py())
        codes[bad] = cd.INVALID
    mask = counted(purpose, codes)
    kept = np.flatnonzero(mask)
    if not len(kept):
        return b"", n
    # The kept IDs, each followed by a newline, from the block's own bytes.
    lengths = (mid - starts)[kept] + 1
    out_at = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_at[1:])
    picks = np.repeat(starts[kept] - out_at[:-1], lengths) + np.arange(out_at[-1])
    out = data[picks]
    out[out_at[1:] - 1] = 10
    return out.tobytes(), n


def _line_spans(data: npt.NDArray[np.uint8]) -> tuple[IntArray, IntArray, IntArray]:
    """Where each line of a block starts, has its first tab (its end when it has none) and
    ends (its LF). One scan for both separators; when every line holds exactly one tab, as
    lines from a pipeline do, they are told apart by position alone."""
    seps = np.flatnonzero((data == TAB) | (data == NEWLINE))
    kinds = data[seps]
    if len(seps) % 2 == 0 and (kinds[0::2] == TAB).all() and (kinds[1::2] == NEWLINE).all():
        mid, ends = seps[0::2], seps[1::2]
    else:
        ends = seps[kinds == NEWLINE]
        tabs = seps[kinds == TAB]
        mid = ends.copy()
        if len(tabs):
            # The first tab of each line: a tab whose previous separator is a newline.
            first = np.flatnonzero(kinds == TAB)
            first = first[(first == 0) | (kinds[first - 1] == NEWLINE)]
            line = np.cumsum(kinds == NEWLINE)[first]  # newlines before it: its line
            mid[line] = seps[first]
    starts = np.empty(len(ends), dtype=np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, mid, ends


def _binary_ids(raw: pa.Array, ascii_only: bool) -> pa.Array:
    """IDs given as Arrow binary values, as strings; one that cannot be an ID becomes null."""
    if ascii_only:
        return raw.cast(pa.string())  # the index itself tells IDs from other text
    ok = pc.fill_null(pc.match_substring_regex(raw, validation.USER_ID_PATTERN), False)
    return pc.cast(pc.if_else(ok, raw, pa.scalar(None, raw.type)), pa.string())


def started(body: Iterator[bytes]) -> Iterator[bytes]:
    """A response body whose first bytes are already made: a problem met before them (a bad
    content time near the start) is still an error response rather than a cut stream."""
    first = next(body, None)
    if first is None:
        return iter(())
    return itertools.chain([first], body)


def slices(batch: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    """A batch as zero-copy slices of at most `rows` rows (the batch itself if it is small)."""
    if batch.num_rows <= rows:
        yield batch
        return
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


def _arrow_codes(
    purpose: str, seq: int, column: pa.Array, times: Times | None = None
) -> npt.NDArray[np.uint8]:
    """Codes for one Arrow column of IDs: integers as numbers, strings as text; each for
    content of its time in `times` (aligned), if given."""
    if pa.types.is_integer(column.type):
        # Numeric IDs are digit strings: -7 is no numeric ID (and must not match the ID "-7").
        values = pc.fill_null(pc.cast(column, pa.int64(), safe=False), -1).to_numpy()
        small = (values >= 0) & (values < NUMERIC_LIMIT)
        if small.all():  # the usual batch: no copy of the IDs (or their times) to pick them
            return decisions.number_codes(purpose, seq, values, times)
        out = cd.full(len(values), cd.INVALID)
        if small.any():
            out[small] = decisions.number_codes(
                purpose, seq, values[small], None if times is None else times[small]
            )
        large = np.flatnonzero(values >= NUMERIC_LIMIT)
        if len(large):  # 19-digit IDs are valid, just not kept as numbers
            text = pc.cast(column.take(pa.array(large)), pa.string())
            out[large] = decisions.codes(
                purpose, seq, text, None if times is None else times[large]
            )
        return out
    text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    return decisions.codes(purpose, seq, text, times)


def open_arrow(stream: IO[bytes], *, with_times: bool = False) -> pa.RecordBatchStreamReader:
    """Open an Arrow IPC stream of one ID column, or raise a 422 saying what is wrong.

    `with_times`: a second column named CONTENT_TIME_COLUMN (a timezone-aware timestamp) may
    stand beside the IDs (see id_and_time_columns)."""
    try:
        reader = pa.ipc.open_stream(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationFailed(
            f"The body is not an Arrow IPC stream: {exc}",
            errors={"body": [f"Expected an Arrow IPC stream ({ARROW_STREAM})."]},
        ) from None
    names = reader.schema.names
    timed = with_times and len(names) == 2 and CONTENT_TIME_COLUMN in names
    if len(names) != 1 and not timed:
        beside = f", or the IDs and {CONTENT_TIME_COLUMN!r}" if with_times else ""
        raise ValidationFailed(
            f"The Arrow stream has {len(names)} columns ({', '.join(map(repr, names))}); "
            f"send exactly one (the IDs){beside}.",
            errors={"body": [f"Exactly one column{beside}."]},
        )
    id_at, time_at = id_and_time_columns(reader.schema)
    if time_at is not None:
        content_times.check_column(reader.schema.field(time_at))
    field = reader.schema.field(id_at)
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


def id_and_time_columns(schema: pa.Schema) -> tuple[int, int | None]:
    """Positions of the ID column and of the content time column (None: no times)."""
    if len(schema) == 2 and CONTENT_TIME_COLUMN in schema.names:
        time_at = schema.get_field_index(CONTENT_TIME_COLUMN)
        return 1 - time_at, time_at
    return 0, None


def filter_arrow(purpose: str, seq: int, reader: pa.RecordBatchStreamReader) -> Iterator[bytes]:
    """Answer each input batch with a batch of one boolean column `allowed`, aligned to it.

    The stream's schema goes out with the first answer, so that a problem found in the first
    batch can still be an error response (see started())."""
    id_at, time_at = id_and_time_columns(reader.schema)
    sink = ByteSink()
    writer = pa.ipc.new_stream(sink, ALLOWED_SCHEMA)
    for batch in reader:
        masks = [
            counted(purpose, _arrow_codes(purpose, seq, part.column(id_at), times))
            for part in slices(batch, ARROW_SLICE)
            for times in [
                None if time_at is None else content_times.column_times(part.column(time_at))
            ]
        ]
        mask = masks[0] if len(masks) == 1 else np.concatenate(masks)
        writer.write_batch(pa.record_batch([pa.array(mask, pa.bool_())], schema=ALLOWED_SCHEMA))
        yield sink.take()
    writer.close()
    yield sink.take()
