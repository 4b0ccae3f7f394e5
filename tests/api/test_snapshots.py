"""Snapshots over HTTP: every known subject in the allowed or denied set: CSV, NDJSON, Parquet."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flask import Flask
from werkzeug.test import TestResponse

from service.domain.events import SubjectRegistered
from service.ledger.transaction import Actor, LedgerWrite
from service.runtime.extensions import db
from service.runtime.models import Subject
from tests.factories import assert_problem

PURPOSE = "model_training"
MEDIA_TYPES = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
ALLOWED = {"B": "default", "_": "choice"}
DENIED = {"a": "default", "1": "override", "A-1": "erased", "z9": "choice"}


def snapshot(
    api: Any, set_name: str = "allowed", fmt: str = "csv", as_of: int | None = None
) -> TestResponse:
    """GET a snapshot as the pipeline."""
    query: dict[str, str] = {"set": set_name, "format": fmt}
    if as_of is not None:
        query["as_of"] = str(as_of)
    resp: TestResponse = api.call(
        "GET", f"/v1/snapshots/{PURPOSE}", role="pipeline", query_string=query
    )
    return resp


def rows(resp: TestResponse, fmt: str) -> list[tuple[str, str]]:
    """(user_id, basis) rows of a snapshot answer, in the order they were sent."""
    assert resp.status_code == 200, resp.get_data()[:500]
    assert resp.mimetype == MEDIA_TYPES[fmt]
    data = resp.get_data()
    if fmt == "csv":
        lines = list(csv.reader(io.StringIO(data.decode())))
        assert lines[0] == ["user_id", "basis"]
        return [(u, b) for u, b in lines[1:]]
    if fmt == "ndjson":
        docs = [json.loads(line) for line in data.decode().splitlines()]
        assert all(set(d) == {"user_id", "basis"} for d in docs)
        return [(d["user_id"], d["basis"]) for d in docs]
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == ["user_id", "basis"]
    assert table.schema.field("user_id").type == pa.string()
    return list(
        zip(table.column("user_id").to_pylist(), table.column("basis").to_pylist(), strict=True)
    )


def head(api: Any) -> int:
    """The ledger head, as the change feed reports it."""
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


def byte_order(ids: list[str]) -> list[str]:
    """IDs sorted by their bytes, as Parquet snapshots must be."""
    return sorted(ids, key=lambda u: u.encode())


@pytest.fixture
def world(api: Any) -> dict[str, int]:
    """Subjects in both sets with every basis, and IDs only looked up; returns the override id."""
    api.purpose(defaults={"EEA": "denied", "*": "granted"}, unknown_subject="denied")
    api.user("B", jurisdiction="US")
    api.user("a", jurisdiction="DE")
    api.user("_", jurisdiction="DE")
    api.choose("_", "granted")
    api.user("1", jurisdiction="US")
    override = api.override("1", "denied").get_json()["id"]
    api.choose("A-1", "granted")
    assert api.call("DELETE", "/v1/users/A-1", role="app").status_code == 200
    api.choose("z9", "denied")
    # Looking IDs up registers nobody: they must not appear in any snapshot.
    assert api.call("GET", f"/v1/lookup/{PURPOSE}/ghost", role="pipeline").status_code == 200
    batch = api.call("POST", f"/v1/lookup/{PURPOSE}", role="pipeline", json={"user_ids": ["g2"]})
    assert batch.status_code == 200
    return {"override": override}


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_allowed_and_denied_snapshots_partition_every_known_subject(
    api: Any, world: dict[str, int], fmt: str
) -> None:
    allowed = rows(snapshot(api, "allowed", fmt), fmt)
    denied = rows(snapshot(api, "denied", fmt), fmt)
    assert dict(allowed) == ALLOWED
    assert dict(denied) == DENIED
    assert len(allowed) == len(ALLOWED)
    assert len(denied) == len(DENIED)
    assert not {u for u, _ in allowed} & {u for u, _ in denied}


def test_a_csv_snapshot_starts_with_its_header(api: Any, world: dict[str, int]) -> None:
    data = snapshot(api, "allowed", "csv").get_data(as_text=True)
    assert data.splitlines()[0] == "user_id,basis"
    assert set(data.splitlines()[1:]) == {"B,default", "_,choice"}


def test_a_parquet_snapshot_is_sorted_by_user_id_in_byte_order(api: Any) -> None:
    api.purpose(defaults={"*": "granted"})
    ids = ["B", "a", "_", "1", "A-1", "b.2", "Z", "0:9", "@x", "-"]
    for user_id in ids:
        api.user(user_id, jurisdiction="US")
    table = rows(snapshot(api, "allowed", "parquet"), "parquet")
    assert [u for u, _ in table] == byte_order(ids)
    assert [u for u, _ in table][:6] == ["-", "0:9", "1", "@x", "A-1", "B"]


def test_a_snapshot_of_a_purpose_nobody_is_in_is_empty_but_well_formed(api: Any) -> None:
    api.purpose()
    assert rows(snapshot(api, "allowed", "csv"), "csv") == []
    assert rows(snapshot(api, "denied", "ndjson"), "ndjson") == []
    assert rows(snapshot(api, "allowed", "parquet"), "parquet") == []


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_the_consent_as_of_header_is_the_head_or_the_pinned_seq(
    api: Any, world: dict[str, int], fmt: str
) -> None:
    now = snapshot(api, "allowed", fmt)
    assert now.headers["Consent-As-Of"] == str(head(api))
    pinned = head(api) - 3
    assert snapshot(api, "denied", fmt, as_of=pinned).headers["Consent-As-Of"] == str(pinned)


def test_a_snapshot_as_of_an_earlier_seq_shows_the_sets_as_they_were(
    api: Any, world: dict[str, int]
) -> None:
    events = api.call("GET", "/v1/changes?limit=10000", role="pipeline").get_json()["events"]
    erased_at = next(e["seq"] for e in events if e["kind"] == "subject_erased")
    before = dict(rows(snapshot(api, "allowed", "csv", as_of=erased_at - 1), "csv"))
    assert before == {**ALLOWED, "A-1": "choice"}
    # z9 was not registered yet then.
    assert "z9" not in dict(rows(snapshot(api, "denied", "csv", as_of=erased_at - 1), "csv"))


def test_a_pinned_snapshot_is_the_same_bytes_after_later_writes(
    api: Any, world: dict[str, int]
) -> None:
    pinned = head(api)
    formats = ("csv", "ndjson")
    before = {
        (s, f): snapshot(api, s, f, as_of=pinned).get_data()
        for s in ("allowed", "denied")
        for f in formats
    }
    parquet_before = {
        s: rows(snapshot(api, s, "parquet", as_of=pinned), "parquet") for s in ("allowed", "denied")
    }

    api.choose("B", "denied")
    api.choose("newcomer", "granted")
    api.user("a", jurisdiction="US")
    api.override("_", "denied")
    lift = f"/v1/users/1/overrides/{world['override']}?reason=ticket+closed"
    assert api.call("DELETE", lift, role="support").status_code == 200
    assert api.call("DELETE", "/v1/users/z9", role="app").status_code == 200
    patched = api.call(
        "PATCH", f"/v1/purposes/{PURPOSE}", json={"defaults": {"*": "denied", "DE": "granted"}}
    )
    assert patched.status_code == 200

    for (set_name, fmt), data in before.items():
        assert snapshot(api, set_name, fmt, as_of=pinned).get_data() == data, (set_name, fmt)
    for set_name, table in parquet_before.items():
        assert rows(snapshot(api, set_name, "parquet", as_of=pinned), "parquet") == table
    assert snapshot(api, "allowed", "csv").get_data() != before[("allowed", "csv")]


def register_many(app: Flask, subjects: dict[str, str | None], states: dict[str, str]) -> None:
    """Register many subjects in one ledger write, each with its subject_registered event.

    One transaction instead of one per subject keeps a test of more than a page of subjects
    fast on both databases; the ledger ends as consistent as if each had been PUT.
    """
    with app.app_context(), LedgerWrite(Actor("bulk-import", "app")) as w:
        for user_id, jurisdiction in subjects.items():
            seq = w.head + 1
            db.session.add(
                Subject(
                    user_id=user_id,
                    jurisdiction=jurisdiction,
                    erased=False,
                    registered_seq=seq,
                    updated_seq=seq,
                    created_at=w.at,
                    updated_at=w.at,
                )
            )
            w.append(
                SubjectRegistered(user_id=user_id, purpose=PURPOSE, jurisdiction=jurisdiction),
                before="denied",
                after=states[user_id],
            )


def test_a_snapshot_of_more_than_one_page_lists_every_subject_once_in_order(
    app: Flask, api: Any
) -> None:
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    prefixes = ["A", "a", "_", "1", "Z-", "z:", "B.", "0@"]
    subjects = {
        f"{prefixes[i % len(prefixes)]}{i}": ("DE" if i % 3 == 0 else "US") for i in range(10_250)
    }
    states = {u: ("denied" if j == "DE" else "granted") for u, j in subjects.items()}
    register_many(app, dict(subjects), states)
    api.choose("a1", "denied")  # in the second half of byte order
    states["a1"] = "denied"

    allowed = rows(snapshot(api, "allowed", "parquet"), "parquet")
    denied = rows(snapshot(api, "denied", "csv"), "csv")
    allowed_ids = [u for u, _ in allowed]
    denied_ids = [u for u, _ in denied]
    assert allowed_ids == byte_order([u for u, s in states.items() if s == "granted"])
    assert sorted(denied_ids) == sorted(u for u, s in states.items() if s == "denied")
    assert len(set(allowed_ids)) == len(allowed_ids)
    assert len(set(denied_ids)) == len(denied_ids)
    assert len(allowed_ids) + len(denied_ids) == len(subjects)
    assert dict(denied)["a1"] == "choice"
    ndjson = rows(snapshot(api, "allowed", "ndjson"), "ndjson")
    assert ndjson == allowed


BAD_QUERIES = [
    "set=both",
    "set=",
    "format=xml",
    "format=CSV",
    "format=json",
    "as_of=soon",
    "limit=10",
]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_a_bad_or_unknown_snapshot_query_parameter_is_a_422(
    api: Any, world: dict[str, int], query: str
) -> None:
    resp = api.call("GET", f"/v1/snapshots/{PURPOSE}?{query}", role="pipeline")
    assert_problem(resp, 422)


def test_a_snapshot_beyond_the_head_is_a_422_and_of_an_unknown_purpose_a_404(
    api: Any, world: dict[str, int]
) -> None:
    assert_problem(snapshot(api, as_of=head(api) + 1), 422)
    assert_problem(api.call("GET", "/v1/snapshots/nope_purpose", role="pipeline"), 404)


def test_only_pipeline_keys_may_take_snapshots(api: Any, world: dict[str, int]) -> None:
    for role in ("app", "support"):
        assert_problem(api.call("GET", f"/v1/snapshots/{PURPOSE}", role=role), 403)
