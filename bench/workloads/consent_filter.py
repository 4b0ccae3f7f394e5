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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.population import ID_BASE, PURPOSE
from bench.report import Figure
from bench.server import RssSampler
from bench.workloads.session import Session

CONSENT = Path(sys.executable).parent / "consent"
TARGET_ROWS_PER_SECOND = 2_000_000
ROW_GROUP = 1_000_000


def _dataset(s: Session, path: Path) -> int:
    """Write the streamed IDs as a Parquet file (ID and a payload column); return kept rows."""
    writer = None
    kept = 0
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
            offset += len(block)
    finally:
        if writer is not None:
            writer.close()
    return kept


def consent_filter(s: Session) -> None:
    """Run `consent filter` as a pipeline author would, on a Parquet file of every streamed ID."""
    with tempfile.TemporaryDirectory(prefix="consent-filter-bench-") as tmp:
        src, dst = Path(tmp) / "posts.parquet", Path(tmp) / "kept.parquet"
        expected = _dataset(s, src)
        rows = s.traffic.total_ids
        env = {
            **os.environ,
            "CONSENT_URL": f"http://127.0.0.1:{s.server.port}",
            "CONSENT_API_KEY": s.pipeline_token,
        }
        command = [str(CONSENT), "filter", "--purpose", PURPOSE, "--column", "user_id",
                   str(src), str(dst)]  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with RssSampler([process.pid]) as rss:
            _, stderr = process.communicate(timeout=600)
            seconds = time.monotonic() - started
        peak = rss.peak
        if not s.result.check("consent filter: exit 0", process.returncode == 0, stderr[-300:]):
            return
        manifest = json.loads(Path(f"{dst}.manifest.json").read_text())
        kept = pq.read_metadata(dst).num_rows
        s.result.check(
            "consent filter: kept rows = allowed IDs",
            kept == expected and manifest["kept"] == expected,
            f"kept {kept:,}, manifest {manifest['kept']:,}, expected {expected:,}",
        )
        input_mb = src.stat().st_size / 2**20
    rate = rows / seconds
    s.add(
        Figure(
            "consent_filter.rate",
            "consent filter, Parquet file, rows/s end to end (read, ask, write, hash)",
            rate,
            "rows/s",
            target=f"≥ {TARGET_ROWS_PER_SECOND:,} rows/s (10M rows)",
            met=rate >= TARGET_ROWS_PER_SECOND,
            note=f"{rows:,} rows, {input_mb:.0f} MiB in; command started to exit",
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
