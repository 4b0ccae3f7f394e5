"""What the streamed workloads share: reading answers in blocks, notes on cut or bounded streams."""

from __future__ import annotations

import http.client

from bench import clients
from bench.report import Figure
from bench.workloads.session import Session

READ_BLOCK = 1 << 20


def error_body(response: http.client.HTTPResponse) -> str:
    """The start of an answer that is not the stream asked for, for a check's detail."""
    return response.read(2000).decode(errors="replace")


def stream_note(sent_ids: int, total_ids: int, timed_out: bool) -> str:
    """The note beside a streamed figure: how many IDs, and whether the time limit cut it short."""
    if timed_out:
        return f"time-bounded: {sent_ids:,} of {total_ids:,} IDs sent"
    return f"{sent_ids:,} IDs"


def cut_off(s: Session, key: str, what: str, target: str, result: clients.DuplexResult) -> bool:
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
