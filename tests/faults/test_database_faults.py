"""The database connection cut under load, through a TCP proxy the test controls (PostgreSQL's
own server is never stopped): reads fail closed with 503, writes commit whole or not at all,
and the service recovers within 2 s of the database coming back, without a restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, postgres_only
from tests.e2e.conftest import ALLOWED, DE, PURPOSE, US, arrange
from tests.live import LiveServer, live_server
from tests.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = postgres_only

MAX_LAG = 0.5
STATIC = US[:10] + DE[:5]  # never written during the test: their answers are known
FLIPPED = [f"flip-{i}" for i in range(4)]  # written during the test
CUT_AFTER, CUT_FOR, RUN_AFTER = 2.0, 5.0, 2.5


@dataclass
class Outcome:
    """One request made during the run."""

    what: str
    started: float
    ended: float
    status: int  # 0: the connection failed
    retry_after: str | None = None
    body: Any = None


@pytest.fixture
def cut_able(tmp_path: Path) -> Iterator[tuple[LiveServer, TcpProxy]]:
    """A live server reaching PostgreSQL through a proxy, trusting its index for 0.5 s."""
    db = make_url(PG_URL)
    with (
        tcp_proxy(db.host or "127.0.0.1", db.port or 5432) as proxy,
        live_server(
            tmp_path,
            database_port=proxy.port,
            CONSENT_INDEX_MAX_LAG_SECONDS=str(MAX_LAG),
            CONSENT_DB_TIMEOUT_SECONDS="2",
        ) as live,
    ):
        arrange(live)
        yield live, proxy


def expected_allowed(user_id: str) -> bool:
    return user_id in set(ALLOWED)


# One small closure per kind of reader, sharing the recorder: complex only by count.
def run_load(  # noqa: C901
    live: LiveServer, until: threading.Event
) -> tuple[list[Outcome], list[Outcome]]:
    """Readers of every kind and one writer, until `until` is set: (reads, writes)."""
    reads: list[Outcome] = []
    writes: list[Outcome] = []
    lock = threading.Lock()
    token = {r: {"Authorization": f"Bearer {live.tokens[r]}"} for r in live.tokens}

    def record(
        into: list[Outcome], what: str, call: Callable[[httpx.Client], Any], meta: Any = None
    ) -> None:
        started = time.monotonic()
        try:
            with httpx.Client(base_url=live.base_url, timeout=15) as http:
                status, retry_after, body = call(http)
        except httpx.TransportError as exc:
            status, retry_after, body = 0, None, meta if meta is not None else repr(exc)
        with lock:
            into.append(Outcome(what, started, time.monotonic(), status, retry_after, body))

    def lookup(http: httpx.Client) -> tuple[int, str | None, Any]:
        uid = STATIC[int(time.monotonic() * 1000) % len(STATIC)]
        r = http.get(f"/v1/lookup/{PURPOSE}/{uid}", headers=token["pipeline"])
        return r.status_code, r.headers.get("Retry-After"), (uid, r.json())

    def batch(http: httpx.Client) -> tuple[int, str | None, Any]:
        r = http.post(f"/v1/lookup/{PURPOSE}", json={"user_ids": STATIC}, headers=token["pipeline"])
        return r.status_code, r.headers.get("Retry-After"), r.json()

    def text_filter(http: httpx.Client) -> tuple[int, str | None, Any]:
        body = "".join(f"{u}\n" for u in STATIC).encode()
        headers = {**token["pipeline"], "Content-Type": "text/plain"}
        with http.stream("POST", f"/v1/filter/{PURPOSE}", content=body, headers=headers) as r:
            data = r.read()  # a cut chunked body raises here: never taken as complete
        return r.status_code, r.headers.get("Retry-After"), data.decode().split()

    def arrow_filter(http: httpx.Client) -> tuple[int, str | None, Any]:
        sink = pa.BufferOutputStream()
        schema = pa.schema([("user_id", pa.string())])
        with pa.ipc.new_stream(sink, schema) as w:
            w.write_batch(pa.record_batch([pa.array(STATIC)], schema=schema))
        headers = {**token["pipeline"], "Content-Type": "application/vnd.apache.arrow.stream"}
        with http.stream(
            "POST", f"/v1/filter/{PURPOSE}", content=sink.getvalue().to_pybytes(), headers=headers
        ) as r:
            data = r.read()
        if r.status_code != 200:
            return r.status_code, r.headers.get("Retry-After"), None
        mask = pa.ipc.open_stream(data).read_all().column("allowed").to_pylist()
        return 200, None, [u for u, m in zip(STATIC, mask, strict=True) if m]

    def snapshot(http: httpx.Client) -> tuple[int, str | None, Any]:
        with http.stream(
            "GET", f"/v1/snapshots/{PURPOSE}?format=csv", headers=token["pipeline"]
        ) as r:
            data = r.read()
        return r.status_code, r.headers.get("Retry-After"), data

    def reader(what: str, call: Callable[[httpx.Client], Any]) -> None:
        while not until.is_set():
            record(reads, what, call)
            time.sleep(0.02)

    def writer() -> None:
        n = 0
        while not until.is_set():
            uid = FLIPPED[n % len(FLIPPED)]
            state = "denied" if (n // len(FLIPPED)) % 2 else "granted"
            key = uuid.uuid4().hex

            def put(http: httpx.Client, uid: str = uid, state: str = state, key: str = key) -> Any:
                r = http.put(
                    f"/v1/users/{uid}/consents/{PURPOSE}",
                    json={"state": state},
                    headers={**token["app"], "Idempotency-Key": key},
                )
                return r.status_code, r.headers.get("Retry-After"), (uid, state, key)

            record(writes, "write", put, meta=(uid, state, key))
            n += 1
            time.sleep(0.02)

    threads = [
        threading.Thread(target=reader, args=(name, call), daemon=True)
        for name, call in (
            ("lookup", lookup),
            ("batch", batch),
            ("text filter", text_filter),
            ("arrow filter", arrow_filter),
            ("snapshot", snapshot),
        )
    ] + [threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return reads, writes


def check_read(o: Outcome) -> str | None:
    """What is wrong with a read's answer, if anything."""
    if o.status == 503:
        return None if o.retry_after else "503 without Retry-After"
    if o.status == 0:
        return None  # the client saw the failure; nothing was taken as an answer
    if o.status != 200:
        return f"status {o.status}: {str(o.body)[:200]}"
    allowed = {u for u in STATIC if expected_allowed(u)}
    if o.what == "lookup":
        uid, doc = o.body
        return None if doc["allowed"] is expected_allowed(uid) else f"wrong answer {doc}"
    if o.what == "batch":
        return None if set(o.body["allowed"]) == allowed else "wrong batch"
    if o.what in ("text filter", "arrow filter"):
        return None if o.body == [u for u in STATIC if u in allowed] else f"wrong {o.what}"
    return None  # snapshot: complete (its chunked body ended properly) is what matters here


