"""POST /v1/filter with an Arrow IPC stream of int64 or string IDs, the mask read back."""

from __future__ import annotations

import http.client

import numpy as np
import pyarrow as pa

from bench import clients
from bench.population import PURPOSE
from bench.report import Figure
from bench.traffic import ArrowStream
from bench.workloads.session import Session
from bench.workloads.streams import cut_off, error_body, stream_note
from consent_client.wire import ARROW_STREAM


def _read_arrow(response: http.client.HTTPResponse) -> pa.Array | str:
    """Read an Arrow answer batch by batch into one boolean array (an error body if not 200)."""
    if response.status != 200:
        return error_body(response)
    reader = pa.ipc.open_stream(response)
    chunks = [batch.column(0) for batch in reader]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.bool_())


def post_arrow(
    s: Session, head: bytes, parts: list[bytes], tail: bytes, time_limit: float
) -> clients.DuplexResult:
    """POST an Arrow IPC stream (schema, batches, end marker) to the filter; the mask read
    back into one array (or the error body)."""
    return clients.duplex_post(
        s.server.port,
        f"/v1/filter/{PURPOSE}",
        {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": ARROW_STREAM},
        parts,
        _read_arrow,
        time_limit,
        head=head,
        tail=tail,
    )


def filter_arrow(s: Session, column: str) -> None:
    """Stream the IDs as an Arrow IPC stream (int64 or string column); read the mask back."""
    stream: ArrowStream = s.traffic.arrow_int64 if column == "int64" else s.traffic.arrow_string
    result = post_arrow(s, stream.head, stream.parts, stream.tail, s.profile.stream_time_limit)
    label = f"filter, Arrow IPC {column}"
    what = f"filter, Arrow IPC {column} IDs, IDs/s end to end"
    target = "≥ 10,000,000 IDs/s (N = 1M)"
    if cut_off(s, f"filter.arrow.{column}", what, target, result):
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
            note=stream_note(len(expected), s.traffic.total_ids, result.timed_out),
        )
    )
