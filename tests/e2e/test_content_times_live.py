"""Content times end to end: the client and `consent filter --time-column` against a real
gunicorn under the 2024-style order (EEA subjects, content processed inside a window)."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from consent_client import ConsentClient, RetryPolicy
from tests.e2e.conftest import DE, PURPOSE, US, settle
from tests.e2e.test_runs_client import consent
from tests.live import LiveServer

FAST = RetryPolicy(attempts=4, initial=0.01, maximum=0.05)
WINDOW = {"from": "2024-06-01T00:00:00Z", "to": "2024-09-01T00:00:00Z", "time_basis": "processed"}
INSIDE = "2024-07-01T12:00:00Z"
BEFORE = "2024-05-31T23:59:59Z"
AFTER = "2024-09-01T00:00:00+00:00"  # the window's end is outside it: [from, to)
CHOSE_GRANTED = DE[:6]  # EEA subjects allowed by their own choice, until the order


def send(live: LiveServer, role: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request with a key of `role`."""
    headers = {"Authorization": f"Bearer {live.tokens[role]}"}
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=30) as http:
        return http.request(method, path, **kwargs)


def place(live: LiveServer, purpose: str, window: dict[str, str] | None) -> dict[str, Any]:
    """Place the 2024-style order on the EEA for `purpose`; the restriction."""
    body = {
        "authority": "Data Protection Commission",
        "instrument": "undertaking of 2024",
        "purposes": [purpose],
        "jurisdictions": ["EEA"],
        "window": window,
        "reason": "posts processed in the window must not train models",
        "ticket": "LEGAL-2024",
    }
    placed = send(live, "admin", "POST", "/v1/restrictions", json=body)
    assert placed.status_code == 201, placed.text
    restriction: dict[str, Any] = placed.json()
    settle(live)
    return restriction


@pytest.fixture(scope="module")
def restriction(server: LiveServer) -> dict[str, Any]:
    """EEA subjects who chose granted, under a windowed order on PURPOSE (never lifted here)."""
    for uid in CHOSE_GRANTED:
        put = send(server, "app", "PUT", f"/v1/users/{uid}/consents/{PURPOSE}",
                   json={"state": "granted"})  # fmt: skip
        assert put.status_code in (200, 201), put.text
    return place(server, PURPOSE, WINDOW)


@pytest.fixture
def client(server: LiveServer, restriction: dict[str, Any]) -> Iterator[ConsentClient]:
    with ConsentClient(server.base_url, server.tokens["pipeline"], retry=FAST) as c:
        yield c


def test_one_decision_depends_on_its_content_time_and_names_the_restriction(
    client: ConsentClient, restriction: dict[str, Any]
) -> None:
    inside = client.decision(PURPOSE, CHOSE_GRANTED[0], content_time=INSIDE)
    assert (inside["allowed"], inside["basis"]) == (False, "restriction")
    assert inside["restriction_id"] == restriction["id"]
    assert "legal_basis" in inside
    untimed = client.decision(PURPOSE, CHOSE_GRANTED[0])  # fail closed
    assert (untimed["allowed"], untimed["basis"]) == (False, "restriction")
    for outside in (BEFORE, AFTER):
        answer = client.decision(PURPOSE, CHOSE_GRANTED[0], content_time=outside)
        assert (answer["allowed"], answer["basis"]) == (True, "choice")
        assert answer.get("restriction_id") is None
    assert client.decision(PURPOSE, US[1], content_time=INSIDE)["allowed"] is True


def test_a_batch_lookup_decides_each_id_at_its_time(client: ConsentClient) -> None:
    ids = [CHOSE_GRANTED[0], CHOSE_GRANTED[1], CHOSE_GRANTED[2], US[1]]
    result = client.lookup(PURPOSE, ids, content_times=[INSIDE, BEFORE, None, INSIDE])
    assert result.allowed == [CHOSE_GRANTED[1], US[1]]
    assert result.denied == [CHOSE_GRANTED[0], CHOSE_GRANTED[2]]


def test_the_text_and_arrow_filters_decide_each_row_at_its_time(client: ConsentClient) -> None:
    ids = [CHOSE_GRANTED[0], CHOSE_GRANTED[1], CHOSE_GRANTED[2], US[1], CHOSE_GRANTED[3]]
    times = [INSIDE, AFTER, None, None, BEFORE]
    stream = client.filter(PURPOSE, ids, content_times=times)
    assert list(stream) == [CHOSE_GRANTED[1], US[1], CHOSE_GRANTED[3]]
    numbers = pa.array([int(i) for i in ids], pa.int64())
    mask, as_of = client.filter_arrow(PURPOSE, numbers, stream.as_of, content_times=pa.array(times))
    assert (mask.to_pylist(), as_of) == ([False, True, False, True, True], stream.as_of)


def test_consent_filter_with_a_time_column_and_a_run_keeps_rows_outside_the_window(
    server: LiveServer, restriction: dict[str, Any], tmp_path: Path
) -> None:
    rows = [
        (CHOSE_GRANTED[0], INSIDE),
        (CHOSE_GRANTED[1], AFTER),
        (CHOSE_GRANTED[2], ""),
        (US[1], INSIDE),
        (CHOSE_GRANTED[3], BEFORE),
    ]
    src, dst = tmp_path / "posts.csv", tmp_path / "kept.csv"
    with open(src, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "processed_at", "text"])
        writer.writerows([u, t, f"post by {u}"] for u, t in rows)
    run = f"times-{uuid.uuid4().hex[:8]}"
    done = consent(server, "filter", "--purpose", PURPOSE, "--column", "user_id",
                   "--time-column", "processed_at", "--run", run, str(src), str(dst))  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(dst, newline="") as kept:
        assert [r["user_id"] for r in csv.DictReader(kept)] == [
            CHOSE_GRANTED[1],
            US[1],
            CHOSE_GRANTED[3],
        ]
    manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
    assert (manifest["time_column"], manifest["rows_without_time"]) == ("processed_at", 1)
    assert manifest["run"]["name"] == run
    assert "(1 without a time)" in done.stderr


def test_a_lifted_order_answers_again_and_the_earlier_as_of_still_denies(
    server: LiveServer, restriction: dict[str, Any], client: ConsentClient
) -> None:
    purpose = f"ranking_{uuid.uuid4().hex[:8]}"
    created = send(server, "admin", "POST", "/v1/purposes", json={
        "key": purpose, "title": "Ranking", "defaults": {"*": "granted"},
        "unknown_subject": "denied",
    })  # fmt: skip
    assert created.status_code == 201, created.text
    order = place(server, purpose, WINDOW)
    placed_at = client.head()
    lifted = send(server, "admin", "DELETE", f"/v1/restrictions/{order['id']}",
                  params={"reason": "the undertaking ended"})  # fmt: skip
    assert lifted.status_code in (200, 204), lifted.text
    settle(server)
    now = client.lookup(purpose, [DE[10]], content_time=INSIDE)
    assert now.allowed == [DE[10]]
    then = client.lookup(purpose, [DE[10]], placed_at, content_time=INSIDE)
    assert then.denied == [DE[10]]
    assert client.decision(purpose, DE[10], as_of=placed_at)["basis"] == "restriction"
