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
import pyarrow as pa
import pyarrow.compute as pc

from service.domain.clock import RFC3339_RULE, from_micros, parse_rfc3339, to_micros
from service.domain.errors import ValidationFailed
from service.readindex.codes import Mask
from service.readindex.index import NO_TIME, Times

# Arrow's parser reads a superset of RFC 3339; this keeps to the standard (offset required).
_STRICT = "^" + r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
_STRICT += r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
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
    text is not an RFC 3339 time with an offset (None: nowhere); those get NO_TIME."""
    strings = texts
    if not pa.types.is_string(texts.type):
        try:
            strings = texts.cast(pa.string())
        except pa.ArrowInvalid:  # not UTF-8: certainly no time, found one by one below
            return _one_by_one(texts)
    given = pc.fill_null(pc.not_equal(pc.utf8_length(strings), 0), False)
    strict = pc.fill_null(pc.match_substring_regex(strings, _STRICT), False)
    if not pc.all(pc.or_(pc.invert(given), strict)).as_py():
        return _one_by_one(texts)
    try:
        parsed = pc.cast(pc.if_else(given, strings, None), pa.timestamp("ns", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _one_by_one(texts)  # lower-case t or z, or beyond 1677-2262
    nanos = parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)
    out: Times = np.where(given.to_numpy(zero_copy_only=False), nanos // 1000, NO_TIME)
    return out.astype(np.int64), None


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
    values = np.asarray(pc.fill_null(column.cast(pa.int64()), 0).to_numpy(), dtype=np.int64)
    unit = column.type.unit
    if unit == "ns":
        micros = values // 1000
    else:
        scale = _PER_UNIT[unit]
        # Seconds or milliseconds beyond what microseconds hold are far outside any window.
        limit = np.iinfo(np.int64).max // scale
        micros = np.clip(values, -limit, limit) * scale
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out: Times = np.where(valid, micros, NO_TIME).astype(np.int64)
    return out
