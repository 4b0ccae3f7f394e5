"""`consent filter` on a Parquet dataset as big as the streamed workloads (10,000,000 rows in the
full run): rows/s end to end, the command's peak memory, and every kept row checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import clients
from bench.population import ID_BASE, PURPOSE
from bench.report import Figure
from bench.server import RssSampler
from bench.workloads.session import Session

CONSENT = Path(sys.executable).parent / "consent"
TARGET_ROWS_PER_SECOND = 2_000_000
ROW_GROUP = 1_000_000
ATTEMPTS = 3  # alternations of plain and --run: this host's speed drifts by a third


def _dataset(s: Session, path: Path) -> tuple[int, int]:
    """Write the streamed IDs as a Parquet file (ID and a payload column).

    Returns the rows a filter keeps and the distinct IDs among them (a run's members).
    """
    writer = None
    kept = 0
    distinct: list[np.ndarray[Any, np.dtype[np.int64]]] = []
    offset = 0
    try:
        for block, mask in zip(s.traffic.blocks, s.traffic.masks, strict=True):
            ids = pa.array(block + ID_BASE, pa.int64())
            rows = np.arange(offset, offset + len(block), dtype=np.int64)
            table = pa.table({"user_id": ids, "row": rows, "lang": pa.array(["en"] * len(block))})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
            kept += int(mask.sum())
            distinct.append(np.unique(block[mask]))
            offset += len(block)
    finally:
        if writer is not None:
            writer.close()
    return kept, len(np.unique(np.concatenate(distinct))) if distinct else 0


def _command(
    s: Session, src: Path, dst: Path, env: dict[str, str], run: str | None
) -> tuple[float, int, str, int]:
    """Run the command once; return seconds, peak RSS, stderr tail and exit code."""
    command = [str(CONSENT), "filter", "--purpose", PURPOSE, "--column", "user_id",
               str(src), str(dst)]  # fmt: skip
    if run is not None:
        command[2:2] = ["--run", run, "--model", "bench-model"]
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with RssSampler([process.pid]) as rss:
        _, stderr = process.communicate(timeout=900)
        seconds = time.monotonic() - started
    return seconds, rss.peak, stderr[-300:], process.returncode


def _check_run(s: Session, manifest: dict[str, Any], name: str, expected: int) -> None:
    """The manifest names the run; the run holds the kept IDs as members, at the filter's as_of."""
    run = manifest.get("run") or {}
    status, doc = clients.once_json(
        s.server.port, "GET", f"/v1/runs/{run.get('id', 0)}", s.pipeline_token
    )
    s.result.check(
        "consent filter --run: the run holds the kept IDs at the filter's as_of",
        status == 200
        and doc.get("name") == name
        and doc.get("as_of") == manifest["as_of"]
        and doc.get("members") == expected,
        f"manifest run {run}, GET answered {status}: members {doc.get('members')}, "
        f"expected {expected:,}",
    )


def consent_filter(s: Session) -> None:
    """Run `consent filter` as a pipeline author would, on a Parquet file of every streamed ID.

    Plain and with --run alternate (plain, run, plain, run, ...) so that drift in the machine's
    speed falls on both; each figure is the fastest of its ATTEMPTS runs.
    """
    with tempfile.TemporaryDirectory(prefix="consent-filter-bench-") as tmp:
        src, dst = Path(tmp) / "posts.parquet", Path(tmp) / "kept.parquet"
        expected, members = _dataset(s, src)
        rows = s.traffic.total_ids
        input_mb = src.stat().st_size / 2**20
        env = {
            **os.environ,
            "CONSENT_URL": f"http://127.0.0.1:{s.server.port}",
            "CONSENT_API_KEY": s.pipeline_token,
        }
        plain: list[float] = []
        with_run: list[float] = []
        peak = 0
        for attempt in range(ATTEMPTS):
            for run in (None, f"bench-filter-{int(time.time())}-{attempt}"):
                seconds, rss, stderr, code = _command(s, src, dst, env, run)
                label = "consent filter" + (" --run" if run else "")
                if not s.result.check(f"{label}: exit 0", code == 0, stderr):
                    return
                manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
                kept = pq.read_metadata(dst).num_rows
                s.result.check(
                    f"{label}: kept rows = allowed IDs",
                    kept == expected and manifest["kept"] == expected,
                    f"kept {kept:,}, manifest {manifest['kept']:,}, expected {expected:,}",
                )
                if run is None:
                    plain.append(seconds)
                    peak = max(peak, rss)
                else:
                    with_run.append(seconds)
                    _check_run(s, manifest, run, members)
    rate = rows / min(plain)
    run_rate = rows / min(with_run)
    s.add(
        Figure(
            "consent_filter.rate",
            "consent filter, Parquet file, rows/s end to end (read, ask, write, hash)",
            rate,
            "rows/s",
            target=f"≥ {TARGET_ROWS_PER_SECOND:,} rows/s (10M rows)",
            met=rate >= TARGET_ROWS_PER_SECOND,
            note=f"{rows:,} rows, {input_mb:.0f} MiB in; command started to exit, "
            f"best of {', '.join(f'{t:.2f}' for t in plain)} s",
        )
    )
    s.add(
        Figure(
            "consent_filter.run_rate",
            "consent filter --run (registers the run, records the kept IDs), rows/s end to end",
            run_rate,
            "rows/s",
            baseline=rate,
            baseline_what="the same command without --run",
            ratio=run_rate / rate,
            target="≥ 0.8 × without --run (10M rows)",
            met=run_rate / rate >= 0.8,
            note=f"{members:,} members recorded; best of "
            f"{', '.join(f'{t:.2f}' for t in with_run)} s",
        )
    )
    s.add(
        Figure(
            "consent_filter.rss",
            "consent filter: peak memory of the command",
            float(peak),
            "bytes",
            target="bounded (batches of 1,000,000 rows)",
            met=peak < 1024 * 2**20,
            note=f"input {input_mb:.0f} MiB",
        )
    )
