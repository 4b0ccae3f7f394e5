"""The Arrow filter at any batch size: the same int64 IDs sent as batches of several sizes and
as one batch of every ID; the one huge batch is held to 0.7 x the best size."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bench.population import ID_BASE
from bench.report import Figure
from bench.traffic import ipc_parts
from bench.workloads.filter_arrow import post_arrow
from bench.workloads.session import Session

SIZES = (16_384, 65_536, 262_144, 1_048_576)
ROUNDS = 2
SCHEMA = pa.schema([pa.field("user_id", pa.int64())])


def _stream(ids: pa.Array, rows: int) -> tuple[bytes, list[bytes], bytes]:
    return ipc_parts(SCHEMA, ([ids.slice(lo, rows)] for lo in range(0, len(ids), rows)))


def arrow_batches(s: Session) -> None:
    """Each batch size and the one huge batch, alternated ROUNDS times; best rate of each."""
    ids = pa.array(np.concatenate(s.traffic.blocks) + ID_BASE, pa.int64())
    want = np.concatenate(s.traffic.masks)
    total = len(ids)
    sizes = [r for r in SIZES if r < total]
    streams = {rows: _stream(ids, rows) for rows in [*sizes, total]}
    best: dict[int, float] = {}
    for k in range(ROUNDS):
        for rows, (head, parts, tail) in streams.items():
            result = post_arrow(s, head, parts, tail, s.profile.stream_time_limit * 3)
            label = f"Arrow batches of {rows:,} rows ({k + 1})"
            complete = result.status == 200 and result.parts_sent == len(parts)
            sent = f"{result.status}, {result.parts_sent}/{len(parts)}"
            if not s.result.check(f"{label}: answered 200 and sent every batch", complete, sent):
                return
            mask = result.consumed
            assert isinstance(mask, pa.Array)
            right = len(mask) == total and bool(
                np.array_equal(mask.to_numpy(zero_copy_only=False), want)
            )
            s.result.check(f"{label}: answered every ID as owed", right)
            best[rows] = max(best.get(rows, 0.0), total / result.seconds)
    top = max(sizes, key=lambda r: best[r]) if sizes else total
    huge, base = best[total], best[top]
    ratio = huge / base if base else 0.0
    rates = ", ".join(f"{r:,}: {best[r] / 1e6:.1f} M" for r in sizes)
    s.add(
        Figure(
            "filter.arrow.one_batch",
            f"filter, Arrow int64 in one batch of {total:,} rows, IDs/s",
            huge,
            "IDs/s",
            baseline=base,
            baseline_what=f"(best batch size, {top:,} rows)",
            ratio=ratio,
            target="≥ 0.7× the best batch size",
            met=ratio >= 0.7,
            note=f"best of {ROUNDS}, alternated; by batch size: {rates} IDs/s",
        )
    )
