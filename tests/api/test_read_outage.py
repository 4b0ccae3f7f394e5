"""A database that cannot answer makes every pipeline read a 503 with Retry-After, not an answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service import create_app
from service.runtime.extensions import db
from tests.conftest import app_config
from tests.factories import bearer

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nope"
PURPOSE = "model_training"
ARROW = "application/vnd.apache.arrow.stream"


def arrow_ids(ids: list[str]) -> bytes:
    """An Arrow IPC stream of one string column of IDs."""
    sink = pa.BufferOutputStream()
    schema = pa.schema([pa.field("user_id", pa.string())])
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array(ids)], schema=schema))
    return bytes(sink.getvalue().to_pybytes())


READS: dict[str, dict[str, Any]] = {
    "lookup": {"method": "GET", "path": f"/v1/lookup/{PURPOSE}/u1"},
    "lookup as of a seq": {"method": "GET", "path": f"/v1/lookup/{PURPOSE}/u1?as_of=2"},
    "lookup as of a time": {
        "method": "GET",
        "path": f"/v1/lookup/{PURPOSE}/u1?as_of=2020-01-01T00:00:00Z",
    },
    "batch lookup": {
        "method": "POST",
        "path": f"/v1/lookup/{PURPOSE}",
        "json": {"user_ids": ["u1", "u2", 1001]},
    },
    "text filter": {
        "method": "POST",
        "path": f"/v1/filter/{PURPOSE}",
        "data": b"u1\nu2\n",
        "content_type": "text/plain",
    },
    "arrow filter": {
        "method": "POST",
        "path": f"/v1/filter/{PURPOSE}",
        "data": arrow_ids(["u1", "u2"]),
        "content_type": ARROW,
    },
    "csv snapshot": {"method": "GET", "path": f"/v1/snapshots/{PURPOSE}?format=csv"},
    "ndjson denied snapshot": {
        "method": "GET",
        "path": f"/v1/snapshots/{PURPOSE}?set=denied&format=ndjson",
    },
    "parquet snapshot": {"method": "GET", "path": f"/v1/snapshots/{PURPOSE}?format=parquet"},
    "change feed": {"method": "GET", "path": "/v1/changes?after=0"},
    "change feed of a purpose": {"method": "GET", "path": f"/v1/changes?purpose={PURPOSE}"},
}


def send(client: FlaskClient, token: str, read: dict[str, Any]) -> TestResponse:
    """Send one of READS with a bearer token."""
    options = {k: v for k, v in read.items() if k not in ("method", "path")}
    return client.open(read["path"], method=read["method"], headers=bearer(token), **options)


def assert_unavailable(resp: TestResponse) -> None:
    """A 503 problem that tells the client when to retry and carries no answer."""
    assert resp.status_code == 503, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/problem+json"
    assert int(resp.headers["Retry-After"]) >= 1
    body = json.loads(resp.get_data(as_text=True))
    assert body["status"] == 503
    assert body["title"]
    assert body["detail"]
    assert not {"allowed", "denied", "events", "state", "basis"} & set(body)
    assert "Consent-As-Of" not in resp.headers


@pytest.fixture
def unreachable_app() -> Iterator[Flask]:
    """An app whose database nobody answers for."""
    app = create_app(app_config(UNREACHABLE))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("read", list(READS))
def test_every_read_on_an_unreachable_database_is_a_503_with_retry_after(
    unreachable_app: Flask, read: str
) -> None:
    client = unreachable_app.test_client()
    assert_unavailable(send(client, "any-token-at-all", READS[read]))


@pytest.fixture
def failing_ledger(app: Flask, api: Any) -> Iterator[dict[str, str]]:
    """A ledger whose every read fails once the caller's key has been checked.

    Keys still authenticate, so the failure is met by the read path itself rather than by the
    key check in front of it. Returns the tokens to call with.
    """
    api.purpose(defaults={"*": "granted"}, unknown_subject="granted")
    api.choose("u1", "granted")
    api.choose("u2", "granted")

    def fail(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("SELECT", "UPDATE", "INSERT", "WITH") and "api_keys" not in statement:
            raise sa.exc.OperationalError(statement, {}, ConnectionError("server closed"))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", fail)
    yield dict(api.tokens)
    sa.event.remove(engine, "before_cursor_execute", fail)


@pytest.mark.parametrize("read", list(READS))
def test_a_database_failing_after_the_key_check_is_still_a_503_never_an_answer(
    app: Flask, failing_ledger: dict[str, str], read: str
) -> None:
    resp = send(app.test_client(), failing_ledger["pipeline"], READS[read])
    assert_unavailable(resp)
