"""Training runs over HTTP: registering, members, violations, affected lists, remediations."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from werkzeug.test import TestResponse

from service.runtime.extensions import db
from tests.factories import Api, assert_problem, ledger_state

ARROW = "application/vnd.apache.arrow.stream"
DATASET = {
    "uri": "s3://lake/posts/2026-12.parquet",
    "sha256": "a" * 64,
    "rows_in": 9,
    "rows_kept": 7,
}


def head(api: Api) -> int:
    """The ledger's head seq, read through the change feed."""
    return int(api.call("GET", "/v1/changes?limit=1", role="pipeline").get_json()["head"])


def register(api: Api, name: str = "run-1", **body: Any) -> dict[str, Any]:
    """Register a run as the pipeline (as of the head unless told)."""
    resp = api.call(
        "POST",
        "/v1/runs",
        role="pipeline",
        json={"name": name, "purpose": "model_training", "as_of": head(api), **body},
    )
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def put_members(api: Api, run_id: int, ids: list[str], *, role: str = "pipeline") -> TestResponse:
    """Send members as newline text."""
    return api.call(
        "PUT",
        f"/v1/runs/{run_id}/members",
        role=role,
        data=("\n".join(ids) + "\n").encode(),
        headers={"Content-Type": "text/plain"},
    )


def arrow_body(column: pa.Array) -> bytes:
    """An Arrow IPC stream of one column, in two batches."""
    sink = io.BytesIO()
    schema = pa.schema([("user_id", column.type)])
    with pa.ipc.new_stream(sink, schema) as writer:
        half = len(column) // 2
        for part in (column[:half], column[half:]):
            writer.write_batch(pa.record_batch([part], schema=schema))
    return sink.getvalue()


def affected(api: Api, run_id: int, query: str = "") -> list[dict[str, Any]]:
    """The affected list as NDJSON rows."""
    resp = api.call("GET", f"/v1/runs/{run_id}/affected?format=ndjson{query}", role="support")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [json.loads(line) for line in resp.get_data(as_text=True).splitlines()]


@pytest.fixture
def world(api: Api) -> Api:
    """A purpose denied in the EEA; u-de (DE) denied by default, u-us and 7 (US) allowed."""
    api.purpose()
    api.user("u-de", jurisdiction="DE")
    api.user("u-us", jurisdiction="US")
    api.user("7", jurisdiction="US")
    return api


def test_a_pipeline_registers_a_run_and_records_its_members_once(world: Api) -> None:
    run = register(world, model="m-7b", dataset=DATASET)
    assert run["members"] is None
    assert run["affected"] is None
    assert run["dataset"] == DATASET
    assert run["model"] == "m-7b"

    resp = put_members(world, run["id"], ["u-us", "7", "u-de", "7", "never-seen"])
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["members"] == 4  # distinct
    assert body["not_allowed"] == 2  # u-de by default, never-seen as unknown
    assert body["affected"] == 2
    assert body["outstanding"] == 2

    before = ledger_state(world.app)
    again = put_members(world, run["id"], ["u-us"])
    assert_problem(again, 409)
    assert ledger_state(world.app) == before

    read = world.call("GET", f"/v1/runs/{run['id']}", role="pipeline").get_json()
    assert read["members"] == 4
    assert read["remediations"] == []
    kinds = [e["kind"] for e in world.events("u-us")]
    assert "run_registered" not in kinds  # run events name no user
    feed = world.call("GET", "/v1/changes?purpose=model_training", role="pipeline").get_json()
    assert [e["kind"] for e in feed["events"] if e["kind"].startswith("run_")] == [
        "run_registered",
        "run_members_recorded",
    ]


def test_violations_are_the_members_not_allowed_as_of_the_runs_as_of(world: Api) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us", "u-de", "never-seen", "7"])
    world.choose("u-de", "granted")  # later: no longer a violation now, but it was one then

    resp = world.call("GET", f"/v1/runs/{run['id']}/violations", role="support")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True) == "never-seen\tunknown\nu-de\tdefault\n"


