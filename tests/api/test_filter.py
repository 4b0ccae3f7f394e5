"""The streamed filter over HTTP: newline text and Arrow IPC in, only the allowed ones out."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from werkzeug.test import TestResponse

from tests.factories import Api, assert_problem

PURPOSE = "model_training"
ARROW = "application/vnd.apache.arrow.stream"
MILLION = 1_000_000


def filter_text(
    api: Api, body: bytes, *, as_of: int | None = None, content_type: str = "text/plain"
) -> TestResponse:
    """POST newline-separated IDs to the filter as the pipeline."""
    return api.call(
        "POST",
        f"/v1/filter/{PURPOSE}",
        role="pipeline",
        data=body,
        headers={"Content-Type": content_type},
        query_string={} if as_of is None else {"as_of": str(as_of)},
    )


def arrow_body(batches: list[list[Any]], kind: pa.DataType, *, extra: bool = False) -> bytes:
    """An Arrow IPC stream of one ID column (plus a second one if extra), batch by batch."""
    fields = [pa.field("user_id", kind)] + ([pa.field("note", pa.string())] if extra else [])
    schema = pa.schema(fields)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for rows in batches:
            columns = [pa.array(rows, kind)] + ([pa.array(["n"] * len(rows))] if extra else [])
            writer.write_batch(pa.record_batch(columns, schema=schema))
    return bytes(sink.getvalue().to_pybytes())


def filter_arrow(api: Any, body: bytes, *, as_of: int | None = None) -> TestResponse:
    """POST an Arrow IPC stream to the filter as the pipeline."""
    return filter_text(api, body, as_of=as_of, content_type=ARROW)


def masks(resp: TestResponse) -> list[list[bool]]:
    """The boolean `allowed` column of each batch of an Arrow answer."""
    assert resp.status_code == 200, resp.get_data()[:500]
    assert resp.mimetype == ARROW
    reader = pa.ipc.open_stream(resp.get_data())
    assert reader.schema.names == ["allowed"]
    assert reader.schema.field(0).type == pa.bool_()
    return [batch.column(0).to_pylist() for batch in reader]


def head(api: Any) -> int:
    """The ledger head, as the change feed reports it."""
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


@pytest.fixture
def known(api: Any) -> None:
    """g1, g2 granted (by default, by choice); d1, d2 denied (by default, by choice); x erased."""
    api.purpose(defaults={"EEA": "denied", "*": "granted"}, unknown_subject="denied")
    api.user("g1", jurisdiction="US")
    api.choose("g2", "granted")
    api.user("d1", jurisdiction="DE")
    api.choose("d2", "denied")
    api.choose("x", "granted")
    assert api.call("DELETE", "/v1/users/x", role="app").status_code == 200


def permissive_unknown(api: Any) -> None:
    """Make never-seen IDs granted, so only well-formedness keeps junk out of the answer."""
    resp = api.call("PATCH", f"/v1/purposes/{PURPOSE}", json={"unknown_subject": "granted"})
    assert resp.status_code == 200


# --- text ----------------------------------------------------------------------------------------


def test_the_allowed_ids_come_back_in_input_order_with_duplicates_kept(
    api: Any, known: None
) -> None:
    body = b"g2\nnever\ng1\nd1\ng2\nx\ng2\nd2\ng1\n"
    resp = filter_text(api, body)
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert resp.get_data() == b"g2\ng1\ng2\ng2\ng1\n"


def test_a_last_line_without_a_newline_is_still_read(api: Any, known: None) -> None:
    assert filter_text(api, b"d1\ng1\ng2").get_data() == b"g1\ng2\n"


def test_malformed_blank_crlf_and_non_ascii_lines_are_never_emitted(api: Any, known: None) -> None:
    permissive_unknown(api)
    lines = [
        b"g1\r",  # a CRLF line ending: the ID is fine
        b"",
        b"   ",
        b"\r",
        b" g1",
        b"g1 ",
        b"\tg1",
        b"g\xc3\xbc",  # g-umlaut-u in UTF-8
        "g\uff11".encode(),  # fullwidth digit one
        b"\xff\xfe",
        b"g1\x00",
        b"g1\rg2",
        b"g1,g2",
        b"g1;",
        b"a" * 65,
        b"newcomer",  # well-formed and never seen: granted by the permissive unknown policy
        b"x",  # erased: never allowed
        b"g2",
    ]
    resp = filter_text(api, b"\n".join(lines) + b"\r\n")
    assert resp.status_code == 200
    assert resp.get_data() == b"g1\nnewcomer\ng2\n"


def test_an_empty_body_gives_an_empty_answer_with_the_as_of_header(api: Any, known: None) -> None:
    resp = filter_text(api, b"")
    assert (resp.status_code, resp.get_data()) == (200, b"")
    assert resp.headers["Consent-As-Of"] == str(head(api))


def test_the_consent_as_of_header_is_the_head_or_the_pinned_seq(api: Any, known: None) -> None:
    pinned = head(api)
    api.choose("g1", "denied")
    api.choose("d1", "granted")

    now = filter_text(api, b"g1\nd1\n")
    assert now.headers["Consent-As-Of"] == str(head(api)) != str(pinned)
    assert now.get_data() == b"d1\n"
    then = filter_text(api, b"g1\nd1\n", as_of=pinned)
    assert then.headers["Consent-As-Of"] == str(pinned)
    assert then.get_data() == b"g1\n"


def test_more_ids_than_one_internal_chunk_keep_their_order(api: Any, known: None) -> None:
    ids = [
        b"g1" if i % 7_001 == 0 else b"g2" if i % 5_003 == 0 else b"u%d" % i for i in range(60_000)
    ]
    expected = b"".join(u + b"\n" for u in ids if u in (b"g1", b"g2"))
    resp = filter_text(api, b"\n".join(ids) + b"\n")
    assert resp.get_data() == expected


def million_ids(granted: list[bytes], denied: list[bytes]) -> tuple[bytes, bytes]:
    """A million lines, mostly never-seen IDs with known ones among them, and the answer due."""
    lines: list[bytes] = []
    kept: list[bytes] = []
    for i in range(MILLION):
        if i % 97 == 0:
            user_id = granted[(i // 97) % len(granted)]
            kept.append(user_id)
        elif i % 89 == 0:
            user_id = denied[(i // 89) % len(denied)]
        else:
            user_id = b"unknown-%07d" % i
        lines.append(user_id)
    return b"\n".join(lines) + b"\n", b"".join(u + b"\n" for u in kept)


def test_a_million_ids_stream_through_with_exactly_the_allowed_ones_back(api: Any) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    granted = [b"granted-%02d" % i for i in range(20)]
    denied = [b"denied-%02d" % i for i in range(10)]
    for user_id in granted:
        api.user(user_id.decode(), jurisdiction="US")
    for user_id in denied:
        api.user(user_id.decode(), jurisdiction="FR")
    body, expected = million_ids(granted, denied)

    resp = filter_text(api, body)
    answer = resp.get_data()

    assert resp.status_code == 200, answer[:500]
    assert resp.headers["Consent-As-Of"] == str(head(api))
    assert answer.count(b"\n") == MILLION // 97 + 1
    assert answer == expected


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", "text/csv"]
)
def test_a_body_of_another_media_type_is_a_415(api: Any, known: None, content_type: str) -> None:
    resp = filter_text(api, b'["g1"]', content_type=content_type)
    assert_problem(resp, 415)


def test_a_filter_for_an_unknown_purpose_or_bad_as_of_fails_before_streaming(
    api: Any, known: None
) -> None:
    resp = api.call(
        "POST",
        "/v1/filter/nope_purpose",
        role="pipeline",
        data=b"g1\n",
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(resp, 404)
    assert_problem(filter_text(api, b"g1\n", as_of=head(api) + 1), 422)
    bad = api.call(
        "POST",
        f"/v1/filter/{PURPOSE}?as_of=soon",
        role="pipeline",
        data=b"g1\n",
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(bad, 422)


def test_only_pipeline_keys_may_filter(api: Any, known: None) -> None:
    for role in ("app", "support"):
        resp = api.call(
            "POST",
            f"/v1/filter/{PURPOSE}",
            role=role,
            data=b"g1\n",
            headers={"Content-Type": "text/plain"},
        )
        assert_problem(resp, 403)


# --- Arrow ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()], ids=["string", "large_string"])
def test_an_arrow_string_column_gets_an_aligned_allowed_mask(
    api: Any, known: None, kind: pa.DataType
) -> None:
    permissive_unknown(api)
    ids = ["g1", "d1", "newcomer", None, "bad id", "x", "g\u00fc", "", "g2", "g1"]
    resp = filter_arrow(api, arrow_body([ids], kind))
    assert resp.headers["Consent-As-Of"] == str(head(api))
    assert masks(resp) == [[True, False, True, False, False, False, False, False, True, True]]


def test_an_arrow_int64_column_is_read_as_numeric_ids(api: Any, known: None) -> None:
    api.user("1001", jurisdiction="US")
    api.choose("1002", "denied")
    api.choose("42", "granted")
    ids = [1001, 1002, 1003, None, 42, 1001]
    resp = filter_arrow(api, arrow_body([ids], pa.int64()))
    assert masks(resp) == [[True, False, False, False, True, True]]


def test_nulls_and_negative_integers_in_an_arrow_column_are_never_allowed(
    api: Any, known: None
) -> None:
    """Numeric IDs are digit strings: -7 is not the (valid) string ID '-7'."""
    permissive_unknown(api)
    api.choose("-7", "granted")
    api.choose("7", "granted")
    resp = filter_arrow(api, arrow_body([[7, -7, None, -1001, 8]], pa.int64()))
    assert masks(resp) == [[True, False, False, False, True]]


def test_several_arrow_batches_are_answered_batch_by_batch(api: Any, known: None) -> None:
    batches: list[list[Any]] = [["g1", "never"], [], ["d1", "g1", "g2"], ["x"]]
    resp = filter_arrow(api, arrow_body(batches, pa.string()))
    answer = masks(resp)
    assert answer == [[True, False], [], [False, True, True], [False]]
    assert [len(m) for m in answer] == [len(b) for b in batches]
    assert sum(answer, []) == [True, False, False, True, True, False]


def test_an_arrow_batch_larger_than_one_internal_chunk_stays_aligned(api: Any, known: None) -> None:
    ids = ["g2" if i % 9_973 == 0 else f"u{i}" for i in range(25_000)]
    (answer,) = masks(filter_arrow(api, arrow_body([ids], pa.string())))
    assert [i for i, ok in enumerate(answer) if ok] == [0, 9_973, 19_946]


def test_an_arrow_filter_can_be_pinned(api: Any, known: None) -> None:
    pinned = head(api)
    api.choose("g1", "denied")
    resp = filter_arrow(api, arrow_body([["g1", "g2"]], pa.string()), as_of=pinned)
    assert resp.headers["Consent-As-Of"] == str(pinned)
    assert masks(resp) == [[True, True]]
    assert masks(filter_arrow(api, arrow_body([["g1", "g2"]], pa.string()))) == [[False, True]]


def test_an_arrow_stream_with_two_columns_is_a_422(api: Any, known: None) -> None:
    resp = filter_arrow(api, arrow_body([["g1"]], pa.string(), extra=True))
    body = assert_problem(resp, 422)
    assert "column" in body["detail"]


@pytest.mark.parametrize(
    "body",
    [b"g1\ng2\n", b"", b"\xff\xff\xff\xff\x10\x00\x00\x00garbage"],
    ids=["text", "empty", "junk"],
)
def test_a_body_that_is_not_arrow_with_the_arrow_type_is_a_422(
    api: Any, known: None, body: bytes
) -> None:
    assert_problem(filter_arrow(api, body), 422)


@pytest.mark.parametrize(
    ("kind", "rows"),
    [(pa.float64(), [1001.0]), (pa.bool_(), [True]), (pa.binary(), [b"g1"])],
    ids=["float64", "bool", "binary"],
)
def test_an_arrow_column_of_an_unsupported_type_is_a_422(
    api: Any, known: None, kind: pa.DataType, rows: list[Any]
) -> None:
    body = assert_problem(filter_arrow(api, arrow_body([rows], kind)), 422)
    assert str(kind) in body["detail"]
