"""Content times sent beside IDs: checked here (each needs an offset) and encoded for the wire.

A time may be an aware `datetime`, an RFC 3339 string with an offset or Z, or None (no time: a
windowed restriction then denies the ID, failing closed). Arrays of times become one Arrow type,
TIME_TYPE (microseconds, UTC), from which the text forms are rendered, so every read path sends
the same instant for the same input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consent_client.wire import RFC3339_PATTERN

TIME_TYPE = pa.timestamp("us", "UTC")

# What the ledger can hold (a Python datetime in UTC), in TIME_TYPE's microseconds since 1970.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // datetime.resolution
_LATEST = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // datetime.resolution

_RFC3339 = re.compile(RFC3339_PATTERN)
# The same date and time without the offset (the pattern's last group): a local time, which
# only `assume_utc` accepts.
_LOCAL_PATTERN = RFC3339_PATTERN.rpartition("(")[0]
_LOCAL = re.compile(_LOCAL_PATTERN)
# Arrow's parser takes at most microseconds; the ledger keeps no more either.
_BEYOND_MICROSECONDS = r"(\.[0-9]{6})[0-9]+"

TIME_RULE = "an RFC 3339 time with an offset or Z, e.g. 2024-06-01T00:00:00Z"
ContentTimes: TypeAlias = Iterable[datetime | str | None] | pa.Array | pa.ChunkedArray


class ContentTimeError(ValueError):
    """A content time that cannot be sent, found before anything was sent.

    `index` is the position (from 0) of the first bad time, or None when the whole input is
    wrong (an Arrow column of the wrong type, times not aligned with the IDs); `reason` says
    what is wrong, without the position; `zoneless` is true when the time (or column) has no
    offset or time zone, which reading with `assume_utc` would accept.
    """

    def __init__(self, reason: str, index: int | None = None, *, zoneless: bool = False) -> None:
        super().__init__(reason if index is None else f"content time {index}: {reason}")
        self.reason = reason
        self.index = index
        self.zoneless = zoneless

    def at(self, index: int) -> ContentTimeError:
        """The same error, at position `index`."""
        return ContentTimeError(self.reason, index, zoneless=self.zoneless)

    def shifted(self, offset: int) -> ContentTimeError:
        """The same error for a slice that starts at `offset` of the whole input."""
        index = None if self.index is None else self.index + offset
        return ContentTimeError(self.reason, index, zoneless=self.zoneless)


def misaligned(ids: int, times: int) -> ContentTimeError:
    """The error for times not aligned with their IDs."""
    return ContentTimeError(f"{times:,} content times for {ids:,} IDs; send one per ID (or None)")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_text(text: str, *, assume_utc: bool = False) -> datetime:
    """One RFC 3339 string as an aware UTC datetime; ContentTimeError (no index) if it is none.

    With `assume_utc`, a time without an offset is read as UTC.
    """
    if not _RFC3339.fullmatch(text):
        if not _LOCAL.fullmatch(text):
            raise ContentTimeError(f"{_shown(text)} is not {TIME_RULE}")
        if not assume_utc:
            raise ContentTimeError(
                f"{_shown(text)} has no offset; add one (Z for UTC)", zoneless=True
            )
        text += "Z"
    try:
        parsed = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ContentTimeError(f"{_shown(text)} is no such date or time") from None
    return _utc(parsed, text)


def _utc(value: datetime, shown: object) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ContentTimeError(f"{_shown(shown)} is out of range in UTC") from None


def content_time(value: object, *, assume_utc: bool = False) -> datetime | None:
    """One content time (aware datetime, RFC 3339 string or None) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_text(value, assume_utc=assume_utc)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            if not assume_utc:
                raise ContentTimeError(
                    f"{_shown(value)} is a naive datetime; give it a tzinfo (e.g. UTC)",
                    zoneless=True,
                )
            value = value.replace(tzinfo=UTC)
        return _utc(value, value)
    if isinstance(value, date):
        raise ContentTimeError(f"{_shown(value)} is a date; a content time needs a time of day")
    raise ContentTimeError(f"{_shown(value)} is no time: give a datetime, {TIME_RULE}, or None")