def test_a_later_revocation_makes_a_member_affected_with_the_event_that_denied_it(
    world: Api,
) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us", "7", "u-de"])
    revoked = world.choose("7", "denied").get_json()["as_of"]
    world.choose("u-us", "denied")
    world.choose("u-us", "granted")  # revoked and granted again: not affected now

    rows = affected(world, run["id"])
    assert rows == [
        {"user_id": "7", "basis": "choice", "seq": revoked},
        {"user_id": "u-de", "basis": "default", "seq": None},  # denied since before as_of
    ]
    text = world.call("GET", f"/v1/runs/{run['id']}/affected", role="pipeline")
    assert text.headers["Consent-As-Of"] == str(head(world))
    assert text.get_data(as_text=True) == f"7\tchoice\t{revoked}\nu-de\tdefault\t\n"


def test_the_affected_list_as_of_a_seq_is_the_same_after_later_writes(world: Api) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us", "7", "u-de"])
    world.choose("7", "denied")
    pinned = head(world)
    first = affected(world, run["id"], f"&as_of={pinned}")
    world.choose("u-us", "denied")
    world.call("DELETE", "/v1/users/u-de", role="app")
    assert affected(world, run["id"], f"&as_of={pinned}") == first
    assert len(affected(world, run["id"])) == 3


def test_erasure_makes_a_member_affected_and_keeps_them_a_member(world: Api) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us"])
    erased = world.call("DELETE", "/v1/users/u-us", role="app")
    assert erased.status_code == 200
    rows = affected(world, run["id"])
    assert [(r["user_id"], r["basis"]) for r in rows] == [("u-us", "erased")]
    assert rows[0]["seq"] == head(world)
    assert world.call("GET", f"/v1/runs/{run['id']}", role="support").get_json()["members"] == 1


def test_a_policy_change_that_denies_a_default_is_the_event_that_affected_them(
    world: Api,
) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us", "7"])
    world.choose("7", "granted")  # their own choice: the policy cannot move them
    resp = world.call("PATCH", "/v1/purposes/model_training", json={"defaults": {"*": "denied"}})
    assert resp.status_code == 200
    assert affected(world, run["id"]) == [
        {"user_id": "u-us", "basis": "default", "seq": head(world)}
    ]


