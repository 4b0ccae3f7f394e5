"""On PostgreSQL, writers race a change-feed consumer: it gets every event once, in seq order."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from flask import Flask

from service.domain.events import KEY_KINDS
from service.runtime.extensions import db
from service.runtime.models import Event
from tests.conftest import postgres_only
from tests.factories import bearer

pytestmark = postgres_only

WRITERS = 6
WRITES_EACH = 40
POLICY_CHANGES = 5
PAGE = 7
PURPOSES = ("model_training", "ads_ranking")


def test_a_consumer_polling_during_concurrent_writes_gets_every_event_once_in_order(
    app: Flask, api: Any
) -> None:
    for key in PURPOSES:
        api.purpose(key=key)
    app_key, admin_key = api.tokens["app"], api.tokens["admin"]
    pipeline_key = api.tokens["pipeline"]
    start = threading.Barrier(WRITERS + 3)
    writers_done = threading.Event()
    polls_during_writes = [0]

    def write(n: int) -> list[int]:
        client = app.test_client()
        start.wait()
        codes = []
        for i in range(WRITES_EACH):
            resp = client.put(
                f"/v1/users/w{n}-{i % 9}/consents/{PURPOSES[i % 2]}",
                json={"state": "granted" if (i + n) % 3 else "denied", "source": "settings"},
                headers=bearer(app_key),
            )
            codes.append(resp.status_code)
        return codes

    def change_policy() -> list[int]:
        client = app.test_client()
        start.wait()
        codes = []
        for i in range(POLICY_CHANGES):
            resp = client.patch(
                f"/v1/purposes/{PURPOSES[0]}",
                json={"defaults": {"*": "granted" if i % 2 else "denied"}},
                headers=bearer(admin_key),
            )
            codes.append(resp.status_code)
        return codes

    def consume(purpose: str | None) -> list[dict[str, Any]]:
        client = app.test_client()
        start.wait()
        cursor = 0
        received: list[dict[str, Any]] = []
        query: dict[str, Any] = (
            {"limit": PAGE} if purpose is None else {"limit": PAGE, "purpose": purpose}
        )
        while True:
            # Read the flag before polling: a poll begun after the writers finished sees them all.
            finished = writers_done.is_set()
            resp = client.get(
                "/v1/changes",
                query_string={**query, "after": cursor},
                headers=bearer(pipeline_key),
            )
            assert resp.status_code == 200, resp.get_data(as_text=True)
            body = resp.get_json()
            received.extend(body["events"])
            assert body["next_after"] >= cursor
            cursor = body["next_after"]
            if not finished:
                polls_during_writes[0] += 1
            elif not body["has_more"]:
                return received

    with ThreadPoolExecutor(max_workers=WRITERS + 3) as pool:
        consumer: Future[list[dict[str, Any]]] = pool.submit(consume, None)
        filtered: Future[list[dict[str, Any]]] = pool.submit(consume, PURPOSES[1])
        writers = [pool.submit(write, n) for n in range(WRITERS)]
        policy = pool.submit(change_policy)
        try:
            codes = [code for w in writers for code in w.result(timeout=120)]
            policy_codes = policy.result(timeout=120)
        finally:
            writers_done.set()
        received = consumer.result(timeout=120)
        received_filtered = filtered.result(timeout=120)

    assert codes == [200] * WRITERS * WRITES_EACH
    assert policy_codes == [200] * POLICY_CHANGES
    with app.app_context():
        rows = db.session.execute(sa.select(Event.seq, Event.kind).order_by(Event.seq)).all()
        db.session.rollback()
    in_ledger = [seq for seq, _ in rows]
    # The fixture's key events are in the ledger but never in the pipelines' feed.
    for_pipelines = [seq for seq, kind in rows if kind not in KEY_KINDS]
    seqs = [e["seq"] for e in received]
    assert len(seqs) == len(set(seqs)), "an event was delivered twice"
    assert seqs == sorted(seqs), "events arrived out of seq order"
    assert seqs == for_pipelines, "an event was skipped"
    assert in_ledger == list(range(1, len(in_ledger) + 1))
    kinds = [e["kind"] for e in received]
    assert kinds.count("choice_set") == WRITERS * WRITES_EACH
    assert kinds.count("policy_changed") == POLICY_CHANGES
    assert polls_during_writes[0] > 0
    # A consumer of one purpose gets exactly that purpose's events, also once each and in order.
    assert received_filtered == [e for e in received if e["purpose"] == PURPOSES[1]]
