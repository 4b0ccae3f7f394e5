"""The allowed set as a Parquet snapshot: rows/s, every row checked, workers' memory watched."""

from __future__ import annotations

import http.client
import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import clients
from bench.population import BASIS_NAMES, ID_BASE, PURPOSE
from bench.report import MIB, Figure
from bench.server import RssSampler
from bench.workloads.session import Session
from bench.workloads.streams import READ_BLOCK


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
    with RssSampler(s.server.worker_pids()) as rss:
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