def time_array(values: ContentTimes, *, assume_utc: bool = False) -> pa.Array:
    """Content times as one TIME_TYPE array (nulls: no time), every one checked.

    Takes an iterable of aware datetimes, RFC 3339 strings and None, or an Arrow array of
    timestamps with a time zone or of RFC 3339 strings. With `assume_utc`, naive datetimes,
    timestamps without a time zone and strings without an offset are read as UTC; without it
    they are refused.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    if isinstance(values, pa.Array):
        return _from_arrow(values, assume_utc)
    if isinstance(values, str | bytes):
        raise ContentTimeError("content times must be one per ID, not a single string")
    times: list[datetime | None] = []
    for index, value in enumerate(values):
        try:
            times.append(content_time(value, assume_utc=assume_utc))
        except ContentTimeError as exc:
            raise exc.at(index) from None
    return pa.array(times, TIME_TYPE)


def _from_arrow(values: pa.Array, assume_utc: bool) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    kind = values.type
    if pa.types.is_null(kind):
        return pa.nulls(len(values), TIME_TYPE)
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            if not assume_utc:
                raise ContentTimeError(
                    f"the times are Arrow {kind}, without a time zone; give the column one "
                    "(e.g. UTC)",
                    zoneless=True,
                )
            values = values.cast(pa.timestamp(kind.unit, "UTC"))  # the same numbers, now UTC
        return _from_timestamps(values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parsed(values.cast(pa.string()), assume_utc)
    raise ContentTimeError(
        f"the times are Arrow {kind}; send timestamps with a time zone or RFC 3339 strings"
    )


def _from_timestamps(values: pa.Array) -> pa.Array:
    """Timestamps with a time zone as TIME_TYPE; refused beyond what the ledger can hold."""
    factor = {"s": 1_000_000, "ms": 1_000, "us": 1}.get(values.type.unit)
    if factor is None:  # nanoseconds (years 1677 to 2262): cut to microseconds, as kept
        return values.cast(TIME_TYPE, safe=False)
    # Checked in the column's own unit, before a cast could overflow.
    _in_range(values.view(pa.int64()), -(-_EARLIEST // factor), _LATEST // factor, values)
    return values.cast(TIME_TYPE)


def _parsed(text: pa.Array, assume_utc: bool) -> pa.Array:
    """RFC 3339 strings as TIME_TYPE, vectorised: Arrow's ISO 8601 parser takes more forms than
    RFC 3339, so the pattern is checked first, and a row Arrow still refuses (a date that does not
    exist) is found and explained by the one-time parser."""
    well_formed = pc.match_substring_regex(text, f"^(?:{RFC3339_PATTERN})$")
    if assume_utc:
        local = pc.match_substring_regex(text, f"^(?:{_LOCAL_PATTERN})$")
        text = pc.if_else(local, pc.binary_join_element_wise(text, "Z", ""), text)
        well_formed = pc.or_(well_formed, local)
    # Up to the first text of the wrong form, parsed; then that text's error, if no time before
    # it was bad: so the error is always the first bad time's.
    first_bad = pc.index(pc.invert(well_formed), True).as_py()
    checked = text if first_bad < 0 else text.slice(0, first_bad)
    normal = pc.ascii_upper(checked)  # what matched the pattern is ASCII
    try:
        times = normal.cast(TIME_TYPE)
    except pa.ArrowInvalid:  # more than microseconds, or a date or time that does not exist
        try:
            cut = pc.replace_substring_regex(
                normal, pattern=_BEYOND_MICROSECONDS, replacement=r"\1"
            )
            times = cut.cast(TIME_TYPE)
        except pa.ArrowInvalid:
            for index in range(len(checked)):
                _explain(checked, index, assume_utc)
            raise  # each row parsed alone: Arrow disagrees with Python, no input's fault
    _in_range(times.view(pa.int64()), _EARLIEST, _LATEST, checked)
    if first_bad >= 0:
        _explain(text, first_bad, assume_utc)
    return times


def _explain(text: pa.Array, index: int, assume_utc: bool) -> None:
    """Raise the ContentTimeError of row `index` (nothing if that row is a good time)."""
    value = text[index].as_py()
    if value is not None:
        try:
            parse_text(value, assume_utc=assume_utc)
        except ContentTimeError as exc:
            raise exc.at(index) from None


def _in_range(numbers: pa.Array, earliest: int, latest: int, shown: pa.Array) -> None:
    """Refuse the first time outside [earliest, latest]: beyond what a Python datetime holds
    (years 1 to 9999 in UTC), so beyond what the ledger can compare."""
    outside = pc.or_(pc.less(numbers, earliest), pc.greater(numbers, latest))
    first = pc.index(outside, True).as_py()
    if first < 0:
        return
    if pa.types.is_timestamp(shown.type):  # no datetime can show it: its number and unit
        what = f"{numbers[first].as_py()} {shown.type.unit} since 1970"
    else:
        what = _shown(shown[first].as_py())
    raise ContentTimeError(f"{what} is out of range in UTC", first)


def rfc3339_texts(times: pa.Array) -> list[str | None]:
    """A TIME_TYPE array as RFC 3339 strings in UTC (None for no time), as text bodies send them.

    Whole seconds when every time is one, else microseconds on each.
    """
    # numpy renders a million in a fraction of the time Arrow's strftime takes.
    micros: npt.NDArray[np.int64] = pc.fill_null(times.view(pa.int64()), 0).to_numpy()
    unit: Literal["s", "us"] = "us" if (micros % 1_000_000).any() else "s"
    instants: npt.NDArray[np.datetime64] = micros.view("datetime64[us]")
    rendered = np.datetime_as_string(instants, unit=unit, timezone="UTC")
    texts: list[str | None] = rendered.tolist()
    if times.null_count:
        for index in np.flatnonzero(times.is_null().to_numpy(zero_copy_only=False)):
            texts[index] = None
    return texts


def rfc3339(value: Any, *, assume_utc: bool = False) -> str:
    """One content time (aware datetime or RFC 3339 string) in the form the wire carries."""
    parsed = content_time(value, assume_utc=assume_utc)
    if parsed is None:
        raise ContentTimeError("a content time is needed here (None means: leave it out)")
    (text,) = rfc3339_texts(pa.array([parsed], TIME_TYPE))
    assert text is not None
    return text
