"""Content times as the read paths take them: RFC 3339 with an offset, text and Arrow columns,
all as microseconds since the epoch, with NO_TIME where none was given."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from service.domain.clock import from_micros, parse_rfc3339, to_micros
from service.domain.errors import ValidationFailed
from service.readindex.index import NO_TIME
from service.reads import content_times

MIDNIGHT = datetime(2024, 1, 1, tzinfo=UTC)


FORMS = [
    ("2024-01-01T00:00:00Z", MIDNIGHT),
    ("2024-01-01t01:00:00+01:00", MIDNIGHT),
    ("2023-12-31 23:00:00-01:00", MIDNIGHT),
    ("2024-01-01T00:00:00.000000999z", MIDNIGHT),  # beyond microseconds: floored
    ("2024-01-01T00:00:00", None),  # no offset
    ("2024-01-01", None),
    ("2024-01-01T00:00Z", None),  # no seconds
    ("2024-01-01T00:00:00+0100", None),
    ("2024-02-30T00:00:00Z", None),  # no such day
    ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC
    ("yesterday", None),
    ("2024-01-01T00:00:00.Z", None),
    ("2024-01-01T00:00:00+01", None),
    ("2024-01-01T24:00:00Z", None),
    ("2024-01-01T00:00:60Z", None),
    ("2024-01-01T00:00:00+24:00", None),
    ("2024-01-01T00:00:00.1234567891Z", None),
    ("2024-01-01T00:00:00Zjunk+01:00", None),
    ("2024-01-01T00:00:00.5-00:30", datetime(2024, 1, 1, 0, 30, 0, 500000, tzinfo=UTC)),
]


@pytest.mark.parametrize(("text", "expected"), FORMS)
def test_only_rfc_3339_times_with_an_offset_are_read(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


def test_the_vectorised_reading_of_text_times_agrees_with_the_one_by_one_rule() -> None:
    texts = [t for t, _ in FORMS]
    for column in (pa.array(texts), pa.array([t.encode() for t in texts], pa.binary())):
        for part in (column, column.slice(3)):  # a sliced array reads its own offsets
            times, bad = content_times.parse_texts(part)
            expected = [e for _, e in FORMS][len(texts) - len(part) :]
            assert bad is not None
            assert bad.tolist() == [e is None for e in expected]
            assert times.tolist() == [NO_TIME if e is None else to_micros(e) for e in expected]
    good = ["2024-01-01T00:00:00Z", "2023-12-31 23:00:00-01:00", "2024-01-01T01:00:00.1+01:00"]
    times, bad = content_times.parse_texts(pa.array([*good, None, ""]))
    assert bad is None
    assert (
        times.tolist()
        == [to_micros(MIDNIGHT)] * 2 + [to_micros(MIDNIGHT) + 100_000] + [NO_TIME] * 2
    )


def test_microseconds_round_trip_before_and_after_the_epoch() -> None:
    for when in (MIDNIGHT, datetime(1900, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)):
        assert from_micros(to_micros(when)) == when
    assert to_micros(datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)) == 1


def test_a_single_content_time_that_is_not_one_is_a_422_naming_the_field() -> None:
    assert content_times.one(None) is None
    assert content_times.one("2024-01-01T00:00:00Z") == MIDNIGHT
    with pytest.raises(ValidationFailed) as raised:
        content_times.one("2024-01-01T00:00:00")
    assert set(raised.value.errors or {}) == {"content_time"}


def test_aligned_times_must_match_the_ids_one_for_one() -> None:
    times = content_times.aligned(["2024-01-01T00:00:00Z", None], 2)
    assert times is not None
    assert times.tolist() == [to_micros(MIDNIGHT), NO_TIME]
    assert content_times.aligned(None, 3) is None
    with pytest.raises(ValidationFailed) as raised:
        content_times.aligned(["2024-01-01T00:00:00Z"], 2)
    assert set(raised.value.errors or {}) == {"content_times"}
    with pytest.raises(ValidationFailed) as raised:
        content_times.aligned([None, "soon", 7], 3)
    assert set(raised.value.errors or {}) == {"content_times.1", "content_times.2"}


def test_text_times_are_read_vectorised_and_bad_ones_are_pointed_at() -> None:
    texts = pa.array(["2024-01-01T00:00:00Z", "", None, "2024-01-01T01:00:00.5+01:00"])
    times, bad = content_times.parse_texts(texts)
    assert bad is None
    assert times.tolist() == [to_micros(MIDNIGHT), NO_TIME, NO_TIME, to_micros(MIDNIGHT) + 500_000]
    times, bad = content_times.parse_texts(
        pa.array([b"2024-01-01T00:00:00z", b"noon", b"\xff", b"1500-01-01T00:00:00Z"], pa.binary())
    )
    assert bad is not None
    assert bad.tolist() == [False, True, True, False]
    assert times[0] == to_micros(MIDNIGHT)
    assert times[3] == to_micros(datetime(1500, 1, 1, tzinfo=UTC))  # outside Arrow's ns range


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_a_timestamp_column_of_any_unit_becomes_microseconds(unit: str) -> None:
    column = pa.array([MIDNIGHT, None], pa.timestamp(unit, "Europe/Paris"))
    assert content_times.column_times(column).tolist() == [to_micros(MIDNIGHT), NO_TIME]


def test_nanoseconds_before_the_epoch_are_floored_not_truncated() -> None:
    column = pa.array(np.array([-1], dtype=np.int64), pa.int64()).cast(pa.timestamp("ns", "UTC"))
    assert content_times.column_times(column).tolist() == [-1]


@pytest.mark.parametrize(
    "kind", [pa.timestamp("us"), pa.string(), pa.int64(), pa.date32()], ids=str
)
def test_a_time_column_must_be_a_timezone_aware_timestamp(kind: pa.DataType) -> None:
    with pytest.raises(ValidationFailed):
        content_times.check_column(pa.field("content_time", kind))
    content_times.check_column(pa.field("content_time", pa.timestamp("ms", "UTC")))
