"""The change feed over HTTP: events after a seq, oldest first, with a cursor that skips none."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from service.domain.events import KEY_KINDS
from service.runtime.extensions import db
from service.runtime.models import Event
from tests.factories import assert_problem

PURPOSE = "model_training"
EVENT_FIELDS = {
    "seq",
    "at",
    "kind",
    "user_id",
    "purpose",
    "before",
    "after",
    "actor",
    "role",
    "reason",
    "ticket",
}


def page(api: Any, **query: Any) -> dict[str, Any]:
    """One page of the change feed as the pipeline."""
    resp = api.call("GET", "/v1/changes", role="pipeline", query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return dict(resp.get_json())


def follow(api: Any, after: int = 0, **query: Any) -> tuple[list[dict[str, Any]], int]:
    """Every event after a seq, following the cursor page by page; and the final cursor."""
    events: list[dict[str, Any]] = []
    while True:
        body = page(api, after=after, **query)
        events.extend(body["events"])
        assert body["next_after"] >= after
        after = body["next_after"]
        if not body["has_more"]:
            return events, after


def ledger_seqs(app: Flask) -> list[int]:
    """Every seq a pipeline may see (key events are the audit feed's), in order."""
    with app.app_context():
        seqs = list(
            db.session.execute(
                sa.select(Event.seq).where(Event.kind.not_in(KEY_KINDS)).order_by(Event.seq)
            ).scalars()
        )
        db.session.rollback()
    return seqs


@pytest.fixture
def history(api: Any) -> dict[str, Any]:
    """A user whose effective state passes through every writer; a policy change in between."""
    api.purpose(defaults={"EEA": "denied", "*": "granted"})
    api.user("u1", jurisdiction="US")
    api.choose("u1", "denied")
    override = api.override("u1", "granted").get_json()["id"]
    lift = f"/v1/users/u1/overrides/{override}?reason=ticket+closed"
    assert api.call("DELETE", lift, role="support").status_code == 200
    patched = api.call("PATCH", f"/v1/purposes/{PURPOSE}", json={"defaults": {"*": "denied"}})
    assert patched.status_code == 200
    api.user("u2", jurisdiction="DE")
    api.user("u2", jurisdiction="US")
    assert api.call("DELETE", "/v1/users/u1", role="app").status_code == 200
    return {"override": override}


def test_the_feed_lists_every_event_after_a_seq_oldest_first(
    app: Flask, api: Any, history: dict[str, Any]
) -> None:
    everything = page(api, limit=10_000)
    seqs = [e["seq"] for e in everything["events"]]
    # The api fixture's four key_created events come first and are not the pipelines' to see.
    assert seqs == ledger_seqs(app) == list(range(5, everything["head"] + 1))
    assert everything["has_more"] is False
    assert everything["next_after"] == everything["head"]
    assert all(set(e) >= EVENT_FIELDS for e in everything["events"])

    middle = seqs[len(seqs) // 2]
    after = page(api, after=middle, limit=10_000)["events"]
    assert [e["seq"] for e in after] == [s for s in seqs if s > middle]
    assert after == [e for e in everything["events"] if e["seq"] > middle]


def test_user_events_carry_effective_states_before_and_after(
    api: Any, history: dict[str, Any]
) -> None:
    events = [e for e in page(api, limit=10_000)["events"] if e["user_id"] == "u1"]
    assert [(e["kind"], e["purpose"], e["before"], e["after"]) for e in events] == [
        ("subject_registered", PURPOSE, "denied", "granted"),
        ("choice_set", PURPOSE, "granted", "denied"),
        ("override_placed", PURPOSE, "denied", "granted"),
        ("override_lifted", PURPOSE, "granted", "denied"),
        ("subject_erased", PURPOSE, "denied", "denied"),
    ]
    placed = events[2]
    assert (placed["actor"], placed["role"], placed["ticket"]) == (
        "support-key",
        "support",
        "SUP-1",
    )
    assert events[3]["reason"] == "ticket closed"


def test_each_user_events_before_is_the_previous_events_after(
    api: Any, history: dict[str, Any]
) -> None:
    last: dict[tuple[str, str], str] = {}
    for event in page(api, limit=10_000)["events"]:
        if event["user_id"] is None or event["purpose"] is None:
            continue
        key = (event["user_id"], event["purpose"])
        if key in last:
            assert event["before"] == last[key], event
        last[key] = event["after"]


def test_a_policy_change_is_its_own_kind_with_the_purpose_set(
    api: Any, history: dict[str, Any]
) -> None:
    events = page(api, limit=10_000)["events"]
    (policy,) = [e for e in events if e["kind"] == "policy_changed"]
    assert (policy["purpose"], policy["user_id"]) == (PURPOSE, None)
    assert policy["data"]["defaults"] == {"*": "denied"}
    # A change of title alone changes no answer: it is not a policy change.
    api.call("PATCH", f"/v1/purposes/{PURPOSE}", json={"title": "Model training v2"})
    latest = page(api, after=events[-1]["seq"])["events"]
    assert "policy_changed" not in [e["kind"] for e in latest]


def test_paging_with_limit_gives_next_after_and_has_more_until_the_end(
    app: Flask, api: Any, history: dict[str, Any]
) -> None:
    head = page(api)["head"]
    first = page(api, limit=3)
    assert [e["seq"] for e in first["events"]] == [5, 6, 7]  # 1-4: the fixture's key events
    assert (first["next_after"], first["has_more"]) == (7, True)
    second = page(api, after=first["next_after"], limit=3)
    assert [e["seq"] for e in second["events"]] == [8, 9, 10]

    events, cursor = follow(api, limit=3)
    assert [e["seq"] for e in events] == ledger_seqs(app)
    assert cursor == head
    last = page(api, after=head - 2, limit=2)
    assert (len(last["events"]), last["has_more"], last["next_after"]) == (2, False, head)


def test_following_the_cursor_returns_every_event_exactly_once(app: Flask, api: Any) -> None:
    api.purpose()
    for i in range(40):
        api.choose(f"u{i % 7}", "granted" if i % 3 else "denied")
    for limit in (1, 7, 10_000):
        events, cursor = follow(api, limit=limit)
        seqs = [e["seq"] for e in events]
        assert seqs == ledger_seqs(app)
        assert len(seqs) == len(set(seqs))
        assert cursor == seqs[-1]


def test_at_the_head_the_feed_is_empty_and_the_cursor_stays(
    api: Any, history: dict[str, Any]
) -> None:
    head = page(api)["head"]
    assert page(api, after=head) == {
        "events": [],
        "next_after": head,
        "has_more": False,
        "head": head,
    }


def test_the_purpose_filter_keeps_only_that_purposes_events(api: Any) -> None:
    api.purpose()
    api.purpose(key="ads_ranking")
    api.choose("u1", "granted")
    api.choose("u1", "denied", purpose="ads_ranking")
    api.call("PATCH", "/v1/purposes/ads_ranking", json={"unknown_subject": "granted"})
    api.choose("u2", "granted")
    api.override("u2", "denied", purpose="ads_ranking")
    head = page(api)["head"]
    everything = page(api, limit=10_000)["events"]

    for purpose in (PURPOSE, "ads_ranking"):
        expected = [e for e in everything if e["purpose"] == purpose]
        assert page(api, purpose=purpose, limit=10_000)["events"] == expected
        events, cursor = follow(api, purpose=purpose, limit=2)
        assert events == expected
        # Past the purpose's last event the cursor moves up to the head, not back.
        assert cursor == head
    kinds = [e["kind"] for e in page(api, purpose="ads_ranking", limit=10_000)["events"]]
    assert kinds[0] == "purpose_created"
    assert "policy_changed" in kinds


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("after=-1", 422),
        ("after=x", 422),
        ("limit=0", 422),
        ("limit=10001", 422),
        ("limit=-5", 422),
        ("purpose=Bad-Key", 422),
        ("purpose=no_such_purpose", 404),
        ("afterr=5", 422),  # a misspelt cursor must not silently restart from 0
    ],
)
def test_a_bad_feed_query_is_a_problem(
    api: Any, history: dict[str, Any], query: str, status: int
) -> None:
    assert_problem(api.call("GET", f"/v1/changes?{query}", role="pipeline"), status)


def test_a_cursor_beyond_the_head_is_a_422(api: Any, history: dict[str, Any]) -> None:
    head = page(api)["head"]
    body = assert_problem(api.call("GET", f"/v1/changes?after={head + 1}", role="pipeline"), 422)
    assert "after" in body["errors"]
    assert page(api, after=head, limit=10_000)["events"] == []


def test_only_pipeline_keys_may_read_the_feed(api: Any, history: dict[str, Any]) -> None:
    for role in ("app", "support"):
        assert_problem(api.call("GET", "/v1/changes", role=role), 403)
    assert_problem(api.client.get("/v1/changes"), 401)
