"""POST /v1/filter with newline-separated IDs streamed in while the allowed ones stream back."""

from __future__ import annotations

import http.client
import zlib

from bench import clients
from bench.population import PURPOSE
from bench.report import Figure
from bench.workloads.session import Session
from bench.workloads.streams import READ_BLOCK, cut_off, error_body, stream_note
from consent_client.wire import AS_OF_HEADER


def _read_text(response: http.client.HTTPResponse) -> tuple[int, int] | str:
    """Count lines and CRC-32 of a text answer as it arrives (an error body if not 200)."""
    if response.status != 200:
        return error_body(response)
    lines = 0
    crc = 0
    while block := response.read1(READ_BLOCK):
        lines += block.count(b"\n")
        crc = zlib.crc32(block, crc)
    return lines, crc


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
    if cut_off(s, "filter.text", what, target, result):
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
        f"{label}: {AS_OF_HEADER} header is a seq",
        result.headers.get(AS_OF_HEADER.lower(), "").isdigit(),
        repr(result.headers.get(AS_OF_HEADER.lower())),
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
            note=stream_note(sent_ids, sum(stream.ids_per_part), result.timed_out),
        )
    )
