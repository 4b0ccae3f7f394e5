"""The audit feed over HTTP: admins read every event, key events too; pipelines never see those."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from service.domain.events import KEY_KINDS
from service.ledger import keys
from service.runtime.extensions import db
from service.runtime.models import Event
from tests.factories import assert_problem, bearer

PURPOSE = "model_training"
STAFF_KEY = "alice@support"


def audit_page(api: Any, **query: Any) -> dict[str, Any]:
    """One page of the audit feed as an admin."""
    resp = api.call("GET", "/v1/audit", query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return dict(resp.get_json())


def change_page(api: Any, **query: Any) -> dict[str, Any]:
    """One page of the change feed as a pipeline."""
    resp = api.call("GET", "/v1/changes", role="pipeline", query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return dict(resp.get_json())


def follow(read: Any, api: Any, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every event of a feed, page by page from the start; and the final cursor."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        body = read(api, after=after, limit=limit)
        events.extend(body["events"])
        assert body["next_after"] >= after
        after = body["next_after"]
        if not body["has_more"]:
            return events, after


def ledger(app: Flask) -> list[tuple[int, str]]:
    """Every (seq, kind) in the events table, in order."""
    with app.app_context():
        rows = db.session.execute(sa.select(Event.seq, Event.kind).order_by(Event.seq)).all()
        db.session.rollback()
    return [(r.seq, r.kind) for r in rows]


@pytest.fixture
def staffed(app: Flask, api: Any) -> None:
    """A ledger where key events sit between, and after, the consent events."""
    api.purpose()
    api.choose("u1", "denied")
    with app.app_context():
        keys.create_key(STAFF_KEY, "support")
    api.choose("u2", "granted")
    with app.app_context():
        keys.revoke_key(STAFF_KEY)


def test_the_audit_feed_lists_every_event_including_key_events(
    app: Flask, api: Any, staffed: None
) -> None:
    body = audit_page(api, limit=10_000)
    assert [(e["seq"], e["kind"]) for e in body["events"]] == ledger(app)
    assert (body["next_after"], body["has_more"]) == (body["head"], False)
    revoked = body["events"][-1]
    assert (revoked["kind"], revoked["data"]) == (
        "key_revoked",
        {"name": STAFF_KEY, "role": "support"},
    )


def test_the_change_feed_is_the_audit_feed_without_key_events(api: Any, staffed: None) -> None:
    everything = audit_page(api, limit=10_000)["events"]
    assert {e["kind"] for e in everything} >= KEY_KINDS
    feed = change_page(api, limit=10_000)["events"]
    assert feed == [e for e in everything if e["kind"] not in KEY_KINDS]
    assert STAFF_KEY not in str(feed)


def test_paging_either_feed_returns_each_of_its_events_exactly_once(
    api: Any, staffed: None
) -> None:
    audit_all = audit_page(api, limit=10_000)["events"]
    changes_all = change_page(api, limit=10_000)["events"]
    for limit in (1, 2, 3):
        assert follow(audit_page, api, limit) == (audit_all, audit_all[-1]["seq"])
        # Key events end this ledger: past the last visible event the cursor moves to the head.
        assert follow(change_page, api, limit) == (changes_all, audit_all[-1]["seq"])


def test_a_change_feed_page_of_only_key_events_is_empty_and_moves_the_cursor_on(
    app: Flask, api: Any
) -> None:
    # The api fixture's keys are the first events of the ledger.
    assert {kind for _, kind in ledger(app)} == {"key_created"}
    head = audit_page(api)["head"]
    assert change_page(api) == {"events": [], "next_after": head, "has_more": False, "head": head}
    assert len(audit_page(api)["events"]) == head


def test_at_the_head_the_audit_feed_is_empty_and_the_cursor_stays(api: Any, staffed: None) -> None:
    head = audit_page(api)["head"]
    assert audit_page(api, after=head) == {
        "events": [],
        "next_after": head,
        "has_more": False,
        "head": head,
    }


@pytest.mark.parametrize(
    "query",
    [
        "after=-1",
        "after=x",
        "after=99999999999999999999",
        "limit=0",
        "limit=10001",
        "limit=many",
        f"purpose={PURPOSE}",  # the audit feed has every event: no purpose filter to misread
        "afterr=5",
    ],
)
def test_a_bad_audit_query_is_a_422_naming_the_parameter(
    api: Any, staffed: None, query: str
) -> None:
    body = assert_problem(api.call("GET", f"/v1/audit?{query}"), 422)
    assert query.split("=")[0] in str(body["errors"])


def test_an_audit_cursor_beyond_the_head_is_a_422(api: Any, staffed: None) -> None:
    head = audit_page(api)["head"]
    body = assert_problem(api.call("GET", f"/v1/audit?after={head + 1}"), 422)
    assert body["errors"] == {"after": [f"Must be at most {head}."]}


def test_only_admin_keys_may_read_the_audit_feed(api: Any, staffed: None) -> None:
    for role in ("app", "pipeline", "support"):
        assert_problem(api.call("GET", "/v1/audit", role=role), 403)
    assert_problem(api.client.get("/v1/audit"), 401)
    assert_problem(api.client.get("/v1/audit", headers=bearer("cl_not-a-key")), 401)
