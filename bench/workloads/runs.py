"""Training runs: how members are stored, recorded, and checked against later revocations.

Workloads on the live server (wired into bench/run.py): record a run's members as an Arrow
int64 stream and measure the bytes stored; write revocations of members after the run's as_of
and stream the affected list; register many small runs and time a user's runs. Standalone,
`python -m bench.workloads.runs --storage N` compares member encodings for N numeric IDs
(the figures behind the choice in the README).
"""

from __future__ import annotations

import argparse
import array
import io
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from bench import clients
from bench.population import ID_BASE, NO_CHOICE, PURPOSE, STATE_NAMES, IntArray
from bench.report import MIB, Figure
from bench.workloads.session import Session

ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_BATCH = 1 << 18


@dataclass(frozen=True)
class RunsProfile:
    """How much the runs workloads do."""

    members: int
    revocations: int
    small_runs: int
    small_run_members: int
    user_queries: int


FULL = RunsProfile(10_000_000, 100_000, 1_000, 10_000, 1_000)
QUICK = RunsProfile(200_000, 2_000, 100, 1_000, 200)


# ---------------------------------------------------------------- helpers ------------------


def _profile(s: Session) -> RunsProfile:
    return QUICK if s.profile.name == "quick" else FULL


def _head(s: Session) -> int:
    status, body = clients.once_json(s.server.port, "GET", "/v1/changes?limit=1", s.pipeline_token)
    if status != 200:
        raise RuntimeError(f"change feed answered {status}: {body}")
    return int(body["head"])


def _register(s: Session, name: str, as_of: int) -> int:
    body = json.dumps({"name": name, "purpose": PURPOSE, "as_of": as_of}).encode()
    status, doc = clients.once_json(s.server.port, "POST", "/v1/runs", s.pipeline_token, body)
    if status != 201:
        raise RuntimeError(f"registering {name} answered {status}: {doc}")
    return int(doc["id"])


def arrow_parts(values: IntArray) -> tuple[bytes, list[bytes], bytes]:
    """An Arrow IPC stream of one int64 column: its schema, its batches, its end marker."""
    schema = pa.schema([("user_id", pa.int64())])
    sink = io.BytesIO()
    writer = pa.ipc.new_stream(sink, schema)
    head = sink.getvalue()
    parts: list[bytes] = []
    for start in range(0, len(values), ARROW_BATCH):
        mark = sink.tell()
        writer.write_batch(
            pa.record_batch([pa.array(values[start : start + ARROW_BATCH])], schema=schema)
        )
        parts.append(sink.getvalue()[mark:])
    mark = sink.tell()
    writer.close()
    return head, parts, sink.getvalue()[mark:]


def put_stream(
    port: int, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, dict[str, Any], float]:
    """PUT a chunked body; return status, the JSON answered, and seconds from first byte sent
    to the last byte of the answer."""
    conn = clients.connect(port, timeout=600)
    try:
        started = time.monotonic()
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks:
            if chunk:
                conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data), time.monotonic() - started
    finally:
        conn.close()


