"""The workloads, each measured beside its baseline and checked against the seeded population."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import clients
from bench.databases import BenchDatabase
from bench.population import BASIS_NAMES, ID_BASE, PURPOSE, IntArray, Population, user_ids
from bench.report import GIB, MIB, Figure, RunResult
from bench.server import Server, rss_bytes
from bench.traffic import BATCH_SIZE, UNKNOWN_SHARE, ArrowStream, Traffic, draw_indices

LUA_SCRIPT = Path(__file__).resolve().parent / "lookup.lua"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
WRK_CONNECTIONS = 8
WRK_THREADS = 2
CLIENT_THREADS = 8
SPOT_CHECKS = 200
RSS_SAMPLE_SECONDS = 0.05
READ_BLOCK = 1 << 20
SQL_CHUNK = 10_000
FRESHNESS_POLL_LIMIT = 5.0
FRESHNESS_STREAK = 20
FRESHNESS_POLLERS = 2
EEA_MEMBERS = (
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO"
).split()


@dataclass(frozen=True)
class Profile:
    """How long and how much each workload runs: the full benchmark or the quick one."""

    name: str
    sizes: tuple[int, ...]
    stream_ids: int
    wrk_seconds: int
    warmup_seconds: int
    stream_time_limit: float
    batch_seconds: float
    single_seconds: float
    sql_seconds: float
    snapshot_time_limit: float
    freshness_trials: int


FULL = Profile(
    name="full",
    sizes=(100_000, 1_000_000, 10_000_000),
    stream_ids=10_000_000,
    wrk_seconds=10,
    warmup_seconds=2,
    stream_time_limit=60.0,
    batch_seconds=10.0,
    single_seconds=5.0,
    sql_seconds=10.0,
    snapshot_time_limit=300.0,
    freshness_trials=10,
)
QUICK = Profile(
    name="quick",
    sizes=(10_000, 100_000),
    stream_ids=1_000_000,
    wrk_seconds=2,
    warmup_seconds=1,
    stream_time_limit=2.0,
    batch_seconds=1.5,
    single_seconds=1.5,
    sql_seconds=1.0,
    snapshot_time_limit=10.0,
    freshness_trials=4,
)


@dataclass
class Session:
    """One database at one N, its running server, the baseline server, and what was measured."""

    result: RunResult
    database: BenchDatabase
    server: Server
    baseline: Server
    traffic: Traffic
    profile: Profile
    pipeline_token: str
    app_token: str
    filter_rates: dict[str, float] = field(default_factory=dict)  # by figure key, for the SQL ratio

    @property
    def population(self) -> Population:
        """The seeded population."""
        return self.traffic.population

    def add(self, figure: Figure) -> Figure:
        """Record a figure and return it."""
        self.result.figures.append(figure)
        return figure

    def lookup_path(self, user_id: str, as_of: int | None = None) -> str:
        """The single-lookup path for an ID."""
        path = f"/v1/lookup/{PURPOSE}/{user_id}"
        return path if as_of is None else f"{path}?as_of={as_of}"


# --- single lookup -----------------------------------------------------------------------


def spot_check_lookups(s: Session) -> None:
    """Compare single-lookup answers for random known and unknown IDs with the population."""
    rng = np.random.default_rng(11)
    indices = draw_indices(s.population, SPOT_CHECKS, rng)
    expected = s.population.allowed_for(indices)
    basis = s.population.basis
    conn = clients.connect(s.server.port, timeout=30)
    wrong: list[str] = []
    try:
        for index, allowed in zip(indices.tolist(), expected.tolist(), strict=True):
            uid = str(ID_BASE + index)
            status, body = clients.request_json(conn, "GET", s.lookup_path(uid), s.pipeline_token)
            known = index < s.population.size
            want_basis = BASIS_NAMES[basis[index]] if known else "unknown"
            if (
                status != 200
                or body.get("allowed") is not allowed
                or body.get("basis") != want_basis
                or body.get("user_id") != uid
                or not isinstance(body.get("as_of"), int)
            ):
                got = f"{status} {str(body)[:120]}"
                wrong.append(f"{uid}: got {got}, want allowed={allowed} basis={want_basis}")
    finally:
        conn.close()
    s.result.check(
        f"single lookup answers {SPOT_CHECKS} random IDs right",
        not wrong,
        f"{len(wrong)} wrong, e.g. {wrong[0]}" if wrong else "",
    )


@dataclass(frozen=True)
class WrkResult:
    """What wrk measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    bad_status: int

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(port: int, seconds: int, token: str, subjects: int) -> WrkResult:
    """Wrk with 8 connections and 2 threads over random known and unknown IDs."""
    env = dict(os.environ)
    env.update(
        BENCH_TOKEN=token,
        BENCH_ID_BASE=str(ID_BASE),
        BENCH_SUBJECTS=str(subjects),
        BENCH_UNKNOWN_SHARE=str(UNKNOWN_SHARE),
        BENCH_PURPOSE=PURPOSE,
    )
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{clients.HOST}:{port}/",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    data = json.loads(match.group(1))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        bad_status=data["bad_status"],
    )


