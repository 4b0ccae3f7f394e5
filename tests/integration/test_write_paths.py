"""The grouped write path and the serial one give the same answers, events and state.

Grouped (the default) checks what it can before the head lock and commits a worker's
concurrent writes together; serial reads and checks everything under the lock and commits
each write alone. Each scenario runs on a fresh database once per path, with the same clock
and request ids, and everything the ledger answered and holds afterwards is compared. A second
test does the same for a random run of writes: all in one batch, then one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from service import create_app
from service.domain.errors import ConsentError
from service.ledger.choice_batch import ChoiceWrite, Outcome, commit_choices
from service.ledger.choices import accepted_versions
from service.ledger.transaction import Actor, IdempotencyRequest
from service.runtime.extensions import db
from tests.conftest import Clock, app_config, clean_database
from tests.factories import Api, bearer, user_token

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# What a path leaves behind: every table a choice write can touch, row by row.
TABLES = ("events", "subjects", "choices", "overrides", "idempotency_records", "ledger_head")
Answer = tuple[int, Any, str | None]


class RecordingApi(Api):
    """An Api whose requests carry numbered request ids, recording every answer to a write
    of a choice (the app's or the user's own)."""

    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.answers: list[Answer] = []
        self.sent = 0
        super().__init__(app, client)

    def request_id(self) -> str:
        self.sent += 1
        return f"req-{self.sent}"

    def call(
        self,
        method: str,
        path: str,
        *,
        role: str = "admin",
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        resp = super().call(
            method,
            path,
            role=role,
            json=json,
            headers={"X-Request-ID": self.request_id(), **(headers or {})},
            **kwargs,
        )
        self.note(method, path, resp)
        return resp

    def me(self, user_id: str, purpose: str, body: dict[str, Any], **headers: str) -> None:
        """The user's own write, with their token."""
        path = f"/v1/me/consents/{purpose}"
        resp = self.client.put(
            path,
            json=body,
            headers=bearer(user_token(user_id), **{"X-Request-ID": self.request_id()}, **headers),
        )
        self.note("PUT", path, resp)

    def note(self, method: str, path: str, resp: TestResponse) -> None:
        if method == "PUT" and "/consents/" in path:
            self.answers.append((resp.status_code, resp.get_json(), resp.headers.get("ETag")))


@dataclass
class Run:
    """What one path answered and left behind."""

    answers: list[Answer]
    tables: dict[str, list[tuple[Any, ...]]]


