"""Restrictions on every read path, with and without content times: single and batch lookups,
the text and Arrow filters, snapshots, a user's decisions and training runs; the in-memory
index and the database answer alike, at the head and as of earlier seqs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from flask import Flask

from service import create_app
from service.reads import lookups
from service.runtime.extensions import db
from tests.conftest import app_config, clean_database
from tests.factories import Api, assert_problem

PURPOSE = "model_training"
ARROW = "application/vnd.apache.arrow.stream"
INSIDE = "2024-03-01T12:00:00Z"
OUTSIDE = "2024-07-01T00:00:00Z"  # the window's end: outside
# Every subject below is allowed unless a restriction denies it (or it is erased).
SUBJECTS = {"de": "DE", "no": "NO", "us": "US", "br": "BR", "7": "DE", "8": "US", "x": "DE"}
IDS = ["de", "no", "us", "br", "7", "8", "x", "never"]


class World(Api):
    """The client, with the seq before the restrictions and their ids."""

    before: int
    eea: int
    brazil: int


@pytest.fixture(params=["sync", "off"], ids=["index", "database"])
def world(request: pytest.FixtureRequest, template_db: str, tmp_path: Path) -> Iterator[World]:
    """Subjects of DE, NO, US, BR (x erased), never-seen IDs allowed; then a restriction on the
    EEA for content processed in the first half of 2024 and one on BR for any content.

    Served by the in-memory index, or by the database alone.
    """
    app: Flask = create_app(
        {**app_config(clean_database(template_db, tmp_path)), "CONSENT_INDEX": request.param}
    )
    api = World(app, app.test_client())
    api.purpose(defaults={"*": "granted"}, unknown_subject="granted")
    for user_id, jurisdiction in SUBJECTS.items():
        api.user(user_id, jurisdiction=jurisdiction)
    assert api.call("DELETE", "/v1/users/x", role="app").status_code == 200
    api.choose("de", "granted")
    assert api.override("us", "granted").status_code == 201
    api.before = head(api)
    api.eea = restrict(
        api,
        ["EEA"],
        {"from": "2024-01-01T00:00:00Z", "to": OUTSIDE, "time_basis": "processed"},
    )
    api.brazil = restrict(api, ["BR"], None)
    yield api
    with app.app_context():
        db.engine.dispose()


def head(api: Api) -> int:
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


def restrict(api: Api, jurisdictions: list[str], window: dict[str, str] | None) -> int:
    resp = api.call(
        "POST",
        "/v1/restrictions",
        json={
            "authority": "Regulator",
            "instrument": "Order",
            "purposes": [PURPOSE],
            "jurisdictions": jurisdictions,
            "window": window,
            "reason": "court order",
            "ticket": "LEG-1",
        },
    )
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["id"])


def single(api: Api, user_id: str, **query: Any) -> dict[str, Any]:
    resp = api.call("GET", f"/v1/lookup/{PURPOSE}/{user_id}", role="pipeline", query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json())


def allowed_single(api: Api, time: str | None, as_of: int | None = None) -> list[str]:
    query = {k: v for k, v in (("content_time", time), ("as_of", as_of)) if v is not None}
    return [u for u in IDS if single(api, u, **query)["allowed"]]


UNTIMED = ["us", "8", "never"]  # no time: the windowed order denies the EEA too
AT_INSIDE = ["us", "8", "never"]
AT_OUTSIDE = ["de", "no", "us", "7", "8", "never"]  # BR is denied whatever the time
BEFORE = ["de", "no", "us", "br", "7", "8", "never"]


def test_a_single_lookup_answers_for_the_time_given_and_names_the_restriction(
    world: World,
) -> None:
    assert allowed_single(world, None) == UNTIMED
    assert allowed_single(world, INSIDE) == AT_INSIDE
    assert allowed_single(world, OUTSIDE) == AT_OUTSIDE
    assert allowed_single(world, "2024-01-01T00:59:59.999999+01:00") == AT_OUTSIDE  # before from
    assert allowed_single(world, None, as_of=world.before) == BEFORE
    denied = single(world, "de", content_time=INSIDE)
    assert (denied["basis"], denied["restriction_id"]) == ("restriction", world.eea)
    brazil = single(world, "br", content_time=OUTSIDE)
    assert (brazil["basis"], brazil["restriction_id"]) == ("restriction", world.brazil)
    assert single(world, "x")["basis"] == "erased"
    assert single(world, "us", content_time=OUTSIDE)["restriction_id"] is None


@pytest.mark.parametrize(
    "bad", ["2024-03-01T12:00:00", "2024-03-01", "soon", "2024-02-30T00:00:00Z"]
)
def test_a_single_lookup_with_a_time_that_is_not_rfc3339_with_an_offset_is_a_422(
    world: World, bad: str
) -> None:
    resp = world.call(
        "GET", f"/v1/lookup/{PURPOSE}/de", role="pipeline", query_string={"content_time": bad}
    )
    assert set(assert_problem(resp, 422)["errors"]) == {"content_time"}


def batch(api: Api, times: list[Any] | None, **extra: Any) -> Any:
    body: dict[str, Any] = {"user_ids": IDS, **extra}
    if times is not None:
        body["content_times"] = times
    return api.call("POST", f"/v1/lookup/{PURPOSE}", role="pipeline", json=body)


def test_a_batch_takes_a_time_per_id_and_null_for_none(world: World) -> None:
    assert batch(world, None).get_json()["allowed"] == UNTIMED
    assert batch(world, [INSIDE] * len(IDS)).get_json()["allowed"] == AT_INSIDE
    assert batch(world, [OUTSIDE] * len(IDS)).get_json()["allowed"] == AT_OUTSIDE
    mixed = [OUTSIDE, None, OUTSIDE, OUTSIDE, INSIDE, None, None, None]
    assert batch(world, mixed).get_json()["allowed"] == ["de", "us", "8", "never"]
    pinned = batch(world, None, as_of=world.before)
    assert pinned.get_json()["allowed"] == BEFORE


def test_an_id_sent_twice_with_two_times_is_allowed_only_if_both_are(world: World) -> None:
    body = {"user_ids": ["de", "de", "no"], "content_times": [OUTSIDE, INSIDE, OUTSIDE]}
    answer = world.call("POST", f"/v1/lookup/{PURPOSE}", role="pipeline", json=body).get_json()
    assert (answer["allowed"], answer["denied"]) == (["no"], ["de"])


def test_a_batch_with_misaligned_or_bad_times_is_a_422_naming_them(world: World) -> None:
    short = assert_problem(batch(world, [INSIDE]), 422)
    assert set(short["errors"]) == {"content_times"}
    bad = assert_problem(batch(world, [INSIDE, "2024", None, 5, None, None, None, None]), 422)
    assert set(bad["errors"]) == {"content_times.1", "content_times.3"}


def text_filter(api: Api, body: bytes, as_of: int | None = None) -> Any:
    return api.call(
        "POST",
        f"/v1/filter/{PURPOSE}",
        role="pipeline",
        data=body,
        headers={"Content-Type": "text/plain"},
        query_string={} if as_of is None else {"as_of": str(as_of)},
    )


def lines(ids: list[str], time: str | None) -> bytes:
    return b"".join((u if time is None else f"{u}\t{time}").encode() + b"\n" for u in ids)


def test_the_text_filter_reads_a_time_after_a_tab_and_answers_ids_alone(world: World) -> None:
    for time, expected in ((None, UNTIMED), (INSIDE, AT_INSIDE), (OUTSIDE, AT_OUTSIDE)):
        resp = text_filter(world, lines(IDS, time))
        assert resp.status_code == 200, resp.get_data()
        assert resp.get_data().decode().split() == expected
    mixed = b"de\t" + OUTSIDE.encode() + b"\nde\nno\t\r\nno\t" + OUTSIDE.encode() + b"\r\n"
    # A line without a tab, or with an empty time, has no time.
    assert text_filter(world, mixed).get_data() == b"de\nno\n"
    pinned = text_filter(world, lines(IDS, INSIDE), as_of=world.before)
    assert pinned.get_data().decode().split() == BEFORE


def test_a_bad_time_in_the_text_filter_is_a_422_with_its_line_before_anything_is_sent(
    world: World,
) -> None:
    body = lines(["de"], OUTSIDE) + b"no\t2024-03-01 12:00\n" + lines(["us"], None)
    problem = assert_problem(text_filter(world, body), 422)
    assert set(problem["errors"]) == {"line 2"}
    assert "Line 2" in problem["detail"]
    # A malformed ID is dropped whatever follows its tab, as it always was.
    assert text_filter(world, b"\tnoon\nbad id\tx\nus\n").get_data() == b"us\n"


def test_a_bad_time_after_the_answer_began_drops_its_line_as_a_malformed_id(
    world: World,
) -> None:
    from service.reads import lookups

    block = lookups.READ_BLOCK
    first = lines(["us"] * (block // 3 + 1), None)  # more than one read: sent before the rest
    body = first + b"us\tlater\n" + lines(["8"], OUTSIDE)
    resp = text_filter(world, body)
    assert resp.status_code == 200
    assert resp.get_data().decode().split()[-2:] == ["us", "8"]
    assert resp.get_data().count(b"\n") == block // 3 + 2


def arrow_body(ids: pa.Array, times: pa.Array | None, *, name: str = "content_time") -> bytes:
    columns = [ids] if times is None else [times, ids]
    names = ["user_id"] if times is None else [name, "user_id"]
    table = pa.table(columns, names=names)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=3):
            writer.write_batch(batch)
    return sink.getvalue()


def arrow_filter(api: Api, body: bytes) -> Any:
    return api.call(
        "POST",
        f"/v1/filter/{PURPOSE}",
        role="pipeline",
        data=body,
        headers={"Content-Type": ARROW},
    )


def mask(resp: Any) -> list[bool]:
    assert resp.status_code == 200, resp.get_data()[:300]
    return [v for b in pa.ipc.open_stream(resp.get_data()) for v in b.column(0).to_pylist()]


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_the_arrow_filter_reads_a_timezone_aware_content_time_column_of_any_unit(
    world: World, unit: str
) -> None:
    kind = pa.timestamp(unit, "Europe/Paris")
    for time, expected in ((INSIDE, AT_INSIDE), (OUTSIDE, AT_OUTSIDE)):
        times = pa.array([stamp(time)] * len(IDS), kind)
        got = mask(arrow_filter(world, arrow_body(pa.array(IDS), times)))
        assert [u for u, ok in zip(IDS, got, strict=True) if ok] == expected
    nulls = pa.array([None] * len(IDS), kind)
    got = mask(arrow_filter(world, arrow_body(pa.array(IDS), nulls)))
    assert [u for u, ok in zip(IDS, got, strict=True) if ok] == UNTIMED


def test_numeric_ids_in_arrow_take_their_times_too(world: World) -> None:
    times = pa.array(
        [stamp(INSIDE), stamp(OUTSIDE), None, stamp(OUTSIDE)], pa.timestamp("ms", "UTC")
    )
    got = mask(arrow_filter(world, arrow_body(pa.array([7, 7, 8, 99], pa.int64()), times)))
    assert got == [False, True, True, True]
    untimed = mask(arrow_filter(world, arrow_body(pa.array([7, 8], pa.int64()), None)))
    assert untimed == [False, True]


def test_a_batch_answered_in_slices_is_one_answer_aligned_to_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge batch is worked a slice at a time, each slice with its own times; the answer is
    still one batch per input batch."""
    times = pa.array([stamp(INSIDE), stamp(OUTSIDE), None] * 3, pa.timestamp("ms", "UTC"))
    body = arrow_body(pa.array([7] * 9, pa.int64()), times)  # batches of 3, 3 and 3 rows
    whole = mask(arrow_filter(world, body))
    monkeypatch.setattr(lookups, "ARROW_SLICE", 2)
    resp = arrow_filter(world, body)
    assert [b.num_rows for b in pa.ipc.open_stream(resp.get_data())] == [3, 3, 3]
    assert mask(resp) == whole == [False, True, False] * 3