def single_lookup(s: Session) -> None:
    """Wrk against the single lookup, then against the bare Flask baseline, back to back."""
    p = s.profile
    subjects = s.population.size
    run_wrk(s.server.port, p.warmup_seconds, s.pipeline_token, subjects)
    service = run_wrk(s.server.port, p.wrk_seconds, s.pipeline_token, subjects)
    run_wrk(s.baseline.port, p.warmup_seconds, s.pipeline_token, subjects)
    bare = run_wrk(s.baseline.port, p.wrk_seconds, s.pipeline_token, subjects)
    for name, w in (("single lookup", service), ("bare Flask baseline", bare)):
        s.result.check(
            f"{name}: wrk saw only 2xx answers and no socket errors",
            w.errors == 0 and w.bad_status == 0,
            f"{w.bad_status} non-2xx answers, {w.errors} socket errors of {w.requests}",
        )
    ratio = service.rate / bare.rate if bare.rate else None
    s.add(
        Figure(
            "lookup.rps",
            "single lookup over HTTP, requests/s",
            service.rate,
            "req/s",
            baseline=bare.rate,
            baseline_what="(bare Flask)",
            ratio=ratio,
            target="≥ 0.8× bare Flask (N = 1M)",
            met=ratio is not None and ratio >= 0.8,
        )
    )
    s.add(
        Figure(
            "lookup.p50",
            "single lookup p50",
            service.p50_ms,
            "ms",
            baseline=bare.p50_ms,
            baseline_what="(bare Flask)",
            ratio=service.p50_ms / bare.p50_ms if bare.p50_ms else None,
        )
    )
    s.add(
        Figure(
            "lookup.p99",
            "single lookup p99",
            service.p99_ms,
            "ms",
            baseline=bare.p99_ms,
            baseline_what="(bare Flask)",
            ratio=service.p99_ms / bare.p99_ms if bare.p99_ms else None,
            target="≤ 5 ms (N = 1M)",
            met=service.p99_ms <= 5.0,
        )
    )
    rss = s.server.workers_rss()
    s.add(
        Figure(
            "rss.warm",
            "workers' RSS after warm-up (sum of 2)",
            float(rss),
            "bytes",
            baseline=float(s.baseline.workers_rss()),
            baseline_what="(bare Flask)",
            target="≤ 1 GiB (N = 10M)",
            met=rss <= GIB,
        )
    )


# --- streamed filter ---------------------------------------------------------------------


def _error_body(response: http.client.HTTPResponse) -> str:
    return response.read(2000).decode(errors="replace")


def _read_text(response: http.client.HTTPResponse) -> tuple[int, int] | str:
    """Count lines and CRC-32 of a text answer as it arrives (an error body if not 200)."""
    if response.status != 200:
        return _error_body(response)
    lines = 0
    crc = 0
    while block := response.read1(READ_BLOCK):
        lines += block.count(b"\n")
        crc = zlib.crc32(block, crc)
    return lines, crc


def _stream_note(sent_ids: int, total_ids: int, timed_out: bool) -> str:
    if timed_out:
        return f"time-bounded: {sent_ids:,} of {total_ids:,} IDs sent"
    return f"{sent_ids:,} IDs"


def _cut_off(s: Session, key: str, what: str, target: str, result: clients.DuplexResult) -> bool:
    """Report a stream the watchdog had to cut off: no rate, and a note saying why."""
    if not result.aborted:
        return False
    s.result.notes.append(
        f"{what}: still answering {result.seconds:.0f} s after the first byte; cut off, "
        "so no rate and no check of its answers"
    )
    note = f"cut off after {result.seconds:.0f} s"
    s.add(Figure(key, what, None, "IDs/s", target=target, met=False, note=note))
    return True