def test_a_cut_database_fails_reads_closed_loses_no_write_and_recovers_within_2_s(
    cut_able: tuple[LiveServer, TcpProxy],
) -> None:
    live, proxy = cut_able
    until = threading.Event()
    result: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: result.update(load=run_load(live, until)))
    loader.start()
    time.sleep(CUT_AFTER)
    cut_at = time.monotonic()
    proxy.cut()
    time.sleep(CUT_FOR)
    proxy.restore()
    restored_at = time.monotonic()
    # Recovery: the first moment a head lookup is answered again.
    recovered_at = None
    while time.monotonic() - restored_at < 10:
        r = httpx.get(
            f"{live.base_url}/v1/lookup/{PURPOSE}/{US[1]}",
            headers={"Authorization": f"Bearer {live.tokens['pipeline']}"},
        )
        if r.status_code == 200:
            recovered_at = time.monotonic()
            break
        time.sleep(0.05)
    time.sleep(RUN_AFTER)
    until.set()
    loader.join()
    reads, writes = result["load"]

    wrong = [f"{o.what}: {problem}" for o in reads if (problem := check_read(o))]
    assert not wrong, wrong[:5]
    # Once the index is older than its max lag (and requests under way have ended), every
    # read is a 503.
    settled = cut_at + MAX_LAG + 1.5
    during = [o for o in reads if o.started >= settled and o.ended <= restored_at]
    assert during, "no read fell inside the cut"
    assert {o.status for o in during} <= {503}, [(o.what, o.status) for o in during][:5]
    assert recovered_at is not None
    assert recovered_at - restored_at < 2.0

    # Writes: every accepted one is in the ledger once; every failed one, retried with its
    # Idempotency-Key after the cut, is accepted once too. Nothing half-written.
    failed = [o for o in writes if o.status != 200]
    assert failed
    assert all(o.status in (0, 503) for o in failed)
    with httpx.Client(base_url=live.base_url, timeout=15) as http:
        for o in failed:
            uid, state, key = o.body
            r = http.put(
                f"/v1/users/{uid}/consents/{PURPOSE}",
                json={"state": state},
                headers={"Authorization": f"Bearer {live.tokens['app']}", "Idempotency-Key": key},
            )
            assert r.status_code == 200, r.text
    engine = sa.create_engine(live.database_url)
    with engine.connect() as conn:
        events = conn.execute(
            sa.text(
                "SELECT count(*) FROM events WHERE kind = 'choice_set' AND user_id LIKE 'flip-%'"
            )
        ).scalar_one()
    engine.dispose()
    assert events == len(writes)
    print(
        f"\nreads {len(reads)} ({sum(o.status == 503 for o in reads)} x 503), writes "
        f"{len(writes)} ({len(failed)} failed, all retried once), refused connections "
        f"{proxy.refused}, recovered {recovered_at - restored_at:.2f} s after restore"
    )
