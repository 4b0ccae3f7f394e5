"""Restrictions on the read path: filters with content times and single lookups with a windowed
and a whole-jurisdiction restriction in force, against the same reads with none in the same
run; and how soon every worker reflects placing and lifting one over the whole population.

The two orders are those of the issue: the 2024-style one (EEA, content processed between two
dates) and one on a whole jurisdiction (BR). Every answer is checked against the population's
expected answers with the orders applied here, independently of the service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from bench import clients
from bench.population import (
    FIRST_OTHER,
    ID_BASE,
    OTHER_CODES,
    PURPOSE,
    BoolArray,
    IntArray,
    user_ids,
)
from bench.report import Figure
from bench.traffic import ipc_parts
from bench.workloads.filter_arrow import _read_arrow
from bench.workloads.filter_text import _read_text
from bench.workloads.session import Session
from bench.workloads.single_lookup import run_wrk
from consent_client.wire import ARROW_STREAM

CONSENT = os.path.join(os.path.dirname(sys.executable), "consent")
WINDOW_FROM = datetime(2024, 5, 16, tzinfo=UTC)
WINDOW_TO = datetime(2024, 8, 1, tzinfo=UTC)
# Content times: a third inside the window, two thirds outside, spread over 2023-2025.
TIME_LOW = datetime(2023, 1, 1, tzinfo=UTC)
TIME_HIGH = datetime(2025, 1, 1, tzinfo=UTC)
BR = FIRST_OTHER + OTHER_CODES.index("BR")
TARGET_RATIO = 0.7
REFLECT_TARGET_S = 2.0
CONSECUTIVE = 12  # fresh-connection answers in a row that must agree (both workers, surely)


@dataclass(frozen=True)
class TimedTraffic:
    """The streamed IDs with a content time each (microseconds), and the answers owed."""

    blocks: list[IntArray]
    times: list[IntArray]
    masks: list[BoolArray]


def _micros(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def timed_traffic(s: Session) -> TimedTraffic:
    """The session's streamed IDs, each with a random content time, and the answers owed with
    the windowed EEA order and the BR order in force."""
    rng = np.random.default_rng(13)
    pop = s.population
    low, high = _micros(TIME_LOW), _micros(TIME_HIGH)
    start, end = _micros(WINDOW_FROM), _micros(WINDOW_TO)
    times, masks = [], []
    for block, allowed in zip(s.traffic.blocks, s.traffic.masks, strict=True):
        t = rng.integers(low, high, len(block), dtype=np.int64)
        known = block < pop.size
        jur = np.zeros(len(block), dtype=np.int8)
        jur[known] = pop.jurisdiction[block[known]]
        eea = np.zeros(len(block), dtype=bool)
        eea[known] = pop.in_eea[block[known]]
        restricted = (jur == BR) | (eea & (t >= start) & (t < end))
        times.append(t)
        masks.append(allowed & ~restricted)
    return TimedTraffic(list(s.traffic.blocks), times, masks)


def _rfc3339(micros: IntArray) -> list[str]:
    text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="s")
    return [f"{t}Z" for t in text.tolist()]


def _text_parts(traffic: TimedTraffic) -> tuple[list[bytes], int, int]:
    """`id<TAB>time` lines in parts; the allowed lines and their CRC-32 owed."""
    parts = []
    allowed = crc = 0
    for block, t, mask in zip(traffic.blocks, traffic.times, traffic.masks, strict=True):
        ids = user_ids(block)
        lines = [f"{i}\t{w}\n" for i, w in zip(ids, _rfc3339(t), strict=True)]
        parts.append("".join(lines).encode())
        kept = [f"{i}\n" for i, keep in zip(ids, mask.tolist(), strict=True) if keep]
        allowed += len(kept)
        crc = zlib.crc32("".join(kept).encode(), crc)
    return parts, allowed, crc


def _arrow_parts(traffic: TimedTraffic) -> tuple[bytes, list[bytes], bytes]:
    """An Arrow IPC stream of int64 IDs and a timestamp[us, UTC] content_time column."""
    schema = pa.schema([("user_id", pa.int64()), ("content_time", pa.timestamp("us", "UTC"))])
    return ipc_parts(
        schema,
        (
            [pa.array(block + ID_BASE, pa.int64()), pa.array(t, pa.timestamp("us", "UTC"))]
            for block, t in zip(traffic.blocks, traffic.times, strict=True)
        ),
    )


def _admin_token(s: Session) -> str:
    """An admin key made with the CLI on the bench database (the seed makes only app and
    pipeline keys)."""
    env = {**os.environ, "CONSENT_DATABASE_URL": s.database.url}
    done = subprocess.run(
        [CONSENT, "keys", "create", "--role", "admin", "--name", f"bench-admin-{time.time_ns()}"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def _lookup_basis(s: Session, user_id: str) -> str:
    status, body = clients.once_json(
        s.server.port, "GET", f"/v1/lookup/{PURPOSE}/{user_id}", s.pipeline_token
    )
    if status != 200:
        raise RuntimeError(f"lookup answered {status}: {body}")
    return str(body["basis"])


def _reflected(s: Session, user_id: str, restricted: bool, deadline: float) -> float | None:
    """Seconds until CONSECUTIVE fresh-connection lookups agree on the new answer, or None."""
    started = time.monotonic()
    agreeing = 0
    while time.monotonic() < deadline:
        if (_lookup_basis(s, user_id) == "restriction") == restricted:
            agreeing += 1
            if agreeing == CONSECUTIVE:
                return time.monotonic() - started
        else:
            agreeing = 0
    return None


def _place(s: Session, admin: str, body: dict[str, object]) -> dict[str, object]:
    status, doc = clients.once_json(
        s.server.port, "POST", "/v1/restrictions", admin, json.dumps(body).encode()
    )
    if status != 201:
        raise RuntimeError(f"placing a restriction answered {status}: {doc}")
    return doc


def _lift(s: Session, admin: str, restriction_id: object) -> None:
    status, doc = clients.once_json(
        s.server.port, "DELETE", f"/v1/restrictions/{restriction_id}?reason=bench", admin
    )
    if status != 200:
        raise RuntimeError(f"lifting restriction {restriction_id} answered {status}: {doc}")


def _stream_text(s: Session, parts: list[bytes]) -> clients.DuplexResult:
    return clients.duplex_post(
        s.server.port,
        f"/v1/filter/{PURPOSE}",
        {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": "text/plain"},
        parts,
        _read_text,
        s.profile.stream_time_limit * 3,
    )


def _stream_arrow(s: Session, head: bytes, parts: list[bytes], tail: bytes) -> clients.DuplexResult:
    return clients.duplex_post(
        s.server.port,
        f"/v1/filter/{PURPOSE}",
        {"Authorization": f"Bearer {s.pipeline_token}", "Content-Type": ARROW_STREAM},
        parts,
        _read_arrow,
        s.profile.stream_time_limit * 3,
        head=head,
        tail=tail,
    )


def _complete(s: Session, what: str, result: clients.DuplexResult, parts: int) -> bool:
    return s.result.check(
        f"{what}: answered 200 and sent every part",
        result.status == 200 and result.parts_sent == parts and not result.timed_out,
        f"{result.status}, {result.parts_sent}/{parts} parts",
    )


def restrictions(s: Session) -> None:
    """Reads without orders, then with both in force, then lift them; ratios and reflect times."""
    pop = s.population
    total = s.traffic.total_ids
    traffic = timed_traffic(s)
    text_parts, text_allowed, text_crc = _text_parts(traffic)
    head, arrow_parts, tail = _arrow_parts(traffic)
    admin = _admin_token(s)
    p = s.profile

    # Baselines in this run, with no restriction: plain text and Arrow int64, single lookup.
    plain_text = _stream_text(s, s.traffic.text.parts)
    arrow = s.traffic.arrow_int64
    plain_arrow = _stream_arrow(s, arrow.head, arrow.parts, arrow.tail)
    run_wrk(s.server.port, p.warmup_seconds, s.pipeline_token, pop.size)
    single_before = run_wrk(s.server.port, p.wrk_seconds, s.pipeline_token, pop.size)
    if not (
        _complete(s, "restrictions: plain text baseline", plain_text, len(s.traffic.text.parts))
        and _complete(s, "restrictions: Arrow baseline", plain_arrow, len(arrow.parts))
    ):
        return

    # Place both orders; time how soon every worker answers a BR subject with the restriction.
    br_subject = str(ID_BASE + int(np.flatnonzero((pop.jurisdiction == BR) & pop.allowed)[0]))
    window = {"from": WINDOW_FROM.isoformat(), "to": WINDOW_TO.isoformat(),
              "time_basis": "processed"}  # fmt: skip
    common = {"purposes": [PURPOSE], "reason": "bench", "ticket": "BENCH-1"}
    began = time.monotonic()
    eea = _place(s, admin, {**common, "authority": "DPC", "instrument": "undertaking",
                            "jurisdictions": ["EEA"], "window": window})  # fmt: skip
    placed_seconds = time.monotonic() - began
    began = time.monotonic()
    br = _place(s, admin, {**common, "authority": "ANPD", "instrument": "order",
                           "jurisdictions": ["BR"], "window": None})  # fmt: skip
    br_write = time.monotonic() - began
    placed = _reflected(s, br_subject, True, time.monotonic() + 30)
    s.result.check("restrictions: every worker reflects the placed order", placed is not None)
    changed = br.get("changed")

    # With both in force: text with times, Arrow with a timestamp column, single lookup.
    timed_text = _stream_text(s, text_parts)
    timed_arrow = _stream_arrow(s, head, arrow_parts, tail)
    run_wrk(s.server.port, p.warmup_seconds, s.pipeline_token, pop.size)
    single_after = run_wrk(s.server.port, p.wrk_seconds, s.pipeline_token, pop.size)

    # Lift both; time the reflection again. Later workloads see the ledger as seeded.
    began = time.monotonic()
    _lift(s, admin, br["id"])
    lift_write = time.monotonic() - began
    lifted = _reflected(s, br_subject, False, time.monotonic() + 30)
    _lift(s, admin, eea["id"])
    s.result.check("restrictions: every worker reflects the lift", lifted is not None)

    if _complete(s, "restrictions: text with times", timed_text, len(text_parts)):
        assert isinstance(timed_text.consumed, tuple)
        lines, crc = timed_text.consumed
        s.result.check(
            "restrictions: text with times kept exactly the IDs owed (count and CRC-32)",
            lines == text_allowed and crc == text_crc,
            f"{lines:,} lines (owed {text_allowed:,}), CRC {crc:08x} (owed {text_crc:08x})",
        )
        rate = total / timed_text.seconds
        base = total / plain_text.seconds
        s.add(Figure(
            "restrictions.text", "filter, text with content times, 2 orders in force, IDs/s",
            rate, "IDs/s", baseline=base, baseline_what="(plain text, no order)",
            ratio=rate / base, target=f"≥ {TARGET_RATIO}× plain text",
            met=rate / base >= TARGET_RATIO, note=f"{total:,} IDs",
        ))  # fmt: skip
    if _complete(s, "restrictions: Arrow with times", timed_arrow, len(arrow_parts)):
        got = timed_arrow.consumed
        assert isinstance(got, pa.Array)
        want = np.concatenate(traffic.masks)
        wrong = len(got) != len(want) or bool(np.any(got.to_numpy(zero_copy_only=False) != want))
        s.result.check("restrictions: Arrow with times answered every ID as owed", not wrong)
        rate = total / timed_arrow.seconds
        base = total / plain_arrow.seconds
        s.add(Figure(
            "restrictions.arrow",
            "filter, Arrow int64 + content_time column, 2 orders in force, IDs/s",
            rate, "IDs/s", baseline=base, baseline_what="(Arrow int64, no order)",
            ratio=rate / base, target=f"≥ {TARGET_RATIO}× Arrow int64",
            met=rate / base >= TARGET_RATIO, note=f"{total:,} IDs",
        ))  # fmt: skip
    ratio = single_after.rate / single_before.rate if single_before.rate else 0.0
    s.add(Figure(
        "restrictions.single", "single lookup with 2 orders in force, requests/s",
        single_after.rate, "req/s", baseline=single_before.rate,
        baseline_what="(no order, same run)", ratio=ratio, target="unchanged within noise",
        met=ratio >= 0.9, note=f"p99 {single_after.p99_ms:.2f} ms "
        f"(no order {single_before.p99_ms:.2f} ms)",
    ))  # fmt: skip
    for key, what, seconds, write in (
        ("restrictions.placed", "placing an order on BR: every worker answers it", placed,
         br_write),
        ("restrictions.lifted", "lifting it: every worker answers without it", lifted,
         lift_write),
    ):  # fmt: skip
        s.add(Figure(
            key, what, seconds, "s", target=f"≤ {REFLECT_TARGET_S:g} s ({pop.size:,} subjects)",
            met=seconds is not None and seconds <= REFLECT_TARGET_S,
            note=f"the write itself {write * 1000:.0f} ms; {CONSECUTIVE} fresh-connection "
            f"answers in a row; changed {changed}; EEA window order placed in "
            f"{placed_seconds * 1000:.0f} ms",
        ))  # fmt: skip
