"""The client's training-run methods against a real gunicorn, and `consent filter --run` as a new
user would run it: filter, revoke, see the run affected, remediate, see it on the user's page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from consent_client import ConsentClient, ConsentRefused, RetryPolicy
from consent_client.client import _write_id_stream, members_sha256
from tests.e2e.conftest import ALLOWED, DE, PURPOSE, US, settle
from tests.http_faults import Fault, FaultProxy
from tests.live import LiveServer

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05)


@pytest.fixture
def client(server: LiveServer, proxy: FaultProxy) -> Iterator[ConsentClient]:
    """A pipeline client talking through the (for now faultless) proxy."""
    proxy.reset()
    with ConsentClient(proxy.url, server.tokens["pipeline"], retry=FAST) as c:
        yield c


@pytest.fixture
def admin(server: LiveServer, proxy: FaultProxy) -> Iterator[ConsentClient]:
    """An admin client (remediations, and the head to look for them) through the same proxy."""
    with ConsentClient(proxy.url, server.tokens["admin"], retry=FAST) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def app_put(live: LiveServer, path: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {live.tokens['app']}"}
    r = httpx.put(f"{live.base_url}{path}", json=body, headers=headers, timeout=30)
    assert r.status_code in (200, 201), r.text


def new_users(live: LiveServer, prefix: str, n: int) -> list[str]:
    """New US users (n, (granted by default), so a test's revocations touch no other test."""
    ids = [f"{prefix}{i}" for i in range(n)]
    for uid in ids:
        app_put(live, f"/v1/users/{uid}", {"jurisdiction": "US"})
    settle(live)
    return ids


def deny(live: LiveServer, *user_ids: str) -> None:
    for uid in user_ids:
        app_put(live, f"/v1/users/{uid}/consents/{PURPOSE}", {"state": "denied"})
    settle(live)


def test_a_run_records_its_distinct_members_once_and_counts_them(client: ConsentClient) -> None:
    as_of = client.head()
    run = client.register_run(unique("once"), PURPOSE, as_of, model="m-1")
    assert (run["as_of"], run["model"], run["members"]) == (as_of, "m-1", None)
    ids = ALLOWED + ALLOWED[:5] + [int(u) for u in ALLOWED if u.isdigit()][:3]
    recorded = client.record_members(run["id"], ids)
    assert recorded["members"] == len(ALLOWED)
    assert recorded["not_allowed"] == 0
    with pytest.raises(ConsentRefused) as refused:
        client.record_members(run["id"], ["1001"])
    assert refused.value.status == 409
    assert client.run(run["id"])["members"] == len(ALLOWED)


def test_members_not_allowed_at_the_runs_as_of_are_counted_as_violations(
    client: ConsentClient,
) -> None:
    run = client.register_run(unique("violations"), PURPOSE, client.head())
    recorded = client.record_members(run["id"], pa.array([int(u) for u in US + DE], pa.int64()))
    assert recorded["members"] == len(US + DE)
    assert recorded["not_allowed"] == len(US + DE) - len([u for u in ALLOWED if u.isdigit()])


def test_the_members_digest_the_client_computes_is_the_services(
    server: LiveServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.reset()
    with ConsentClient(proxy.url, server.tokens["pipeline"], retry=FAST, filter_chunk=7) as c:
        for ids in (
            pa.array([5, 3, 3, 10**18, 2**62, 0], pa.int64()),
            ["alice", "1000", "007", "bob", "1000", "x:y", "999999999999999999"],
        ):
            run = c.register_run(unique("digest"), PURPOSE, c.head())
            recorded = c.record_members(run["id"], ids)
            spool = tmp_path / f"{run['id']}.arrows"
            with open(spool, "wb") as out:
                _write_id_stream(out, ids, 7)
            assert recorded["members_sha256"] == members_sha256(spool)


def test_a_malformed_id_refuses_the_whole_upload_and_records_nothing(
    client: ConsentClient,
) -> None:
    run = client.register_run(unique("malformed"), PURPOSE, client.head())
    with pytest.raises(ConsentRefused) as refused:
        client.record_members(run["id"], ["1000", "bad id!", "1001"])
    assert refused.value.status == 422
    assert client.run(run["id"])["members"] is None


def test_a_name_another_run_has_is_refused_with_409(client: ConsentClient) -> None:
    name = unique("taken")
    client.register_run(name, PURPOSE, client.head(), model="a")
    with pytest.raises(ConsentRefused) as refused:
        client.register_run(name, PURPOSE, client.head(), model="b")
    assert refused.value.status == 409


def test_a_registration_whose_answer_was_lost_is_found_by_name_not_refused(
    client: ConsentClient, proxy: FaultProxy
) -> None:
    name = unique("lost")
    dataset = {"uri": "file:///data/x.parquet", "sha256": "ab" * 32, "rows_in": 9, "rows_kept": 7}
    as_of = client.head()
    proxy.next(Fault(cut_after=0))  # the run is registered, its answer cut off
    run = client.register_run(name, PURPOSE, as_of, model="m", dataset=dataset)
    assert proxy.requests == 4  # head; POST, its answer cut; head and GET runs: found
    assert (run["name"], run["dataset"]) == (name, dataset)
    runs = client.runs(as_of=client.head())
    assert [r["id"] for r in runs if r["name"] == name] == [run["id"]]  # once


def test_a_members_upload_whose_answer_was_lost_is_taken_as_done(
    client: ConsentClient, proxy: FaultProxy
) -> None:
    run = client.register_run(unique("lost-members"), PURPOSE, client.head())
    proxy.reset()
    proxy.next(Fault(cut_after=0))
    recorded = client.record_members(run["id"], US)
    assert proxy.requests == 2  # PUT, its answer cut; GET the run: recorded, same digest
    assert recorded["members"] == len(US)
    assert recorded["id"] == run["id"]


def test_affected_lists_the_members_denied_since_the_run_pinned_to_one_seq(
    server: LiveServer, client: ConsentClient, proxy: FaultProxy
) -> None:
    users = new_users(server, "aff", 6)
    run = client.register_run(unique("affected"), PURPOSE, client.head())
    recorded = client.record_members(run["id"], users)
    assert list(client.affected(run["id"])) == []
    deny(server, users[1], users[4])
    proxy.next(Fault(cut_after=10))  # a cut answer is retried whole, never a shorter list
    stream = client.affected(run["id"])
    rows = list(stream)
    assert stream.as_of == client.head()
    assert [r["user_id"] for r in rows] == sorted([users[1], users[4]])
    assert all(r["basis"] and run["as_of"] < r["seq"] <= stream.as_of for r in rows)
    before = client.affected(run["id"], as_of=recorded["members_recorded_seq"])
    assert list(before) == []
    assert client.run(run["id"], as_of=stream.as_of)["outstanding"] == 2


def test_a_remediation_whose_answer_was_lost_is_recorded_once(
    server: LiveServer, client: ConsentClient, admin: ConsentClient, proxy: FaultProxy
) -> None:
    users = new_users(server, "rem", 3)
    run = client.register_run(unique("remediate"), PURPOSE, client.head())
    client.record_members(run["id"], users)
    deny(server, users[0])
    head = client.head()
    proxy.next(Fault(cut_after=0))
    done = admin.remediate(run["id"], "excluded_from_next", head, "user asked", "T-1")
    assert (done["action"], done["through_seq"], done["ticket"]) == (
        "excluded_from_next",
        head,
        "T-1",
    )
    after = client.run(run["id"], as_of=client.head())
    assert [r["id"] for r in after["remediations"]] == [done["id"]]
    assert (after["outstanding"], after["affected"]) == (0, 1)


# ------------------------------------------------------------------ as a new user would


CONSENT = Path(sys.executable).parent / "consent"


def consent(live: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`consent ARGS` as a pipeline would run it, with a pipeline key in the environment."""
    env = {**os.environ, "CONSENT_API_KEY": live.tokens["pipeline"], "CONSENT_URL": live.base_url}
    return subprocess.run(
        [str(CONSENT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_filtered_dataset_becomes_a_run_whose_revocations_are_seen_and_remediated(
    server: LiveServer, tmp_path: Path
) -> None:
    users = new_users(server, "walk", 10)
    deny(server, users[9])  # denied before the filter: dropped, never a member
    src, dst = tmp_path / "events.csv", tmp_path / "kept.csv"
    rows = [(u, n) for u in users for n in range(3)]  # three rows a user
    src.write_text("user_id,clicks\n" + "".join(f"{u},{n}\n" for u, n in rows))
    name = unique("walkthrough")

    done = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   "--run", name, "--model", "ranker-v2", str(src), str(dst))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"run {name}" in done.stderr
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    run_id = manifest["run"]["id"]
    assert manifest["run"] == {"id": run_id, "name": name, "model": "ranker-v2"}

    pipeline = {"Authorization": f"Bearer {server.tokens['pipeline']}"}
    with httpx.Client(base_url=server.base_url, headers=pipeline, timeout=30) as http:
        run = http.get(f"/v1/runs/{run_id}").json()
        assert run["as_of"] == manifest["as_of"]
        assert (run["members"], run["not_allowed"]) == (9, 0)
        assert run["dataset"] == {
            "uri": src.resolve().as_uri(),
            "sha256": manifest["input"]["sha256"],
            "rows_in": 30,
            "rows_kept": 27,
        }
        assert (run["affected"], run["outstanding"]) == (0, 0)

        deny(server, users[2], users[5])
        affected = http.get(f"/v1/runs/{run_id}/affected", params={"format": "ndjson"})
        assert [json.loads(x)["user_id"] for x in affected.text.splitlines()] == [
            users[2],
            users[5],
        ]
        run = http.get(f"/v1/runs/{run_id}").json()
        assert (run["affected"], run["outstanding"]) == (2, 2)
        through = run["counts_as_of"]

    with ConsentClient(server.base_url, server.tokens["support"]) as support:
        remediation = support.remediate(
            run_id, "excluded_from_next", through, "dropped from the build"
        )
        run = support.run(run_id, as_of=remediation["recorded_seq"])
        assert (run["affected"], run["outstanding"]) == (2, 0)
        deny(server, users[7])
        assert support.run(run_id)["outstanding"] == 1
        on_page = support._json("GET", f"/v1/users/{users[2]}/runs")["runs"]
        assert [(r["name"], r["model"], r["affected"]) for r in on_page] == [
            (name, "ranker-v2", True)
        ]

    with httpx.Client(base_url=server.base_url, timeout=30) as browser:  # a support session
        sign_in = browser.get("/console/sign-in")
        csrf = CSRF_RE.search(sign_in.text)
        assert csrf, sign_in.text
        form = {"csrf_token": csrf.group(1), "token": server.tokens["support"]}
        assert browser.post("/console/sign-in", data=form).status_code == 302
        page = browser.get(f"/console/users/{users[2]}")
        assert page.status_code == 200
        assert name in page.text
        assert "ranker-v2" in page.text


def test_a_run_that_cannot_be_registered_is_exit_6_and_the_manifest_claims_no_run(
    server: LiveServer, tmp_path: Path
) -> None:
    users = new_users(server, "taken", 3)
    src, dst = tmp_path / "events.jsonl", tmp_path / "kept.jsonl"
    src.write_text("".join(json.dumps({"user_id": u}) + "\n" for u in users))
    name = unique("taken")
    with ConsentClient(server.base_url, server.tokens["pipeline"]) as client:
        client.register_run(name, PURPOSE, client.head())

    done = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   "--run", name, str(src), str(dst))  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert f"the run {name} was not registered" in done.stderr
    assert "409" in done.stderr
    assert dst.read_text() == src.read_text()
    assert "run" not in json.loads(Path(f"{dst}.manifest.json").read_text())


def test_model_without_run_is_a_usage_error(server: LiveServer, tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text("user_id\n1000\n")
    done = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   "--model", "m", str(src), str(tmp_path / "kept.csv"))  # fmt: skip
    assert done.returncode == 2
    assert "--run" in done.stderr
