"""The client sends content times as the wire format says, and refuses bad ones before sending.

Against a fake of the service (tests/fake_pipeline.py) that decodes each request the way the
service must and answers as one windowed restriction would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_client import ConsentClient, ContentTimeError
from consent_client.times import TIME_TYPE, parse_text, rfc3339_texts, time_array
from consent_client.wire import CONTENT_TIME_COLUMN, CONTENT_TIMES_FIELD, RFC3339_PATTERN
from tests.fake_pipeline import EEA, INSIDE, OUTSIDE, PURPOSE, RESTRICTION_ID, US, FakePipeline

BERLIN_SUMMER = timezone(timedelta(hours=2))


@pytest.fixture
def fake() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def client(fake: FakePipeline) -> Iterator[ConsentClient]:
    with ConsentClient("http://fake", "token", transport=fake.transport()) as c:
        yield c


# ------------------------------------------------------------------ one decision


def test_a_decision_sends_its_content_time_in_utc_and_carries_the_restriction(
    client: ConsentClient, fake: FakePipeline
) -> None:
    inside = datetime(2024, 7, 1, 14, 0, tzinfo=BERLIN_SUMMER)
    decision = client.decision(PURPOSE, EEA[0], content_time=inside, as_of=40)
    assert fake.sent[0].params == {"as_of": "40", "content_time": "2024-07-01T12:00:00Z"}
    assert decision["allowed"] is False
    assert (decision["basis"], decision["restriction_id"]) == ("restriction", RESTRICTION_ID)
    assert decision["legal_basis"] == "consent"
    outside = client.decision(PURPOSE, EEA[0], content_time=OUTSIDE)
    assert fake.sent[1].params["content_time"] == "2024-09-30T22:00:00Z"
    assert outside["allowed"] is True
    assert "restriction_id" not in outside


def test_a_decision_without_a_time_sends_none_and_a_windowed_restriction_denies_it(
    client: ConsentClient, fake: FakePipeline
) -> None:
    assert client.decision(PURPOSE, EEA[0])["basis"] == "restriction"
    assert fake.sent[0].params == {}
    assert client.decision(PURPOSE, US[0])["allowed"] is True


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (datetime(2024, 7, 1), "naive datetime"),
        ("2024-07-01T00:00:00", "has no offset"),
        ("2024-07-01", "not an RFC 3339 time"),
        ("2024-02-30T00:00:00Z", "no such date"),
        (date(2024, 7, 1), "is a date"),
        ("9999-12-31T23:59:59-01:00", "out of range"),
    ],
)
def test_a_decision_with_a_time_that_is_none_raises_before_anything_is_sent(
    client: ConsentClient, fake: FakePipeline, when: object, reason: str
) -> None:
    with pytest.raises(ContentTimeError, match=reason):
        client.decision(PURPOSE, EEA[0], content_time=when)  # type: ignore[arg-type]
    assert fake.sent == []


# ------------------------------------------------------------------ batch lookups


def test_a_batch_lookup_sends_times_aligned_with_the_ids_and_null_for_none(
    client: ConsentClient, fake: FakePipeline
) -> None:
    ids = [EEA[0], EEA[1], EEA[2], US[0]]
    result = client.lookup(PURPOSE, ids, content_times=[INSIDE, OUTSIDE, None, None])
    body = fake.sent[0].body
    assert body["user_ids"] == ids
    assert body[CONTENT_TIMES_FIELD] == [
        "2024-07-01T12:00:00Z",
        "2024-09-30T22:00:00Z",
        None,
        None,
    ]
    assert result.allowed == [EEA[1], US[0]]
    assert result.denied == [EEA[0], EEA[2]]
    assert result.as_of == 42


def test_one_content_time_applies_to_every_id_of_a_batch(
    client: ConsentClient, fake: FakePipeline
) -> None:
    result = client.lookup(PURPOSE, [EEA[0], US[0]], content_time=OUTSIDE)
    assert fake.sent[0].body[CONTENT_TIMES_FIELD] == ["2024-09-30T22:00:00Z"] * 2
    assert result.allowed == [EEA[0], US[0]]


def test_a_batch_without_times_sends_no_times_field(
    client: ConsentClient, fake: FakePipeline
) -> None:
    result = client.lookup(PURPOSE, [EEA[0], US[0], US[0]])
    assert fake.sent[0].body == {"user_ids": [EEA[0], US[0]]}
    assert (result.allowed, result.denied) == ([US[0]], [EEA[0]])


def test_an_id_asked_at_several_times_is_allowed_only_if_allowed_at_each(
    client: ConsentClient, fake: FakePipeline
) -> None:
    ids = [EEA[0], EEA[0], EEA[1], EEA[1], EEA[0]]
    times = [OUTSIDE, INSIDE, OUTSIDE, OUTSIDE, OUTSIDE]
    result = client.lookup(PURPOSE, ids, content_times=times)
    # The fake, like the ledger, answers an ID once per request: so each request has it once.
    for sent in fake.sent:
        assert len(set(sent.body["user_ids"])) == len(sent.body["user_ids"])
    assert len(fake.sent) == 2
    assert (result.allowed, result.denied) == ([EEA[1]], [EEA[0]])


def test_a_batch_whose_times_do_not_align_or_are_both_kinds_sends_nothing(
    client: ConsentClient, fake: FakePipeline
) -> None:
    with pytest.raises(ContentTimeError, match="2 content times for 3 IDs"):
        client.lookup(PURPOSE, [US[0], US[1], US[2]], content_times=[INSIDE, INSIDE])
    with pytest.raises(ContentTimeError, match="not both"):
        client.lookup(PURPOSE, [US[0]], content_time=INSIDE, content_times=[INSIDE])
    with pytest.raises(ContentTimeError, match="content time 1: .* has no offset"):
        client.lookup(PURPOSE, [US[0], US[1]], content_times=[INSIDE, "2024-07-01 00:00:00"])
    assert fake.sent == []


# ------------------------------------------------------------------ text filter


def test_the_text_filter_sends_id_tab_time_lines_and_a_bare_id_for_no_time(
    fake: FakePipeline,
) -> None:
    ids = [EEA[0], US[0], EEA[1], EEA[2], US[1]]
    times = [INSIDE, INSIDE, OUTSIDE, None, None]
    with ConsentClient("http://fake", "t", transport=fake.transport(), filter_chunk=2) as c:
        stream = c.filter(PURPOSE, ids, content_times=times)
        assert list(stream) == [US[0], EEA[1], US[1]]
        assert stream.as_of == 42
    assert [s.body for s in fake.sent] == [
        [f"{EEA[0]}\t2024-07-01T12:00:00Z", f"{US[0]}\t2024-07-01T12:00:00Z"],
        [f"{EEA[1]}\t2024-09-30T22:00:00Z", EEA[2]],
        [US[1]],
    ]


def test_the_text_filter_takes_times_from_an_iterator_chunk_by_chunk(
    fake: FakePipeline,
) -> None:
    def times() -> Iterator[str | None]:
        yield from [OUTSIDE, INSIDE, None]

    with ConsentClient("http://fake", "t", transport=fake.transport(), filter_chunk=2) as c:
        assert list(c.filter(PURPOSE, iter([EEA[0], EEA[1], US[0]]), content_times=times())) == [
            EEA[0],
            US[0],
        ]
    assert len(fake.sent) == 2


def test_a_bad_time_anywhere_in_a_list_is_refused_before_the_first_chunk_is_sent(
    fake: FakePipeline,
) -> None:
    ids = US * 3
    times = [OUTSIDE] * (len(ids) - 1) + ["2024-07-01T00:00:00"]
    with ConsentClient("http://fake", "t", transport=fake.transport(), filter_chunk=2) as c:
        with pytest.raises(ContentTimeError, match=f"content time {len(ids) - 1}: .*no offset"):
            c.filter(PURPOSE, ids, content_times=times)
        with pytest.raises(ContentTimeError, match="17 content times for 18 IDs"):
            c.filter(PURPOSE, ids, content_times=times[:-1])
    assert fake.sent == []


def test_an_iterator_of_times_that_ends_early_stops_the_filter_before_that_chunk(
    fake: FakePipeline,
) -> None:
    with ConsentClient("http://fake", "t", transport=fake.transport(), filter_chunk=2) as c:
        stream = c.filter(PURPOSE, iter(US[:3]), content_times=iter([OUTSIDE, OUTSIDE]))
        with pytest.raises(ContentTimeError, match="2 content times for 3 IDs"):
            list(stream)
        bad = c.filter(PURPOSE, iter(US[:3]), content_times=iter([OUTSIDE, OUTSIDE, "x"]))
        with pytest.raises(ContentTimeError, match="content time 2: 'x'"):
            list(bad)
    assert len(fake.sent) == 2  # the first chunk of each; never the one that was wrong


def test_an_id_that_would_break_its_line_is_sent_blank_and_never_allowed(
    client: ConsentClient, fake: FakePipeline
) -> None:
    ids = [f"{US[0]}\t{INSIDE}", f"{US[1]}\n{US[2]}", US[3]]
    assert list(client.filter(PURPOSE, ids, content_times=[None, OUTSIDE, OUTSIDE])) == [US[3]]
    assert fake.sent[0].body == ["", "", f"{US[3]}\t2024-09-30T22:00:00Z"]
    assert list(client.filter(PURPOSE, ids)) == [US[3]]


# ------------------------------------------------------------------ Arrow filter


def test_the_arrow_filter_sends_a_utc_timestamp_column_beside_the_ids_chunk_by_chunk(
    fake: FakePipeline,
) -> None:
    ids = pa.array([int(i) for i in [EEA[0], EEA[1], EEA[2], US[0], US[1]]], pa.int64())
    # Milliseconds in Berlin's summer time: sent as microseconds in UTC, the same instants.
    berlin = pa.array(
        [
            datetime(2024, 7, 1, 14, tzinfo=BERLIN_SUMMER),
            datetime(2024, 10, 1, tzinfo=BERLIN_SUMMER),
            None,
            datetime(2024, 7, 1, tzinfo=BERLIN_SUMMER),
            None,
        ],
        pa.timestamp("ms", "+02:00"),
    )
    with ConsentClient("http://fake", "t", transport=fake.transport(), filter_chunk=2) as c:
        mask, as_of = c.filter_arrow(PURPOSE, ids, content_times=berlin)
    assert mask.to_pylist() == [False, True, False, True, True]
    assert as_of == 42
    batches = [b for s in fake.sent for b in s.body]
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert all(b.schema.names == ["user_id", CONTENT_TIME_COLUMN] for b in batches)
    assert all(b.schema.field(CONTENT_TIME_COLUMN).type == TIME_TYPE for b in batches)
    sent = pa.concat_arrays([b.column(1) for b in batches]).to_pylist()
    assert sent[:2] == [datetime(2024, 7, 1, 12, tzinfo=UTC), datetime(2024, 9, 30, 22, tzinfo=UTC)]
    assert sent[2] is None


@pytest.mark.parametrize(
    "times",
    [
        pa.array([INSIDE, OUTSIDE, None]),
        pa.array([INSIDE, OUTSIDE, None], pa.large_string()).dictionary_encode(),
        pa.chunked_array([[INSIDE], [OUTSIDE, None]]),
        [datetime(2024, 7, 1, 12, tzinfo=UTC), OUTSIDE, None],
    ],
    ids=["strings", "dictionary", "chunked", "python"],
)
def test_the_arrow_filter_takes_times_as_strings_arrays_or_python_values(
    client: ConsentClient, fake: FakePipeline, times: object
) -> None:
    ids = pa.array([EEA[0], EEA[1], EEA[2]])
    mask, _ = client.filter_arrow(PURPOSE, ids, content_times=times)
    assert mask.to_pylist() == [False, True, False]


def test_the_arrow_filter_refuses_naive_timestamps_and_misaligned_times_unsent(
    client: ConsentClient, fake: FakePipeline
) -> None:
    ids = pa.array([EEA[0], EEA[1]])
    naive = pa.array([datetime(2024, 7, 1), None], pa.timestamp("us"))
    with pytest.raises(ContentTimeError, match="without a time zone") as refused:
        client.filter_arrow(PURPOSE, ids, content_times=naive)
    assert refused.value.zoneless
    with pytest.raises(ContentTimeError, match="1 content times for 2 IDs"):
        client.filter_arrow(PURPOSE, ids, content_times=pa.array([INSIDE]))
    with pytest.raises(ContentTimeError, match="Arrow date32"):
        client.filter_arrow(PURPOSE, ids, content_times=pa.array([date(2024, 7, 1), None]))
    with pytest.raises(ContentTimeError, match="content time 1: '2024-13-01T00:00:00Z'"):
        client.filter_arrow(PURPOSE, ids, content_times=pa.array([None, "2024-13-01T00:00:00Z"]))
    assert fake.sent == []


def test_the_arrow_filter_without_times_still_sends_the_ids_alone(
    client: ConsentClient, fake: FakePipeline
) -> None:
    mask, _ = client.filter_arrow(PURPOSE, pa.array([EEA[0], US[0]]))
    assert mask.to_pylist() == [False, True]
    assert fake.sent[0].body[0].schema.names == ["user_id"]


# ------------------------------------------------------------------ reading times


def test_the_client_reads_times_by_the_same_pattern_as_the_ledger() -> None:
    from service.domain.clock import RFC3339_RE

    assert RFC3339_RE.pattern == RFC3339_PATTERN


def test_rfc_3339_variants_read_as_the_same_instant_and_go_out_in_one_form() -> None:
    same = [
        "2024-07-01T12:00:00Z",
        "2024-07-01t12:00:00z",
        "2024-07-01 12:00:00Z",
        "2024-07-01T14:00:00+02:00",
        "2024-07-01T12:00:00.000000000Z",
    ]
    assert rfc3339_texts(time_array(same)) == ["2024-07-01T12:00:00Z"] * len(same)
    assert rfc3339_texts(time_array(pa.array(same))) == ["2024-07-01T12:00:00Z"] * len(same)
    # Microseconds kept (more are cut, as the ledger keeps them), on every time of an array.
    fine = time_array(pa.array(["2024-07-01T12:00:00.123456789Z", "0001-01-01T00:00:00Z"]))
    assert rfc3339_texts(fine) == ["2024-07-01T12:00:00.123456Z", "0001-01-01T00:00:00.000000Z"]


def test_assume_utc_reads_times_without_a_zone_as_utc_and_nothing_else() -> None:
    local = ["2024-07-01T12:00:00", None, "2024-07-01T12:00:00+02:00"]
    expected = ["2024-07-01T12:00:00Z", None, "2024-07-01T10:00:00Z"]
    assert rfc3339_texts(time_array(local, assume_utc=True)) == expected
    assert rfc3339_texts(time_array(pa.array(local), assume_utc=True)) == expected
    naive = pa.array([datetime(2024, 7, 1, 12)], pa.timestamp("s"))
    assert rfc3339_texts(time_array(naive, assume_utc=True)) == ["2024-07-01T12:00:00Z"]
    with pytest.raises(ContentTimeError, match="not an RFC 3339"):
        time_array(["2024-07-01"], assume_utc=True)


def test_times_beyond_what_the_ledger_holds_are_refused_in_every_unit() -> None:
    seconds = pa.array([0, 300_000_000_000], pa.timestamp("s", "UTC"))  # year 11,476
    with pytest.raises(ContentTimeError, match="content time 1: 300000000000 s since 1970"):
        time_array(seconds)
    with pytest.raises(ContentTimeError, match="content time 0: .*out of range"):
        time_array(pa.array(["0001-01-01T00:00:00+01:00"]))
    nanos = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", "UTC"))
    assert rfc3339_texts(time_array(nanos)) == ["2023-11-14T22:13:20.123456Z"]


# Text shaped like RFC 3339 with every part sometimes wrong: the vectorised Arrow reading and
# the one-value reading must agree on what is a time, and on which instant.
_digits = st.integers(min_value=0, max_value=99).map(lambda n: f"{n:02d}")
rfc3339_like = st.builds(
    lambda year, month, day, sep, hh, mm, ss, frac, zone: (
        f"{year:04d}-{month}-{day}{sep}{hh}:{mm}:{ss}{frac}{zone}"
    ),
    st.integers(min_value=0, max_value=9999),
    _digits,
    _digits,
    st.sampled_from(["T", "t", " ", "_"]),
    _digits,
    _digits,
    _digits,
    st.sampled_from(["", ".5", ".123456", ".123456789", "."]),
    st.sampled_from(["Z", "z", "+02:00", "-11:30", "+14:00", "", "+0200", "+25:99"]),
)


@given(st.lists(rfc3339_like, min_size=1, max_size=5))
def test_arrays_and_single_values_read_the_same_times_alike(texts: list[str]) -> None:
    singles: list[str | None] = []
    for text in texts:
        try:
            singles.append(rfc3339_texts(time_array([parse_text(text)]))[0])
        except ContentTimeError:
            singles.append(None)
    if None not in singles:
        assert rfc3339_texts(time_array(pa.array(texts))) == singles
    else:
        with pytest.raises(ContentTimeError) as refused:
            time_array(pa.array(texts))
        assert refused.value.index == singles.index(None)  # the first bad one, named


def test_a_content_time_error_names_the_position_of_the_first_bad_time() -> None:
    with pytest.raises(ContentTimeError) as refused:
        time_array([INSIDE, None, "yesterday", "2024-07-01"])
    assert refused.value.index == 2
    assert re.search(r"'yesterday' is not an RFC 3339 time", str(refused.value))
    assert refused.value.shifted(10).index == 12