def filter_text(s: Session) -> None:
    """Stream the IDs as text to POST /v1/filter while reading the allowed ones back."""
    stream = s.traffic.text
    result = clients.duplex_post(
        s.server.port,
        f"/v1/filter/{PURPOSE}",
        {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": "text/plain"},
        stream.parts,
        _read_text,
        s.profile.stream_time_limit,
    )
    sent_ids, allowed, crc = stream.expected(result.parts_sent)
    label = "filter, newline text"
    what = "filter, newline text, IDs/s end to end"
    target = "≥ 1,500,000 IDs/s (N = 1M)"
    if _cut_off(s, "filter.text", what, target, result):
        return
    ok = result.status == 200 and isinstance(result.consumed, tuple)
    if not s.result.check(
        f"{label}: answered 200", ok, f"{result.status} {str(result.consumed)[:300]}"
    ):
        return
    s.result.check(
        f"{label}: body sent completely", result.send_error is None, str(result.send_error)
    )
    s.result.check(
        f"{label}: Consent-As-Of header is a seq",
        result.headers.get("consent-as-of", "").isdigit(),
        repr(result.headers.get("consent-as-of")),
    )
    lines, got_crc = result.consumed
    s.result.check(
        f"{label}: allowed lines = expected",
        lines == allowed,
        f"got {lines:,}, expected {allowed:,} of {sent_ids:,} IDs",
    )
    s.result.check(
        f"{label}: exactly the allowed IDs, in input order (CRC-32)",
        got_crc == crc,
        f"CRC {got_crc:08x}, expected {crc:08x}",
    )
    rate = sent_ids / result.seconds if result.seconds else 0.0
    s.filter_rates["filter.text"] = rate
    s.add(
        Figure(
            "filter.text",
            what,
            rate,
            "IDs/s",
            target=target,
            met=rate >= 1_500_000,
            note=_stream_note(sent_ids, sum(stream.ids_per_part), result.timed_out),
        )
    )


def _read_arrow(response: http.client.HTTPResponse) -> pa.Array | str:
    """Read an Arrow answer batch by batch into one boolean array (an error body if not 200)."""
    if response.status != 200:
        return _error_body(response)
    reader = pa.ipc.open_stream(response)
    chunks = [batch.column(0) for batch in reader]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.bool_())


