"""Content times as reads take them: one per ID, as microseconds since the epoch (UTC).

A windowed restriction denies content whose time is inside its window, and content without a
time (nothing shows it is outside). Times come as an RFC 3339 parameter (single lookup), a
list aligned with the IDs (batch), the part after a tab on a filter's text line, or an Arrow
timezone-aware timestamp column of any unit; a missing one (null, an empty text) is NO_TIME.
Every window bound has microseconds at most, so times are floored to microseconds without
changing which side of a bound they fall on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from service.domain.clock import RFC3339_RULE, from_micros, parse_rfc3339, to_micros
from service.domain.errors import ValidationFailed
from service.readindex.codes import Mask
from service.readindex.index import NO_TIME, Times

_DASH, _T, _SPACE, _COLON, _DOT, _Z, _PLUS, _MINUS, _ZERO, _NINE = b"-T :.Z+-09"
_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}
SHOWN_ERRORS = 100


def one(raw: str | None, field: str = "content_time") -> datetime | None:
    """One content time (None or empty: no time), or a 422 naming the field."""
    if raw is None or raw == "":
        return None
    when = parse_rfc3339(raw)
    if when is None:
        raise ValidationFailed(
            f"{field} {raw[:60]!r} is not {RFC3339_RULE}.",
            errors={field: [f"Must be {RFC3339_RULE}."]},
        )
    return when


def aligned(raw: Sequence[object] | None, n: int, field: str = "content_times") -> Times | None:
    """Times aligned with n IDs (null: no time for that one); None when none were sent.

    A list of another length, or an entry that is not an RFC 3339 time with an offset, is a
    422 naming each position."""
    if raw is None:
        return None
    if len(raw) != n:
        raise ValidationFailed(
            f"{field} has {len(raw)} entries for {n} user_ids; send one per ID (null for none).",
            errors={field: [f"Must have exactly one entry per user ID ({n})."]},
        )
    out = np.full(n, NO_TIME, dtype=np.int64)
    bad: dict[str, list[str]] = {}
    for i, value in enumerate(raw):
        if value is None:
            continue
        when = parse_rfc3339(value) if isinstance(value, str) else None
        if when is None:
            if len(bad) < SHOWN_ERRORS:
                shown = repr(value[:60]) if isinstance(value, str) else type(value).__name__
                bad[f"{field}.{i}"] = [f"{shown} is not {RFC3339_RULE}."]
            continue
        out[i] = to_micros(when)
    if bad:
        raise ValidationFailed(
            f"{len(bad)} content time(s) are not RFC 3339 times with an offset, e.g. "
            f"{next(iter(bad))}.",
            errors=bad,
        )
    return out


def datetimes(times: Times | None, positions: Sequence[int]) -> list[datetime | None] | None:
    """The times at some positions as datetimes (None where no time), for the database."""
    if times is None:
        return None
    return [None if times[i] == NO_TIME else from_micros(int(times[i])) for i in positions]


def parse_texts(texts: pa.Array) -> tuple[Times, Mask | None]:
    """Times from text (string or binary; null or empty: no time), vectorised, and where the
    text is not an RFC 3339 time with an offset (None: nowhere); those get NO_TIME.

    Arrow's parser reads the digits and ranges, but a few forms RFC 3339 does not have (an
    offset without a colon, no seconds); a check of the characters at fixed places, done on
    the array's own bytes, keeps those out. Anything either refuses is looked at one by one.
    """
    given, shaped = _shape(texts)
    if not shaped[given].all():
        return _one_by_one(texts)
    try:
        strings = texts if pa.types.is_string(texts.type) else texts.cast(pa.string())
        nulls = pa.array(~given) if not given.all() else None
        if nulls is not None:
            strings = pc.if_else(nulls, pa.scalar(None, pa.string()), strings)
        parsed = pc.cast(strings, pa.timestamp("ns", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _one_by_one(texts)  # lower-case t or z, beyond 1677-2262, not UTF-8, ...
    nanos = pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    out: Times = np.where(given, nanos // 1000, NO_TIME).astype(np.int64)
    return out, None


def _shape(texts: pa.Array) -> tuple[Mask, Mask]:
    """Where a text is given (not null, not empty), and where it has RFC 3339's shape:
    YYYY-MM-DD, T or space, hh:mm:ss, an optional fraction, then Z or an offset +hh:mm."""
    n = len(texts)
    offsets_type = np.int64 if pa.types.is_large_binary(texts.type) else np.int32
    if pa.types.is_large_string(texts.type):
        offsets_type = np.int64
    buffers = texts.buffers()
    offsets: npt.NDArray[np.int64] = np.frombuffer(buffers[1], dtype=offsets_type)[
        texts.offset : texts.offset + n + 1
    ].astype(np.int64)
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if buffers[2] is not None
        else np.zeros(1, np.uint8)
    )
    starts = offsets[:-1]
    lengths = offsets[1:] - offsets[:-1]
    valid = texts.is_valid().to_numpy(zero_copy_only=False) if texts.null_count else True
    given: Mask = (lengths > 0) & valid
    if not len(data) or not given.any():
        return given, given
    last = len(data) - 1
    long_enough = lengths >= 20
    starts = np.where(long_enough, starts, 0)
    ends = starts + np.where(long_enough, lengths, 20)

    def at(place: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        return np.take(data, np.minimum(place, last))

    c = {i: at(starts + i) for i in (4, 7, 10, 13, 16, 19, 20)}
    zone, colon, sign = at(ends - 1), at(ends - 3), at(ends - 6)
    shaped: Mask = (
        long_enough
        & (c[4] == _DASH)
        & (c[7] == _DASH)
        & ((c[10] == _T) | (c[10] == _SPACE))
        & (c[13] == _COLON)
        & (c[16] == _COLON)
        & (
            ((c[19] == _DOT) & (c[20] >= _ZERO) & (c[20] <= _NINE))
            | (c[19] == _Z)
            | (c[19] == _PLUS)
            | (c[19] == _MINUS)
        )
        & ((zone == _Z) | ((colon == _COLON) & ((sign == _PLUS) | (sign == _MINUS))))
    )
    return given, shaped


def _one_by_one(texts: pa.Array) -> tuple[Times, Mask | None]:
    out = np.full(len(texts), NO_TIME, dtype=np.int64)
    bad = np.zeros(len(texts), dtype=np.bool_)
    for i, value in enumerate(texts.to_pylist()):
        if value is None or value in ("", b""):
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        when = parse_rfc3339(text)
        if when is None:
            bad[i] = True
        else:
            out[i] = to_micros(when)
    return out, bad if bad.any() else None


def bad_line(line: int, text: object) -> ValidationFailed:
    """The 422 for a filter line whose time is not one."""
    shown = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return ValidationFailed(
        f"Line {line}: {shown[:60]!r} is not {RFC3339_RULE}.",
        errors={f"line {line}": [f"The time after the tab must be {RFC3339_RULE}."]},
    )


def check_column(field: pa.Field) -> None:
    """A 422 unless an Arrow field can carry content times: a timestamp with a time zone."""
    if not pa.types.is_timestamp(field.type) or field.type.tz is None:
        raise ValidationFailed(
            f"The Arrow column {field.name!r} is {field.type}; content times must be a "
            "timestamp with a time zone (any unit), e.g. timestamp[us, tz=UTC].",
            errors={field.name: ["Must be a timezone-aware timestamp column."]},
        )


def column_times(column: pa.Array) -> Times:
    """Times from a timezone-aware timestamp column of any unit (null: no time)."""
    unit = column.type.unit
    ints = column.cast(pa.int64())
    if column.null_count:
        ints = pc.fill_null(ints, 0)
    values = ints.to_numpy(zero_copy_only=False)
    if unit == "ns":
        micros = values // 1000
    elif unit == "us":
        micros = values
    else:
        scale = _PER_UNIT[unit]
        # Seconds or milliseconds beyond what microseconds hold are far outside any window.
        limit = np.iinfo(np.int64).max // scale
        micros = np.clip(values, -limit, limit) * scale
    if column.null_count:
        micros = np.where(column.is_valid().to_numpy(zero_copy_only=False), micros, NO_TIME)
    out: Times = micros.astype(np.int64, copy=False)
    return out