def tables_of(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a choice write touches, in a stable order."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with app.app_context(), db.engine.connect() as conn:
        for name in TABLES:
            rows = conn.execute(sa.text(f"SELECT * FROM {name}")).all()
            found[name] = sorted((tuple(r) for r in rows), key=repr)
    return found


@pytest.fixture
def run_on(
    template_db: str, tmp_path: Path, clock: Clock
) -> Iterator[Callable[[str, Callable[[RecordingApi, Clock], None]], Run]]:
    """Run a scenario on a fresh database with a write path; what it answered and left."""
    apps: list[Flask] = []

    def run(path: str, scenario: Callable[[RecordingApi, Clock], None]) -> Run:
        for earlier in apps:  # on PostgreSQL the next run empties the same database
            with earlier.app_context():
                db.engine.dispose()
        url = clean_database(template_db, tmp_path)
        app = create_app({**app_config(url), "CONSENT_WRITE_PATH": path})
        apps.append(app)
        clock.now = START
        api = RecordingApi(app, app.test_client())
        scenario(api, clock)
        return Run(api.answers, tables_of(app))

    yield run
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def choose(api: RecordingApi, user: str, state: str, **headers: str) -> None:
    api.choose(user, state, **headers)


def new_user(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    api.purpose(key="ads", defaults={"*": "granted"})
    choose(api, "u1", "denied")


def existing_user(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    api.user("u1", jurisdiction="DE")
    choose(api, "u1", "granted")
    clock.now += timedelta(seconds=1)
    choose(api, "u1", "denied")


def same_state_again(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    choose(api, "u1", "granted")
    choose(api, "u1", "granted")


def if_match(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    choose(api, "u1", "granted", **{"If-Match": '"1"'})  # a never-seen user is at version 0
    choose(api, "u1", "granted", **{"If-Match": '"0"'})
    choose(api, "u1", "denied", **{"If-Match": '"0"'})
    choose(api, "u1", "denied", **{"If-Match": 'W/"7", "1"'})
    choose(api, "u1", "granted", **{"If-Match": "*"})
    choose(api, "u1", "granted", **{"If-Match": "nonsense"})


def idempotent_replay(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    choose(api, "u1", "granted", **{"Idempotency-Key": "k-1"})
    choose(api, "u1", "denied")
    choose(api, "u1", "granted", **{"Idempotency-Key": "k-1"})
    clock.now += timedelta(days=2)  # past the TTL: the key is free again
    choose(api, "u1", "granted", **{"Idempotency-Key": "k-1"})


def idempotency_key_reused(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    choose(api, "u1", "granted", **{"Idempotency-Key": "k-1"})
    choose(api, "u1", "denied", **{"Idempotency-Key": "k-1"})
    choose(api, "u2", "granted", **{"Idempotency-Key": "k-1"})  # another request: 422


def erased_user(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    choose(api, "u1", "granted")
    assert api.call("DELETE", "/v1/users/u1", role="app").status_code == 200
    assert api.call("DELETE", "/v1/users/never-seen", role="app").status_code == 200
    choose(api, "u1", "denied")
    choose(api, "never-seen", "granted")


def override_in_force(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    assert api.override("u1", "denied").status_code == 201
    choose(api, "u1", "granted")
    choose(api, "u1", "denied")


def restriction_in_force(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    api.user("u1", jurisdiction="DE")
    order = {
        "authority": "Data Protection Commission",
        "instrument": "Order 7",
        "purposes": ["model_training"],
        "jurisdictions": ["EEA"],
        "window": None,
        "reason": "Regulator's order",
        "ticket": "LEG-1",
    }
    assert api.call("POST", "/v1/restrictions", json=order).status_code == 201
    choose(api, "u1", "granted")
    choose(api, "u2", "granted")  # a new user without a jurisdiction: not covered


def override_expires_during_the_write(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    api.user("u1", jurisdiction="US")
    expires = (clock.now + timedelta(minutes=1)).isoformat()
    assert api.override("u1", "denied", expires_at=expires).status_code == 201
    assert api.override("u2", "granted", expires_at=expires).status_code == 201
    clock.now += timedelta(minutes=2)
    choose(api, "u3", "granted")  # another user's write records both expiries first
    choose(api, "u1", "granted")


def notice_versions(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    text = {"version": "2024-1", "text": "We train on public posts."}
    assert api.call("PUT", "/v1/purposes/model_training/notice", json=text).status_code == 200
    body = {"state": "granted", "source": "settings", "notice_version": "2024-1"}
    api.call("PUT", "/v1/users/u1/consents/model_training", role="app", json=body)
    unknown = {**body, "notice_version": "2099-9"}
    api.call("PUT", "/v1/users/u1/consents/model_training", role="app", json=unknown)
    api.call("PUT", "/v1/users/u1/consents/no_such_purpose", role="app", json=body)


def users_own_choices(api: RecordingApi, clock: Clock) -> None:
    api.purpose()
    gpc = {"key": "ads", "title": "Ads", "defaults": {"*": "granted"}, "honours_gpc": True}
    assert api.call("POST", "/v1/purposes", json=gpc).status_code == 201
    api.me("alice", "model_training", {"state": "granted"}, **{"Sec-GPC": "1"})
    api.me("alice", "ads", {"state": "granted"}, **{"If-Match": '"1"'})
    api.me("alice", "model_training", {"state": "denied"}, **{"Idempotency-Key": "m-1"})
    api.me("alice", "model_training", {"state": "denied"}, **{"Idempotency-Key": "m-1"})


SCENARIOS = [
    new_user,
    existing_user,
    same_state_again,
    if_match,
    idempotent_replay,
    idempotency_key_reused,
    erased_user,
    override_in_force,
    restriction_in_force,
    override_expires_during_the_write,
    notice_versions,
    users_own_choices,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_the_grouped_and_the_serial_write_paths_answer_and_record_the_same(
    run_on: Callable[[str, Callable[[RecordingApi, Clock], None]], Run],
    scenario: Callable[[RecordingApi, Clock], None],
) -> None:
    grouped = run_on("grouped", scenario)
    serial = run_on("serial", scenario)
    assert grouped.answers, "the scenario wrote nothing"
    assert grouped.answers == serial.answers
    assert grouped.tables == serial.tables


EXPECTED_STATUSES = {
    "new_user": [200],
    "existing_user": [200, 200],
    "same_state_again": [200, 200],
    "if_match": [412, 200, 412, 200, 200, 400],
    "idempotent_replay": [200, 200, 200, 200],
    "idempotency_key_reused": [200, 422, 422],
    "erased_user": [200, 409, 409],
    "override_in_force": [200, 200],
    "restriction_in_force": [200, 200],
    "override_expires_during_the_write": [200, 200],
    "notice_versions": [200, 422, 404],
    "users_own_choices": [200, 200, 200, 200],
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_each_scenario_answers_as_the_contract_says(
    run_on: Callable[[str, Callable[[RecordingApi, Clock], None]], Run],
    scenario: Callable[[RecordingApi, Clock], None],
) -> None:
    run = run_on("grouped", scenario)
    assert [status for status, _, _ in run.answers] == EXPECTED_STATUSES[scenario.__name__]
    events = run.tables["events"]
    kinds = [e[2] for e in sorted(events)]
    if scenario is override_expires_during_the_write:
        # Both expiries recorded by the first write after them, before its own events.
        assert kinds[-5:] == [
            "override_expired",
            "override_expired",
            "subject_registered",
            "choice_set",
            "choice_set",
        ]
    if scenario is idempotent_replay:
        # The replay wrote nothing; past the TTL the key wrote again.
        assert kinds.count("choice_set") == 3


# -- one batch against one at a time ----------------------------------------------------------

APP = Actor("app-key", "app", "req-batch")
WRITE = st.builds(
    lambda user, state, match, key: (user, state, match, key),
    st.sampled_from(["a", "b", "erased", "overridden"]),
    st.sampled_from(["granted", "denied"]),
    st.sampled_from([None, '"0"', '"1"', '"2"', "*"]),
    st.sampled_from([None, "k1", "k2"]),
)


def writes_of(plan: list[tuple[str, str, str | None, str | None]]) -> list[ChoiceWrite]:
    """The plan as writes, as set_choice would hand them over."""
    writes = []
    for user, state, match, key in plan:
        body = {"state": state, "source": "settings"}
        path = f"/v1/users/{user}/consents/model_training"
        writes.append(
            ChoiceWrite(
                actor=APP,
                user_id=user,
                purpose="model_training",
                state=state,
                source="settings",
                accepted=accepted_versions(match),
                idempotency=None if key is None else IdempotencyRequest.of(key, "PUT", path, body),
            )
        )
    return writes


def commit_alone(write: ChoiceWrite) -> Outcome:
    """Commit one write in a batch of its own."""
    return commit_choices(lambda: [write])[0]


def shown(outcome: Outcome) -> Any:
    """An outcome as compared: the answer, or the error's kind and words."""
    if isinstance(outcome, ConsentError):
        return (type(outcome).__name__, outcome.detail)
    return outcome


@pytest.fixture
def fresh_ledger(template_db: str, tmp_path: Path, clock: Clock) -> Iterator[Callable[[], Flask]]:
    """A fresh database with a purpose, an erased user and one under an override."""
    apps: list[Flask] = []

    def make() -> Flask:
        for earlier in apps:
            with earlier.app_context():
                db.engine.dispose()
        app = create_app(app_config(clean_database(template_db, tmp_path)))
        apps.append(app)
        clock.now = START
        api = RecordingApi(app, app.test_client())
        api.purpose()
        api.purpose(key="ads", defaults={"*": "granted"})
        assert api.call("DELETE", "/v1/users/erased", role="app").status_code == 200
        assert api.override("overridden", "denied").status_code == 201
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.lists(WRITE, min_size=1, max_size=8))
def test_writes_committed_in_one_batch_answer_and_record_as_if_committed_one_at_a_time(
    fresh_ledger: Callable[[], Flask], plan: list[tuple[str, str, str | None, str | None]]
) -> None:
    writes = writes_of(plan)
    app = fresh_ledger()
    with app.app_context():
        together = [shown(o) for o in commit_choices(lambda: writes)]
    batch = tables_of(app)
    app = fresh_ledger()
    with app.app_context():
        alone = [shown(commit_alone(w)) for w in writes]
    assert together == alone
    assert batch == tables_of(app)