def filter_arrow(s: Session, column: str) -> None:
    """Stream the IDs as an Arrow IPC stream (int64 or string column); read the mask back."""
    stream: ArrowStream = s.traffic.arrow_int64 if column == "int64" else s.traffic.arrow_string
    result = clients.duplex_post(
        s.server.port,
        f"/v1/filter/{PURPOSE}",
        {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": ARROW_STREAM},
        stream.parts,
        _read_arrow,
        s.profile.stream_time_limit,
        head=stream.head,
        tail=stream.tail,
    )
    label = f"filter, Arrow IPC {column}"
    what = f"filter, Arrow IPC {column} IDs, IDs/s end to end"
    target = "≥ 10,000,000 IDs/s (N = 1M)"
    if _cut_off(s, f"filter.arrow.{column}", what, target, result):
        return
    ok = result.status == 200 and isinstance(result.consumed, pa.Array)
    if not s.result.check(
        f"{label}: answered 200", ok, f"{result.status} {str(result.consumed)[:300]}"
    ):
        return
    s.result.check(
        f"{label}: body sent completely", result.send_error is None, str(result.send_error)
    )
    expected = stream.expected(result.parts_sent)
    got = result.consumed
    same_length = len(got) == len(expected)
    s.result.check(
        f"{label}: one answer per ID",
        same_length,
        f"{len(got):,} answers for {len(expected):,} IDs",
    )
    if same_length:
        mask = got.to_numpy(zero_copy_only=False)
        wrong = int(np.count_nonzero(mask != expected))
        s.result.check(
            f"{label}: `allowed` = expected for every ID",
            wrong == 0 and got.null_count == 0,
            f"{wrong:,} wrong, {got.null_count} nulls; "
            f"{int(mask.sum()):,} allowed, expected {int(expected.sum()):,}",
        )
    rate = len(expected) / result.seconds if result.seconds else 0.0
    s.filter_rates[f"filter.arrow.{column}"] = rate
    s.add(
        Figure(
            f"filter.arrow.{column}",
            what,
            rate,
            "IDs/s",
            target=target,
            met=rate >= 10_000_000,
            note=_stream_note(len(expected), s.traffic.total_ids, result.timed_out),
        )
    )


# --- hand-written SQL --------------------------------------------------------------------

POSTGRES_BATCH_SQL = """
SELECT s.user_id,
       CASE WHEN s.erased THEN false
            WHEN o.state IS NOT NULL THEN o.state = 'granted'
            WHEN c.state IS NOT NULL THEN c.state = 'granted'
            WHEN s.jurisdiction = ANY(%(eea)s) THEN false
            ELSE true END
FROM subjects s
LEFT JOIN choices c ON c.user_id = s.user_id AND c.purpose = %(purpose)s
LEFT JOIN overrides o ON o.user_id = s.user_id AND o.purpose = %(purpose)s
     AND o.lifted_seq IS NULL AND o.expired_seq IS NULL
     AND (o.expires_at IS NULL OR o.expires_at > now())
WHERE s.user_id = ANY(%(ids)s)
"""

SQLITE_BATCH_SQL = """
SELECT s.user_id,
       CASE WHEN s.erased THEN 0
            WHEN o.state IS NOT NULL THEN o.state = 'granted'
            WHEN c.state IS NOT NULL THEN c.state = 'granted'
            WHEN s.jurisdiction IN ({eea}) THEN 0
            ELSE 1 END
FROM subjects s
LEFT JOIN choices c ON c.user_id = s.user_id AND c.purpose = ?
LEFT JOIN overrides o ON o.user_id = s.user_id AND o.purpose = ?
     AND o.lifted_seq IS NULL AND o.expired_seq IS NULL
     AND (o.expires_at IS NULL OR o.expires_at > ?)
WHERE s.user_id IN ({ids})
"""


def _sql_chunks(traffic: Traffic) -> Any:
    for block in traffic.blocks:
        for lo in range(0, len(block), SQL_CHUNK):
            yield block[lo : lo + SQL_CHUNK]


def _sql_runner(
    database: BenchDatabase,
) -> tuple[Callable[[list[str]], dict[str, bool]], Callable[[], None]]:
    """A function answering one batch of IDs with one hand-written query, and a closer."""
    if database.kind == "postgres":
        pg = psycopg.connect(database.url, autocommit=True)
        params: dict[str, Any] = {"eea": EEA_MEMBERS, "purpose": PURPOSE}

        def query_postgres(ids: list[str]) -> dict[str, bool]:
            params["ids"] = ids
            return dict(pg.execute(POSTGRES_BATCH_SQL, params).fetchall())

        return query_postgres, pg.close
    lite = sqlite3.connect(database.sqlite_path, check_same_thread=False)
    eea = ", ".join(f"'{c}'" for c in EEA_MEMBERS)
    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    def query_sqlite(ids: list[str]) -> dict[str, bool]:
        sql = SQLITE_BATCH_SQL.format(eea=eea, ids=", ".join("?" * len(ids)))
        return {u: bool(a) for u, a in lite.execute(sql, [PURPOSE, PURPOSE, now, *ids])}

    return query_sqlite, lite.close


def sql_baseline(s: Session) -> None:
    """Hand-written SQL batches of 10,000 IDs on the same database, against the filter's rate."""
    query, close = _sql_runner(s.database)
    population = s.population
    done = 0
    spent = 0.0
    wrong = 0
    try:
        for chunk in _sql_chunks(s.traffic):
            if spent > s.profile.sql_seconds:
                break
            ids = user_ids(chunk)
            started = time.perf_counter()
            found = query(ids)
            allowed = sum(found.get(u, False) for u in ids)
            spent += time.perf_counter() - started
            wrong += allowed != int(population.allowed_for(chunk).sum())
            done += len(chunk)
    finally:
        close()
    s.result.check(
        "hand-written SQL baseline agrees with the population", wrong == 0, f"{wrong} batches off"
    )
    sql_rate = done / spent if spent else 0.0
    for key, what in (
        ("filter.text", "filter (text)"),
        ("filter.arrow.int64", "filter (Arrow int64)"),
    ):
        rate = s.filter_rates.get(key)
        ratio = rate / sql_rate if rate is not None and sql_rate else None
        s.add(
            Figure(
                f"sql.{key}",
                f"{what} vs hand-written SQL batch of 10,000, IDs/s",
                rate,
                "IDs/s",
                baseline=sql_rate,
                baseline_what="(SQL)",
                ratio=ratio,
                target="≥ 10× SQL",
                met=ratio is not None and ratio >= 10,
                note=f"SQL over {done:,} IDs",
            )
        )


# --- batch lookup ------------------------------------------------------------------------


def _in_threads(count: int, work: Callable[[int], tuple[int, int]]) -> tuple[int, int, float]:
    """Run work(i) in `count` threads; return summed (done, wrong) and the wall time."""
    totals = [(0, 0)] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            totals[i] = work(i)
        except BaseException as exc:  # reported after the join, with the others' figures
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    seconds = time.monotonic() - started
    if errors:
        raise errors[0]
    return sum(d for d, _ in totals), sum(w for _, w in totals), seconds


def batch_lookup(s: Session) -> None:
    """POST /v1/lookup with 10,000 IDs from 8 threads; baseline: one GET per ID from 8 threads."""
    batches = s.traffic.batches
    body, _, indices = batches[0]
    status, answer = clients.once_json(
        s.server.port, "POST", f"/v1/lookup/{PURPOSE}", s.pipeline_token, body
    )
    expected = {
        u
        for u, a in zip(user_ids(indices), s.population.allowed_for(indices).tolist(), strict=True)
        if a
    }
    s.result.check(
        "batch lookup: exactly the expected IDs allowed",
        status == 200
        and set(answer.get("allowed", [])) == expected
        and len(answer.get("denied", [])) == BATCH_SIZE - len(expected),
        f"{status}: {str(answer)[:200]}; expected {len(expected)} allowed",
    )
    path = f"/v1/lookup/{PURPOSE}"

    def batch_client(i: int) -> tuple[int, int]:
        conn = clients.connect(s.server.port)
        deadline = time.monotonic() + s.profile.batch_seconds
        done = wrong = 0
        k = i
        try:
            while time.monotonic() < deadline:
                data, allowed, _ = batches[k % len(batches)]
                code, doc = clients.request_json(conn, "POST", path, s.pipeline_token, data)
                ok = (
                    code == 200
                    and len(doc["allowed"]) == allowed
                    and len(doc["allowed"]) + len(doc["denied"]) == BATCH_SIZE
                )
                wrong += not ok
                done += BATCH_SIZE
                k += 1
        finally:
            conn.close()
        return done, wrong

    done, wrong, seconds = _in_threads(CLIENT_THREADS, batch_client)
    s.result.check(
        "batch lookup: every timed answer had the expected allowed count",
        wrong == 0,
        f"{wrong} wrong answers",
    )
    batch_rate = done / seconds if seconds else 0.0

    flat = np.concatenate(s.traffic.blocks)
    expected_mask = np.concatenate(s.traffic.masks)
    share = len(flat) // CLIENT_THREADS

    def single_client(i: int) -> tuple[int, int]:
        conn = clients.connect(s.server.port)
        deadline = time.monotonic() + s.profile.single_seconds
        done = wrong = 0
        position = i * share
        try:
            while time.monotonic() < deadline and done < share:
                uid = str(ID_BASE + int(flat[position + done]))
                code, doc = clients.request_json(conn, "GET", s.lookup_path(uid), s.pipeline_token)
                wrong += code != 200 or doc.get("allowed") is not bool(
                    expected_mask[position + done]
                )
                done += 1
        finally:
            conn.close()
        return done, wrong

    singles, single_wrong, single_seconds = _in_threads(CLIENT_THREADS, single_client)
    s.result.check(
        "one-lookup-per-ID client: every answer right",
        single_wrong == 0,
        f"{single_wrong} wrong answers",
    )
    single_rate = singles / single_seconds if single_seconds else 0.0
    ratio = batch_rate / single_rate if single_rate else None
    s.add(
        Figure(
            "batch.json",
            "batch lookup JSON, 10,000 IDs a request, IDs/s",
            batch_rate,
            "IDs/s",
            baseline=single_rate,
            baseline_what="(1 lookup per ID)",
            ratio=ratio,
            target="≥ 300,000 IDs/s and ≥ 100× (N = 1M)",
            met=batch_rate >= 300_000 and ratio is not None and ratio >= 100,
        )
    )


# --- snapshot ----------------------------------------------------------------------------


class RssSampler:
    """Samples the sum of the workers' RSS every 50 ms in a thread; keeps the peak."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._pids = server.worker_pids()
        self.before = sum(rss_bytes(p) for p in self._pids)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, sum(rss_bytes(p) for p in self._pids))

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    @property
    def growth(self) -> int:
        """Peak minus the level before the download."""
        return self.peak - self.before


def _mismatches(table: pa.Table, column: str, expected: pa.Array) -> int:
    """How many values of a column differ from the expected ones (same length)."""
    got = pc.cast(table.column(column), pa.string())
    equal = pc.equal(got, expected)
    return len(expected) - int(pc.sum(pc.fill_null(equal, False)).as_py() or 0)


def snapshot_parquet(s: Session) -> None:
    """Download the allowed set as Parquet, timing it and watching the workers' memory."""
    limit = s.profile.snapshot_time_limit
    conn = clients.connect(s.server.port, timeout=limit + 60)
    buffer = io.BytesIO()
    timed_out = False
    status = 0
    watchdog = clients.Watchdog(conn, limit)
    with RssSampler(s.server) as rss:
        started = time.monotonic()
        try:
            watchdog.start()
            conn.request(
                "GET",
                f"/v1/snapshots/{PURPOSE}?set=allowed&format=parquet",
                headers={"Authorization": f"Bearer {s.pipeline_token}"},
            )
            response = conn.getresponse()
            status = response.status
            while block := response.read1(READ_BLOCK):
                buffer.write(block)
        except (OSError, http.client.HTTPException):
            if not watchdog.fired:
                raise
        finally:
            seconds = time.monotonic() - started
            timed_out = watchdog.fired
            watchdog.cancel()
            conn.close()
    label = "snapshot, Parquet"
    answered = status == 200 or (timed_out and status == 0)  # 0: cut off before the headers
    if not s.result.check(
        f"{label}: answered 200", answered, f"{status} {buffer.getvalue()[:300]!r}"
    ):
        return
    pop = s.population
    expected_index = np.flatnonzero(pop.allowed)
    if timed_out:
        s.result.notes.append(
            f"snapshot did not finish within {limit:.0f} s "
            f"({buffer.tell() / MIB:,.1f} MiB received); rows/s not measured"
        )
        rate = None
    else:
        table = pq.read_table(pa.BufferReader(buffer.getvalue()))
        rows = table.num_rows
        rate = rows / seconds if seconds else 0.0
        expected_ids = pc.cast(pa.array(expected_index + ID_BASE, pa.int64()), pa.string())
        ids_ok = rows == len(expected_index) and _mismatches(table, "user_id", expected_ids) == 0
        s.result.check(
            f"{label}: exactly the allowed subjects, in user_id order",
            ids_ok,
            f"{rows:,} rows, expected {len(expected_index):,}",
        )
        if ids_ok:
            want = pc.take(pa.array(BASIS_NAMES, pa.string()), pa.array(pop.basis[expected_index]))
            wrong = _mismatches(table, "basis", want)
            s.result.check(f"{label}: every basis right", wrong == 0, f"{wrong:,} wrong")
    s.add(
        Figure(
            "snapshot.rows",
            "snapshot Parquet (allowed set), rows/s",
            rate,
            "rows/s",
            target="≥ 3,000,000 rows/s (N = 10M)",
            met=rate is not None and rate >= 3_000_000,
            note="timed out" if timed_out else "",
        )
    )
    s.add(
        Figure(
            "snapshot.rss",
            "snapshot: peak growth of workers' RSS while streaming",
            float(rss.growth),
            "bytes",
            target="≤ 200 MB (N = 10M)",
            met=rss.growth <= 200 * 1_000_000,
        )
    )


# --- freshness ---------------------------------------------------------------------------


@dataclass
class _Poll:
    started: float
    correct: bool


def _poll_until_reflected(
    s: Session, uid: str, want: bool, written_at: float
) -> tuple[float | None, int, list[str]]:
    """Poll on fresh connections until a streak of answers all reflect the write.

    Returns the delay after which every answer was right (None: not within the poll limit),
    how many polls were made and the last wrong answers.
    """
    polls: list[_Poll] = []
    wrong: deque[str] = deque(maxlen=2)  # the last wrong answers, to explain a failure
    lock = threading.Lock()
    stop = threading.Event()
    deadline = written_at + FRESHNESS_POLL_LIMIT

    def streak() -> int:
        count = 0
        for p in reversed(polls):
            if not p.correct:
                break
            count += 1
        return count

    def poller() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                code, body = clients.once_json(
                    s.server.port, "GET", s.lookup_path(uid), s.pipeline_token
                )
            except OSError as e:  # counted as a wrong answer; a dead poller would look stale
                code, body = 0, {"error": repr(e)}
            correct = code == 200 and body.get("allowed") is want
            if not correct:
                wrong.append(f"{code} {str(body)[:80]}")
            with lock:
                polls.append(_Poll(started, correct))
                polls.sort(key=lambda p: p.started)
                if streak() >= FRESHNESS_STREAK:
                    stop.set()

    threads = [threading.Thread(target=poller, daemon=True) for _ in range(FRESHNESS_POLLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(FRESHNESS_POLL_LIMIT + 15)
    if streak() < FRESHNESS_STREAK:
        return None, len(polls), list(wrong)
    stale = [i for i, p in enumerate(polls) if not p.correct]
    if not stale:
        return 0.0, len(polls), []
    # From the first right answer after the last stale one on, every answer was right.
    return max(0.0, polls[stale[-1] + 1].started - written_at), len(polls), []


def freshness(s: Session) -> None:
    """Write choices through the API; time until every worker answers with them; check as_of."""
    pop = s.population
    rng = np.random.default_rng(13)
    candidates = np.flatnonzero(~pop.has_override)
    subjects: IntArray = rng.choice(
        candidates, max(1, s.profile.freshness_trials // 2), replace=False
    )
    delays: list[float] = []
    as_of_wrong: list[str] = []
    never: list[str] = []
    for index in subjects.tolist():
        uid = str(ID_BASE + index)
        for _ in range(2):  # flip the answer, then flip it back: the population stays as seeded
            code, before = clients.once_json(
                s.server.port, "GET", s.lookup_path(uid), s.pipeline_token
            )
            if code != 200:
                raise RuntimeError(f"lookup of {uid} answered {code}: {before}")
            old = before["allowed"]
            new_state = "denied" if old else "granted"
            code, written = clients.once_json(
                s.server.port,
                "PUT",
                f"/v1/users/{uid}/consents/{PURPOSE}",
                s.app_token,
                json.dumps({"state": new_state, "source": "api"}).encode(),
            )
            written_at = time.monotonic()
            if code != 200:
                raise RuntimeError(f"PUT consent of {uid} answered {code}: {written}")
            seq = written["as_of"]
            delay, polls, wrong = _poll_until_reflected(s, uid, not old, written_at)
            if delay is None:
                never.append(f"{uid} (seq {seq}, {polls} polls, last wrong: {wrong})")
            else:
                delays.append(delay)
            for as_of, want in ((seq - 1, old), (before["as_of"], old), (seq, not old)):
                for _ in range(2):
                    code, doc = clients.once_json(
                        s.server.port, "GET", s.lookup_path(uid, as_of), s.pipeline_token
                    )
                    if code != 200 or doc.get("allowed") is not want or doc.get("as_of") != as_of:
                        as_of_wrong.append(
                            f"{uid} as_of={as_of}: got {code} {str(doc)[:100]}, want allowed={want}"
                        )
    s.result.check(
        f"freshness: every write was reflected within {FRESHNESS_POLL_LIMIT:.0f} s",
        not never,
        "not reflected: " + ", ".join(never),
    )
    s.result.check(
        "freshness: lookups pinned with as_of give the answer of that seq",
        not as_of_wrong,
        f"{len(as_of_wrong)} wrong, e.g. {as_of_wrong[0]}" if as_of_wrong else "",
    )
    worst = max(delays) * 1000 if delays and not never else None
    s.add(
        Figure(
            "freshness.delay",
            f"freshness: worst delay until every answer reflects a write "
            f"({len(delays) + len(never)} writes)",
            worst,
            "ms",
            target="≤ 1,000 ms",
            met=worst is not None and worst <= 1000,
            note="" if not never else f"{len(never)} never reflected",
        )
    )
    s.add(
        Figure(
            "freshness.as_of",
            "freshness: as_of answers exact",
            float(not as_of_wrong),
            "yes/no",
            target="exact",
            met=not as_of_wrong,
        )
    )