def stored_bytes(s: Session, run_id: int) -> int:
    """Bytes the run's members take in the database (numbers, strings and codes)."""
    if s.database.kind == "postgres":
        with psycopg.connect(s.database.url) as conn:
            row = conn.execute(
                "SELECT pg_column_size(numbers) + pg_column_size(strings) + pg_column_size(codes) "
                "FROM run_members WHERE run_id = %s",
                (run_id,),
            ).fetchone()
    else:
        with sqlite3.connect(s.database.sqlite_path) as lite:
            row = lite.execute(
                "SELECT length(numbers) + length(strings) + length(codes) FROM run_members "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
    assert row is not None
    return int(row[0])


def timed_get(port: int, path: str, token: str) -> tuple[int, float, float, bytes]:
    """GET on a fresh connection: status, seconds to the first body byte and to the last."""
    conn = clients.connect(port, timeout=600)
    try:
        started = time.monotonic()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        first = response.read1(1)
        first_byte = time.monotonic() - started
        rest = response.read()
        return response.status, first_byte, time.monotonic() - started, first + rest
    finally:
        conn.close()


# ---------------------------------------------------------------- revocations --------------


def revoke(s: Session, indices: IntArray) -> int:
    """Write a denied choice for each subject, as the service would (choice rows, choice_set
    events numbered after the head, before granted and after denied), in one transaction.
    Through the API this many writes would take minutes; the events are what matters here.
    Returns the new head."""
    pop = s.population
    previous = pop.choice[indices]
    if s.database.kind == "postgres":
        return _revoke_postgres(s.database.url, indices, previous)
    return _revoke_sqlite(s.database.sqlite_path, indices, previous)


def _revocation_rows(
    indices: IntArray, previous: Any, first_seq: int, at: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    events, choices = [], []
    for k, (index, prior) in enumerate(zip(indices.tolist(), previous.tolist(), strict=True)):
        user_id = str(ID_BASE + index)
        version = 1 if prior == NO_CHOICE else 2
        data = {
            "state": "denied",
            "previous": STATE_NAMES.get(prior),
            "source": "settings",
            "version": version,
        }
        seq = first_seq + k
        events.append((seq, at, "choice_set", user_id, PURPOSE, json.dumps(data)))
        choices.append((user_id, version, seq, at))
    return events, choices


EVENT_INSERT = (
    "INSERT INTO events (seq, at, kind, user_id, purpose, before, after, actor, role, data) "
    "VALUES ({m}, {m}, {m}, {m}, {m}, 'granted', 'denied', 'bench-revocations', 'app', {json})"
)
CHOICE_UPSERT = (
    "INSERT INTO choices (user_id, purpose, state, source, version, updated_seq, updated_at) "
    "VALUES ({m}, '" + PURPOSE + "', 'denied', 'settings', {m}, {m}, {m}) "
    "ON CONFLICT (user_id, purpose) DO UPDATE SET state = 'denied', source = 'settings', "
    "version = excluded.version, updated_seq = excluded.updated_seq, "
    "updated_at = excluded.updated_at"
)


def _revoke_postgres(url: str, indices: IntArray, previous: Any) -> int:
    with psycopg.connect(url) as conn:
        head = conn.execute("SELECT seq, at FROM ledger_head WHERE id = 1 FOR UPDATE").fetchone()
        assert head is not None
        seq, at = head
        at = max(at, datetime.now(UTC)) + timedelta(milliseconds=1)
        events, choices = _revocation_rows(indices, previous, seq + 1, at)
        with conn.cursor() as cur:
            cur.executemany(EVENT_INSERT.format(m="%s", json="%s::json"), events)
            cur.executemany(CHOICE_UPSERT.format(m="%s"), choices)
            cur.execute("UPDATE ledger_head SET seq = %s, at = %s", (seq + len(events), at))
        conn.commit()
    return int(seq + len(events))


def _revoke_sqlite(path: str, indices: IntArray, previous: Any) -> int:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        conn.execute("BEGIN IMMEDIATE")
        seq, at_text = conn.execute("SELECT seq, at FROM ledger_head WHERE id = 1").fetchone()
        last = datetime.fromisoformat(at_text).replace(tzinfo=UTC)
        at = max(last, datetime.now(UTC)) + timedelta(milliseconds=1)
        stamp = at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        events, choices = _revocation_rows(indices, previous, seq + 1, at)
        conn.executemany(
            EVENT_INSERT.format(m="?", json="?"), [(*e[:1], stamp, *e[2:]) for e in events]
        )
        conn.executemany(CHOICE_UPSERT.format(m="?"), [(*c[:3], stamp) for c in choices])
        conn.execute("UPDATE ledger_head SET seq = ?, at = ?", (seq + len(events), stamp))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return int(seq + len(events))


# ---------------------------------------------------------------- the workload -------------


def training_runs(s: Session) -> None:
    """Record a big run's members, revoke some of them, stream the affected list; then time a
    user's runs among many small runs."""
    p = _profile(s)
    pop = s.population
    rng = np.random.default_rng(17)
    # The run used subjects and a few IDs the ledger never saw (2 %), in no particular order;
    # never more members than that (at N = 10M: the 10M members of the target).
    span = int(pop.size * 1.02)
    members = min(p.members, span)
    indices = rng.permutation(span)[:members].astype(np.int64)
    values = indices + ID_BASE
    known = indices < pop.size
    allowed_then = pop.allowed_for(indices)

    as_of = _head(s)
    run_id = _register(s, "bench-big-run", as_of)
    head, parts, tail = arrow_parts(values)
    status, doc, seconds = put_stream(
        s.server.port,
        f"/v1/runs/{run_id}/members",
        {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": ARROW_STREAM},
        [head, *parts, tail],
    )
    if not s.result.check("runs: members recorded (201)", status == 201, f"{status} {doc}"):
        return
    not_allowed = int((~allowed_then).sum())
    s.result.check(
        "runs: members and not_allowed as the population says",
        doc["members"] == members and doc["not_allowed"] == not_allowed,
        f"{doc['members']} members, {doc['not_allowed']} not allowed; "
        f"expected {members}, {not_allowed}",
    )
    rate = members / seconds
    s.add(
        Figure(
            "runs.record",
            f"record {members:,} numeric members (Arrow int64), IDs/s end to end",
            rate,
            "IDs/s",
            target="≥ 5,000,000 IDs/s (10M members)",
            met=rate >= 5_000_000,
            note=f"{seconds:.2f} s",
        )
    )
    size = stored_bytes(s, run_id)
    s.add(
        Figure(
            "runs.storage",
            f"bytes stored for {members:,} members (numbers, strings, codes)",
            float(size),
            "bytes",
            target="≤ 40 MB (10M numeric members)",
            met=size <= 40_000_000 * members / 10_000_000,
            note=f"{size / members:.2f} bytes a member",
        )
    )

    # Revocations after the run's as_of: members that were allowed, had no override.
    candidates = indices[known & allowed_then]
    candidates = candidates[~pop.has_override[candidates]]
    revoked = rng.choice(candidates, min(p.revocations, len(candidates)), replace=False)
    revoked.sort()
    started = time.monotonic()
    new_head = revoke(s, revoked)
    s.result.notes.append(
        f"runs: {len(revoked):,} revocations written in {time.monotonic() - started:.1f} s"
    )
    path = f"/v1/runs/{run_id}/affected?format=text&as_of={new_head}"
    timings = []
    for _ in range(4):  # the first two warm both workers (index catch-up, members cache)
        code, first_byte, total, body = timed_get(s.server.port, path, s.pipeline_token)
        timings.append((code, first_byte, total, body))
    code, first_byte, total, body = max(timings[2:], key=lambda t: t[2])
    lines = body.decode().splitlines()
    with_seq = sum(1 for line in lines if not line.endswith("\t"))
    s.result.check(
        "runs: affected = still-denied violations + revocations, each revocation with its seq",
        code == 200 and len(lines) == not_allowed + len(revoked) and with_seq == len(revoked),
        f"{code}: {len(lines):,} lines, {with_seq:,} with a seq; expected "
        f"{not_allowed + len(revoked):,}, {len(revoked):,}",
    )
    examined = members / total
    s.add(
        Figure(
            "runs.affected",
            f"affected list of {members:,} members after {len(revoked):,} revocations, "
            "members examined/s",
            examined,
            "members/s",
            target="≥ 10,000,000 members/s (10M, 100k revocations)",
            met=examined >= 10_000_000,
            note=f"{total:.2f} s; cold (first request): {timings[0][2]:.2f} s",
        )
    )
    s.add(
        Figure(
            "runs.affected.first_byte",
            "affected list: time to first byte",
            first_byte * 1000,
            "ms",
            target="≤ 1,000 ms",
            met=first_byte <= 1.0,
        )
    )
    user_runs_latency(s, p, rng)


def user_runs_latency(s: Session, p: RunsProfile, rng: np.random.Generator) -> None:
    """Register many small runs, then time GET /v1/users/{id}/runs for random subjects."""
    pop = s.population
    as_of = _head(s)
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": "text/plain"}
    for k in range(p.small_runs):
        run_id = _register(s, f"bench-small-{k}", as_of)
        members = rng.choice(pop.size, min(p.small_run_members, pop.size), replace=False)
        text = ("\n".join(str(ID_BASE + m) for m in members.tolist()) + "\n").encode()
        status, doc, _ = put_stream(s.server.port, f"/v1/runs/{run_id}/members", headers, [text])
        if status != 201:
            raise RuntimeError(f"small run {k}: {status} {doc}")
    s.result.notes.append(
        f"runs: {p.small_runs:,} runs of {p.small_run_members:,} members registered in "
        f"{time.monotonic() - started:.1f} s"
    )
    conn = clients.connect(s.server.port)
    latencies: list[float] = []
    wrong = 0
    try:
        for k in range(p.user_queries + 50):
            uid = str(ID_BASE + int(rng.integers(pop.size)))
            began = time.perf_counter()
            status, body = clients.request_json(
                conn, "GET", f"/v1/users/{uid}/runs", s.pipeline_token
            )
            elapsed = time.perf_counter() - began
            wrong += status != 200 or not isinstance(body.get("runs"), list)
            if k >= 50:  # the first ones load every run's members into both workers' caches
                latencies.append(elapsed)
    finally:
        conn.close()
    s.result.check("runs: every user's-runs answer was a 200 list", wrong == 0, f"{wrong} wrong")
    p99 = float(np.percentile(latencies, 99)) * 1000
    s.add(
        Figure(
            "runs.user.p99",
            f"a user's runs with {p.small_runs + 1:,} runs registered, p99",
            p99,
            "ms",
            target="≤ 20 ms (1,000 runs)",
            met=p99 <= 20,
            note=f"p50 {float(np.percentile(latencies, 50)) * 1000:.2f} ms",
        )
    )
    list_runs_latency(s, p)


def list_runs_latency(s: Session, p: RunsProfile) -> None:
    """Time GET /v1/runs (newest first, counts as of the head) over every registered run."""
    conn = clients.connect(s.server.port)
    try:
        for limit in (100, 1000):
            latencies: list[float] = []
            wrong = 0
            listed = 0
            for k in range(60):
                began = time.perf_counter()
                status, body = clients.request_json(
                    conn, "GET", f"/v1/runs?limit={limit}", s.pipeline_token
                )
                elapsed = time.perf_counter() - began
                runs = body.get("runs") if status == 200 else None
                wrong += not isinstance(runs, list) or not runs or len(runs) > limit
                listed = len(runs) if isinstance(runs, list) else 0
                if k >= 10:  # the first ones fill both workers' counts caches
                    latencies.append(elapsed)
            s.result.check(f"runs: GET /v1/runs?limit={limit} listed a full page", wrong == 0,
                           f"{wrong} wrong")  # fmt: skip
            p99 = float(np.percentile(latencies, 99)) * 1000
            s.add(
                Figure(
                    f"runs.list{limit}.p99",
                    f"list runs, a page of {listed:,} with their counts, p99",
                    p99,
                    "ms",
                    target="reported",
                    note=f"p50 {float(np.percentile(latencies, 50)) * 1000:.2f} ms; "
                    f"{p.small_runs + 1:,}+ runs registered",
                )
            )
    finally:
        conn.close()


# ---------------------------------------------------------------- storage study ------------


def _roaring(values: IntArray) -> tuple[bytes, Callable[[bytes], IntArray]]:
    from pyroaring import BitMap64

    bitmap = BitMap64()
    bitmap.update(array.array("Q", values.astype(np.uint64).tobytes()))
    bitmap.run_optimize()
    return bitmap.serialize(), lambda blob: np.frombuffer(
        BitMap64.deserialize(blob).to_array(), dtype=np.uint64
    ).astype(np.int64)


def _delta_zstd(values: IntArray) -> tuple[bytes, Callable[[bytes], IntArray]]:
    deltas = np.diff(values, prepend=0)
    blob = pa.compress(deltas.tobytes(), codec="zstd", asbytes=True)
    return blob, lambda b: np.cumsum(
        np.frombuffer(pa.decompress(b, len(values) * 8, codec="zstd", asbytes=True), np.int64)
    )


def _parquet(encoding: str | None, compression: str) -> Callable[[IntArray], Any]:
    def encode(values: IntArray) -> tuple[bytes, Callable[[bytes], IntArray]]:
        sink = io.BytesIO()
        options: dict[str, Any] = {"compression": compression, "write_statistics": False}
        if encoding:
            options.update(use_dictionary=False, column_encoding={"user_id": encoding})
        pq.write_table(pa.table({"user_id": values}), sink, **options)
        return sink.getvalue(), lambda b: pq.read_table(pa.BufferReader(b)).column(0).to_numpy()

    return encode


ENCODINGS: dict[str, Callable[[IntArray], Any]] = {
    "Parquet DELTA_BINARY_PACKED, uncompressed (chosen)": _parquet("DELTA_BINARY_PACKED", "none"),
    "Parquet DELTA_BINARY_PACKED + zstd": _parquet("DELTA_BINARY_PACKED", "zstd"),
    "Parquet default (dictionary) + zstd": _parquet(None, "zstd"),
    "sorted deltas + zstd": _delta_zstd,
    "roaring bitmap (64-bit, run-optimised)": _roaring,
}


def storage_study(n: int) -> str:
    """A markdown table: bytes and codec times for n numeric members in three distributions."""
    rng = np.random.default_rng(5)
    shapes = {
        "consecutive IDs": np.arange(ID_BASE, ID_BASE + n, dtype=np.int64),
        "1 in 10 of a 10n range": np.sort(rng.choice(10 * n, n, replace=False)).astype(np.int64)
        + ID_BASE,
        "random 64-bit (snowflake-like, 10^15 range)": np.unique(
            rng.integers(0, 10**15, n, dtype=np.int64)
        ),
    }
    rows = [
        "| distribution | encoding | MB | bytes/ID | encode s | decode s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for shape, values in shapes.items():
        for name, encode in ENCODINGS.items():
            began = time.perf_counter()
            blob, decode = encode(values)
            encoded = time.perf_counter() - began
            began = time.perf_counter()
            back = decode(blob)
            decoded = time.perf_counter() - began
            assert np.array_equal(back, values), (shape, name)
            rows.append(
                f"| {shape} | {name} | {len(blob) / 1e6:,.2f} | {len(blob) / len(values):.2f} "
                f"| {encoded:.2f} | {decoded:.3f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """`--storage N`: print the encoding comparison for N members."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--storage", type=int, required=True, help="members to encode")
    args = parser.parse_args(argv)
    print(f"{args.storage:,} numeric members ({MIB:,} bytes = 1 MiB; MB here = 10^6 bytes)")
    print(storage_study(args.storage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