@pytest.mark.parametrize(
    ("times", "name"),
    [
        (pa.array([datetime(2024, 1, 1)] * 8, pa.timestamp("us")), "content_time"),
        (pa.array([INSIDE] * 8), "content_time"),
        (pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 8, pa.timestamp("us", "UTC")), "note"),
    ],
    ids=["naive", "text", "misnamed"],
)
def test_an_arrow_time_column_must_be_an_aware_timestamp_named_content_time(
    world: World, times: pa.Array, name: str
) -> None:
    problem = assert_problem(arrow_filter(world, arrow_body(pa.array(IDS), times, name=name)), 422)
    assert "column" in problem["detail"]


def snapshot(api: Api, set_name: str, as_of: int | None = None) -> dict[str, str]:
    query = {"set": set_name, "format": "csv"}
    if as_of is not None:
        query["as_of"] = str(as_of)
    resp = api.call("GET", f"/v1/snapshots/{PURPOSE}", role="pipeline", query_string=query)
    assert resp.status_code == 200, resp.get_data()
    return {r["user_id"]: r["basis"] for r in csv.DictReader(io.StringIO(resp.get_data(True)))}


def test_a_snapshot_puts_subjects_of_a_windowed_restriction_in_the_denied_set(
    world: World,
) -> None:
    assert snapshot(world, "denied") == {
        "de": "restriction",
        "no": "restriction",
        "7": "restriction",
        "br": "restriction",
        "x": "erased",
    }
    assert snapshot(world, "allowed") == {"us": "override", "8": "default"}
    before = world.before
    assert snapshot(world, "denied", as_of=before) == {"x": "erased"}