def test_a_remediation_leaves_only_later_denials_outstanding(world: Api) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us", "7", "u-de"])
    world.choose("7", "denied")
    through = head(world)
    world.choose("u-us", "denied")

    before = world.call("GET", f"/v1/runs/{run['id']}", role="support").get_json()
    assert (before["affected"], before["outstanding"]) == (3, 3)
    resp = world.call(
        "POST",
        f"/v1/runs/{run['id']}/remediations",
        role="support",
        json={
            "action": "excluded_from_next",
            "through_seq": through,
            "reason": "next run drops them",
        },
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["action"] == "excluded_from_next"
    after = world.call("GET", f"/v1/runs/{run['id']}", role="support").get_json()
    assert (after["affected"], after["outstanding"]) == (3, 1)
    assert after["remediated_through"] == through
    assert [r["ticket"] for r in after["remediations"]] == [None]
    # As of before the remediation, nothing was handled yet.
    pinned = world.call("GET", f"/v1/runs/{run['id']}?as_of={through}", role="support").get_json()
    assert (pinned["affected"], pinned["outstanding"], pinned["remediations"]) == (2, 2, [])


def test_a_users_runs_are_the_runs_whose_members_include_them(world: Api) -> None:
    first = register(world, "first", model="m-1")
    put_members(world, first["id"], ["u-us", "7"])
    second = register(world, "second", model="m-2")
    put_members(world, second["id"], ["7"])
    register(world, "no-members-yet")
    world.choose("7", "denied")

    resp = world.call("GET", "/v1/users/7/runs", role="support")
    assert resp.status_code == 200
    body = resp.get_json()
    assert [(r["name"], r["model"], r["affected"]) for r in body["runs"]] == [
        ("second", "m-2", True),
        ("first", "m-1", True),
    ]
    assert body["runs"][1]["as_of"] == first["as_of"]
    us = world.call("GET", "/v1/users/u-us/runs", role="pipeline").get_json()
    assert [(r["name"], r["affected"]) for r in us["runs"]] == [("first", False)]
    assert world.call("GET", "/v1/users/nobody/runs", role="support").get_json()["runs"] == []


def test_members_may_come_as_an_arrow_stream_of_int64_or_strings(world: Api) -> None:
    ints = register(world, "ints")
    resp = world.call(
        "PUT",
        f"/v1/runs/{ints['id']}/members",
        role="pipeline",
        data=arrow_body(pa.array([7, 8, 7, 10**19 - 1], pa.uint64())),
        headers={"Content-Type": ARROW},
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["members"] == 3
    texts = register(world, "texts")
    resp = world.call(
        "PUT",
        f"/v1/runs/{texts['id']}/members",
        role="pipeline",
        data=arrow_body(pa.array(["u-us", "7", "007"])),
        headers={"Content-Type": ARROW},
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["members"] == 3
    assert [
        r["name"] for r in world.call("GET", "/v1/users/7/runs", role="support").get_json()["runs"]
    ] == ["texts", "ints"]


@pytest.mark.parametrize(
    ("body", "content_type", "where"),
    [
        (b"u-us\nnot valid!\n7\n\nx\n", "text/plain", ["line 2", "line 4"]),
        (b"u-us\n\xff\xfe\n", "text/plain", ["line 2"]),
        (arrow_body(pa.array([1, None, 3, -4], pa.int64())), ARROW, ["row 2", "row 4"]),
        (arrow_body(pa.array(["a", "b c", None, "d"])), ARROW, ["row 2", "row 3"]),
    ],
    ids=["text", "text-not-utf8", "arrow-int64", "arrow-string"],
)
def test_malformed_members_refuse_the_whole_upload_naming_where_they_are(
    world: Api, body: bytes, content_type: str, where: list[str]
) -> None:
    run = register(world)
    before = ledger_state(world.app)
    resp = world.call(
        "PUT",
        f"/v1/runs/{run['id']}/members",
        role="pipeline",
        data=body,
        headers={"Content-Type": content_type},
    )
    problem = assert_problem(resp, 422)
    assert list(problem["errors"]) == where
    assert where[0] in problem["detail"]
    assert "nothing was recorded" in problem["detail"]
    assert ledger_state(world.app) == before
    assert put_members(world, run["id"], ["u-us"]).status_code == 201


def test_every_bad_input_is_a_precise_problem(world: Api) -> None:
    run = register(world)
    top = head(world)
    cases = [
        (world.call("GET", "/v1/runs/999", role="support"), 404),
        (put_members(world, 999, ["u-us"]), 404),
        (world.call("GET", "/v1/runs/999/affected", role="support"), 404),
        (world.call("GET", f"/v1/runs/{run['id']}/affected", role="support"), 409),
        (world.call("GET", f"/v1/runs/{run['id']}/violations", role="support"), 409),
        (
            world.call(
                "POST",
                f"/v1/runs/{run['id']}/remediations",
                role="support",
                json={"action": "retrained", "through_seq": top, "reason": "too early"},
            ),
            409,
        ),
        (
            world.call(
                "POST",
                "/v1/runs",
                role="pipeline",
                json={"name": "run-1", "purpose": "model_training", "as_of": top},
            ),
            409,
        ),
        (
            world.call(
                "POST",
                "/v1/runs",
                role="pipeline",
                json={"name": "later", "purpose": "model_training", "as_of": top + 5},
            ),
            422,
        ),
        (
            world.call(
                "POST",
                "/v1/runs",
                role="pipeline",
                json={"name": "bad name!", "purpose": "model_training", "as_of": 1},
            ),
            422,
        ),
        (
            world.call(
                "POST",
                "/v1/runs",
                role="pipeline",
                json={"name": "nope", "purpose": "no_such_purpose", "as_of": 1},
            ),
            422,
        ),
        (
            world.call(
                "POST",
                "/v1/runs",
                role="pipeline",
                json={
                    "name": "rows",
                    "purpose": "model_training",
                    "as_of": 1,
                    "dataset": {**DATASET, "rows_kept": 10},
                },
            ),
            422,
        ),
        (world.call("GET", f"/v1/runs/{run['id']}?as_of={run['registered_seq'] - 1}"), 404),
        (world.call("GET", "/v1/runs?limit=0", role="support"), 422),
    ]
    for resp, status in cases:
        assert_problem(resp, status)

    put_members(world, run["id"], ["u-us"])
    beyond = world.call(
        "POST",
        f"/v1/runs/{run['id']}/remediations",
        role="support",
        json={"action": "retrained", "through_seq": head(world) + 1, "reason": "the future"},
    )
    assert "beyond the ledger head" in assert_problem(beyond, 422)["detail"]
    early = world.call(
        "POST",
        f"/v1/runs/{run['id']}/remediations",
        role="support",
        json={"action": "retrained", "through_seq": run["as_of"] - 1, "reason": "the past"},
    )
    assert_problem(early, 422)
    unknown = world.call(
        "POST",
        f"/v1/runs/{run['id']}/remediations",
        role="support",
        json={"action": "forgot", "through_seq": run["as_of"], "reason": "what"},
    )
    assert_problem(unknown, 422)
    wrong_body = world.call(
        "PUT",
        f"/v1/runs/{run['id']}/members",
        role="pipeline",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(wrong_body, 415)


@pytest.mark.parametrize(
    ("method", "path", "roles"),
    [
        ("POST", "/v1/runs", {"pipeline", "admin"}),
        ("GET", "/v1/runs", {"pipeline", "support", "admin"}),
        ("GET", "/v1/runs/{id}", {"pipeline", "support", "admin"}),
        ("PUT", "/v1/runs/{id}/members", {"pipeline", "admin"}),
        ("GET", "/v1/runs/{id}/affected", {"pipeline", "support", "admin"}),
        ("GET", "/v1/runs/{id}/violations", {"pipeline", "support", "admin"}),
        ("GET", "/v1/runs/{id}/lineage", {"pipeline", "support", "admin"}),
        ("POST", "/v1/runs/{id}/remediations", {"support", "admin"}),
        ("GET", "/v1/users/u-us/runs", {"pipeline", "support", "admin"}),
    ],
)
def test_each_role_may_do_only_what_its_table_says(
    world: Api, method: str, path: str, roles: set[str]
) -> None:
    run = register(world)
    for role in ("app", "pipeline", "support", "admin"):
        resp = world.call(method, path.format(id=run["id"]), role=role, json={})
        if role in roles:
            assert resp.status_code != 403, (role, resp.get_json())
        else:
            assert_problem(resp, 403)


def test_runs_are_listed_newest_first_filtered_by_purpose_and_model(world: Api) -> None:
    world.purpose(key="ads_training")
    register(world, "a", model="m-1")
    register(world, "b", model="m-2")
    register(world, "c", model="m-1", purpose="ads_training")

    def names(query: str) -> list[str]:
        page = world.call("GET", f"/v1/runs?{query}", role="support").get_json()
        return [r["name"] for r in page["runs"]]

    assert names("") == ["c", "b", "a"]
    assert names("model=m-1") == ["c", "a"]
    assert names("purpose=model_training") == ["b", "a"]
    first = world.call("GET", "/v1/runs?limit=2", role="support").get_json()
    assert first["has_more"]
    assert [r["name"] for r in first["runs"]] == ["c", "b"]
    assert names(f"limit=2&before={first['next_before']}") == ["a"]
    assert names(f"as_of={first['runs'][1]['registered_seq']}") == ["b", "a"]


@pytest.mark.parametrize("fmt", ["text", "ndjson", "parquet"])
def test_affected_lists_come_in_three_formats_with_the_same_rows(world: Api, fmt: str) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-de", "7", "x:1", "9"])
    world.choose("7", "denied")
    resp = world.call("GET", f"/v1/runs/{run['id']}/affected?format={fmt}", role="support")
    assert resp.status_code == 200
    data = resp.get_data()
    if fmt == "parquet":
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    elif fmt == "ndjson":
        rows = [json.loads(line) for line in data.decode().splitlines()]
    else:
        rows = [
            dict(zip(("user_id", "basis", "seq"), line.split("\t"), strict=True))
            for line in data.decode().splitlines()
        ]
        rows = [{**r, "seq": int(r["seq"]) if r["seq"] else None} for r in rows]
    assert [(r["user_id"], r["basis"]) for r in rows] == [
        ("7", "choice"),
        ("9", "unknown"),
        ("u-de", "default"),
        ("x:1", "unknown"),
    ]


def test_lineage_is_an_openlineage_run_event_that_openlineage_python_accepts(
    world: Api,
) -> None:
    import attr
    from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import dataset_version_dataset
    from openlineage.client.generated.base import InputDatasetFacet
    from openlineage.client.serde import Serde

    @attr.define
    class ConsentLedgerInputDatasetFacet(InputDatasetFacet):
        purpose: str
        as_of: int
        ledger: str
        run_id: int
        members: int
        not_allowed: int
        members_sha256: str

        @staticmethod
        def _get_schema() -> str:
            return str(consent["_schemaURL"])

    run = register(world, "llm", model="m-7b", dataset=DATASET)
    put_members(world, run["id"], ["u-us", "u-de", "7"])
    resp = world.call("GET", f"/v1/runs/{run['id']}/lineage", role="pipeline")
    assert resp.status_code == 200
    event = resp.get_json()
    given = event["inputs"][0]
    consent = given["inputFacets"]["consentLedger"]
    fields = {k: v for k, v in consent.items() if not k.startswith("_")}

    # Built again from openlineage-python's own models (whose validators check the run id is
    # a UUID, the time is ISO 8601, the URIs parse), it serialises to the very same event.
    rebuilt = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=event["eventTime"],
        run=Run(runId=event["run"]["runId"], facets={}),
        job=Job(namespace=event["job"]["namespace"], name=event["job"]["name"], facets={}),
        inputs=[
            InputDataset(
                namespace=given["namespace"],
                name=given["name"],
                facets={
                    "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                        datasetVersion=str(DATASET["sha256"]), producer=event["producer"]
                    )
                },
                inputFacets={
                    "consentLedger": ConsentLedgerInputDatasetFacet(
                        producer=event["producer"], **fields
                    )
                },
            )
        ],
        outputs=[],
        producer=event["producer"],
    )
    assert Serde.to_dict(rebuilt) == event
    assert (given["namespace"], given["name"]) == ("s3://lake", "/posts/2026-12.parquet")
    assert fields["purpose"] == "model_training"
    assert fields["as_of"] == run["as_of"]
    assert (fields["members"], fields["not_allowed"]) == (3, 1)
    assert fields["ledger"] == "http://localhost"
    again = world.call("GET", f"/v1/runs/{run['id']}/lineage", role="pipeline").get_json()
    assert again == event  # the same event every time: the run id is derived, not random


def test_run_tables_are_append_only_in_the_database(world: Api) -> None:
    run = register(world)
    put_members(world, run["id"], ["u-us"])
    with world.app.app_context():
        for statement in (
            "UPDATE runs SET model = 'x'",
            "DELETE FROM runs",
            "UPDATE run_members SET members = 0",
            "DELETE FROM run_members",
        ):
            with (
                pytest.raises(sa.exc.DBAPIError, match="append-only"),
                db.engine.begin() as conn,
            ):
                conn.execute(sa.text(statement))


def test_a_run_may_name_its_answer_by_time_and_gets_the_seq_of_then(world: Api) -> None:
    seq = head(world)
    events = world.call("GET", f"/v1/changes?after={seq - 1}", role="pipeline").get_json()
    when = events["events"][-1]["at"]
    resp = world.call(
        "POST",
        "/v1/runs",
        role="pipeline",
        json={"name": "by-time", "purpose": "model_training", "as_of": when},
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["as_of"] == seq
