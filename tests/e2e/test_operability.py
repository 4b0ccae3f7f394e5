"""Operability over a real gunicorn: metrics across workers, JSON logs with request ids, no
secret in any log line, and a revoked key refused by every worker once revoke returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer, live_server

REPO = Path(__file__).resolve().parents[2]
CONSENT = Path(sys.executable).parent / "consent"


@pytest.fixture
def logged(tmp_path: Path) -> Any:
    """A live server writing its access log (as `make run` does)."""
    with live_server(tmp_path, CONSENT_ACCESS_LOG="-") as server:
        yield server


def call(
    live: LiveServer,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (so either worker may answer): status, headers, body."""
    request = urllib.request.Request(f"{live.base_url}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def log_lines(live: LiveServer) -> list[dict[str, Any]]:
    """The server's log as JSON objects; a line that is not one fails the test."""
    time.sleep(0.3)  # let the workers' last lines reach the file
    lines = [line for line in live.log().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line[:200]}")
    return parsed


def test_metrics_add_up_the_requests_of_every_worker(logged: LiveServer) -> None:
    """Requests go out in concurrent rounds until both workers have answered some (the kernel
    may hand a run of connections to one worker: in CI once all of 30 sequential ones); the
    one /metrics answer then counts every request, whichever worker served it."""

    def purposes(_: int) -> int:
        return call(logged, "GET", "/v1/purposes", token=logged.tokens["pipeline"])[0]

    sent, pids = 0, set()
    for _ in range(10):
        with ThreadPoolExecutor(max_workers=6) as pool:
            assert list(pool.map(purposes, range(30))) == [200] * 30
        sent += 30
        pids = {r["pid"] for r in log_lines(logged) if r.get("route") == "/v1/purposes"}
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"both workers should have answered some of the {sent} requests"
    status, _, body = call(logged, "GET", "/metrics")
    assert status == 200
    text = body.decode()
    line = f'consent_http_requests_total{{method="GET",route="/v1/purposes",status="200"}} {sent}.0'
    assert line in text
    assert "consent_index_lag_seconds" in text
    assert "consent_ledger_head_seq" in text


def test_every_log_line_is_json_and_carries_the_request_id_the_response_returns(
    logged: LiveServer,
) -> None:
    _, given, _ = call(logged, "GET", "/v1/purposes", headers={"X-Request-ID": "trace-abc.123"})
    _, made, _ = call(logged, "GET", "/v1/purposes", token=logged.tokens["pipeline"])
    assert given["X-Request-ID"] == "trace-abc.123"
    assert len(made["X-Request-ID"]) == 16
    access = {r["request_id"]: r for r in log_lines(logged) if r["name"] == "consent.access"}
    assert access["trace-abc.123"]["status"] == 401
    assert access[made["X-Request-ID"]]["key"] == "live-pipeline"
    assert access[made["X-Request-ID"]]["route"] == "/v1/purposes"


def test_no_token_cookie_or_request_body_ever_reaches_the_logs(logged: LiveServer) -> None:
    secret = f"BODY-{uuid.uuid4().hex}"
    cookie = f"COOKIE-{uuid.uuid4().hex}"
    bad_token = f"bad-{uuid.uuid4().hex}"
    t = logged.tokens
    call(
        logged,
        "POST",
        "/v1/purposes",
        token=t["admin"],
        body={"key": "model_training", "title": secret, "defaults": {"*": "granted"}},
    )
    call(
        logged,
        "PUT",
        "/v1/users/u1/consents/model_training",
        token=t["app"],
        body={"state": "denied", "source": secret},
        headers={"Cookie": f"session={cookie}"},
    )
    status, _, body = call(
        logged,
        "POST",
        "/v1/users/u1/overrides",
        token=t["support"],
        body={"purpose": "model_training", "state": "granted", "reason": secret, "ticket": "SUP-1"},
    )
    assert status == 201, body
    override = json.loads(body)["id"]
    call(logged, "DELETE", f"/v1/users/u1/overrides/{override}?reason={secret}", token=t["support"])
    call(
        logged,
        "PUT",
        "/v1/users/u1/consents/model_training",
        token=t["app"],
        body={"state": secret},
    )  # a 422: it names the field, not the value
    call(
        logged,
        "POST",
        "/v1/lookup/model_training",
        token=t["pipeline"],
        body={"user_ids": [secret]},
    )
    call(logged, "GET", "/v1/purposes", token=bad_token)
    call(logged, "GET", "/v1/changes", token=t["pipeline"])
    text = logged.log()
    assert text.count('"consent.access"') >= 8
    for value in (*t.values(), bad_token, cookie, secret):
        assert value not in text


def test_a_revoked_key_is_refused_by_every_worker_as_soon_as_revoke_returns(
    live: LiveServer,
) -> None:
    token = live.make_key("pipeline", "soon-revoked")
    # Both workers have cached the key as active.
    assert {call(live, "GET", "/v1/purposes", token=token)[0] for _ in range(20)} == {200}
    env = {**os.environ, "CONSENT_DATABASE_URL": live.database_url}
    done = subprocess.run(
        [str(CONSENT), "keys", "revoke", "soon-revoked"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    statuses = [call(live, "GET", "/v1/purposes", token=token)[0] for _ in range(40)]
    assert set(statuses) == {401}