def test_a_users_decisions_name_the_restriction(world: World) -> None:
    decision = world.consent("de")
    assert (decision["basis"], decision["restriction_id"]) == ("restriction", world.eea)
    subject = world.call("GET", "/v1/users/br", role="support").get_json()
    assert subject["consents"][0]["restriction_id"] == world.brazil


def test_lifting_restores_the_answers_and_earlier_as_of_keeps_the_restricted_ones(
    world: World,
) -> None:
    restricted = head(world)
    for rid in (world.eea, world.brazil):
        resp = world.call("DELETE", f"/v1/restrictions/{rid}", query_string={"reason": "over"})
        assert resp.status_code == 200
    assert allowed_single(world, None) == BEFORE
    assert batch(world, None, as_of=restricted).get_json()["allowed"] == UNTIMED
    assert text_filter(world, lines(IDS, None)).get_data().decode().split() == BEFORE
    assert snapshot(world, "denied", as_of=restricted)["br"] == "restriction"
    assert world.consent("de")["basis"] == "choice"


def test_a_restriction_placed_after_a_run_makes_its_matching_members_affected(
    world: World,
) -> None:
    run = world.call(
        "POST",
        "/v1/runs",
        role="pipeline",
        json={"name": "run-1", "purpose": PURPOSE, "as_of": world.before},
    )
    assert run.status_code == 201, run.get_json()
    run_id = run.get_json()["id"]
    members = world.call(
        "PUT",
        f"/v1/runs/{run_id}/members",
        role="pipeline",
        data=b"de\nus\nbr\n8\n",
        headers={"Content-Type": "text/plain"},
    )
    assert members.status_code == 201, members.get_json()
    events = world.call("GET", "/v1/changes?limit=1000", role="pipeline").get_json()["events"]
    placed = {
        e["data"]["restriction_id"]: e["seq"] for e in events if e["kind"] == "restriction_placed"
    }
    resp = world.call("GET", f"/v1/runs/{run_id}/affected?format=ndjson", role="support")
    rows = [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]
    assert rows == [
        {"user_id": "br", "basis": "restriction", "seq": placed[world.brazil]},
        {"user_id": "de", "basis": "restriction", "seq": placed[world.eea]},
    ]
    world.call("DELETE", f"/v1/restrictions/{world.brazil}?reason=over")
    resp = world.call("GET", f"/v1/runs/{run_id}/affected?format=ndjson", role="support")
    assert [json.loads(line)["user_id"] for line in resp.get_data(as_text=True).splitlines()] == [
        "de"
    ]
