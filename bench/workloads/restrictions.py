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
from bench.workloads.filter_arrow import post_arrow
from bench.workloads.filter_text import _read_text
from bench.workloads.session import Session
from bench.workloads.single_lookup import run_wrk

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
    return post_arrow(s, head, parts, tail, s.profile.stream_time_limit * 3)


def _complete(s: Session, what: str, result: clients.DuplexResult, parts: int) -> bool:
    return s.result.check(
        f"{what}: answered 200 and sent every part",
        result.status == 200 and result.parts_sent == parts and not result.timed_out,
        f"{result.status}, {result.parts_sent}/{parts} parts",
    )


REPEATS = 3  # each pair (no order, both orders) alternates this often; best of each counts


@dataclass
class Rates:
    """Best rates seen of one kind of read, without orders and with both in force."""

    plain: float = 0.0
    timed: float = 0.0


def _orders(s: Session, admin: str) -> tuple[list[dict[str, object]], float]:
    """Place the windowed EEA order and the whole-BR one; the restrictions and the BR write's
    seconds."""
    window = {"from": WINDOW_FROM.isoformat(), "to": WINDOW_TO.isoformat(),
              "time_basis": "processed"}  # fmt: skip
    common = {"purposes": [PURPOSE], "reason": "bench", "ticket": "BENCH-1"}
    eea = _place(s, admin, {**common, "authority": "DPC", "instrument": "undertaking",
                            "jurisdictions": ["EEA"], "window": window})  # fmt: skip
    began = time.monotonic()
    br = _place(s, admin, {**common, "authority": "ANPD", "instrument": "order",
                           "jurisdictions": ["BR"], "window": None})  # fmt: skip
    return [eea, br], time.monotonic() - began


def _timed_reads(
    s: Session, traffic: TimedTraffic, text: Rates, arrow: Rates, orders: bool
) -> bool:
    """One text and one Arrow filter (with times when `orders`), checked; keeps the best rates."""
    total = s.traffic.total_ids
    if orders:
        parts, allowed, crc = _text_parts(traffic)
        result = _stream_text(s, parts)
        what = "restrictions: text with times"
    else:
        parts = s.traffic.text.parts
        _, allowed, crc = s.traffic.text.expected(len(parts))
        result = _stream_text(s, parts)
        what = "restrictions: plain text"
    if not _complete(s, what, result, len(parts)):
        return False
    assert isinstance(result.consumed, tuple)
    lines, got = result.consumed
    s.result.check(
        f"{what}: kept exactly the IDs owed (count and CRC-32)",
        lines == allowed and got == crc,
        f"{lines:,} lines (owed {allowed:,}), CRC {got:08x} (owed {crc:08x})",
    )
    rate = total / result.seconds
    text.timed, text.plain = (max(text.timed, rate), text.plain) if orders else (
        text.timed, max(text.plain, rate))  # fmt: skip

    if orders:
        head, arrow_parts, tail = _arrow_parts(traffic)
        want = np.concatenate(traffic.masks)
        what = "restrictions: Arrow with times"
    else:
        stream = s.traffic.arrow_int64
        head, arrow_parts, tail = stream.head, stream.parts, stream.tail
        want = stream.expected(len(arrow_parts))
        what = "restrictions: Arrow int64"
    result = _stream_arrow(s, head, arrow_parts, tail)
    if not _complete(s, what, result, len(arrow_parts)):
        return False
    mask = result.consumed
    assert isinstance(mask, pa.Array)
    wrong = len(mask) != len(want) or bool(np.any(mask.to_numpy(zero_copy_only=False) != want))
    s.result.check(f"{what}: answered every ID as owed", not wrong)
    rate = total / result.seconds
    arrow.timed, arrow.plain = (max(arrow.timed, rate), arrow.plain) if orders else (
        arrow.timed, max(arrow.plain, rate))  # fmt: skip
    return True


def restrictions(s: Session) -> None:
    """Reads without orders and with both in force, alternated; reflect times of place/lift."""
    pop = s.population
    traffic = timed_traffic(s)
    admin = _admin_token(s)
    p = s.profile
    br_subject = str(ID_BASE + int(np.flatnonzero((pop.jurisdiction == BR) & pop.allowed)[0]))
    eea_subject = str(ID_BASE + int(np.flatnonzero(pop.in_eea & pop.allowed)[0]))
    text, arrow, single = Rates(), Rates(), Rates()
    p99 = {False: 0.0, True: 0.0}
    placed = lifted = None
    br_write = lift_write = 0.0
    changed: object = None
    run_wrk(s.server.port, p.warmup_seconds, s.pipeline_token, pop.size)
    for k in range(REPEATS):
        if not _timed_reads(s, traffic, text, arrow, orders=False):
            return
        w = run_wrk(s.server.port, p.wrk_seconds, s.pipeline_token, pop.size)
        single.plain = max(single.plain, w.rate)
        p99[False] = w.p99_ms
        orders, write = _orders(s, admin)
        reflected = _reflected(s, br_subject, True, time.monotonic() + 30)
        s.result.check(f"restrictions: every worker reflects the placed orders ({k + 1})",
                       reflected is not None)  # fmt: skip
        if k == 0:
            placed, br_write, changed = reflected, write, orders[1].get("changed")
        ok = _timed_reads(s, traffic, text, arrow, orders=True)
        w = run_wrk(s.server.port, p.wrk_seconds, s.pipeline_token, pop.size)
        single.timed = max(single.timed, w.rate)
        p99[True] = w.p99_ms
        began = time.monotonic()
        _lift(s, admin, orders[1]["id"])
        write = time.monotonic() - began
        reflected = _reflected(s, br_subject, False, time.monotonic() + 30)
        _lift(s, admin, orders[0]["id"])
        # The next plain reads must meet no order in any worker.
        eea_lifted = _reflected(s, eea_subject, False, time.monotonic() + 30)
        s.result.check(f"restrictions: every worker reflects the lifts ({k + 1})",
                       reflected is not None and eea_lifted is not None)  # fmt: skip
        if k == 0:
            lifted, lift_write = reflected, write
        if not ok:
            return

    note = f"{s.traffic.total_ids:,} IDs; best of {REPEATS}, alternated with no order"
    for key, what, rates, base_what, target in (
        ("restrictions.text", "filter, text with content times, 2 orders in force, IDs/s",
         text, "(plain text, no order)", "plain text"),
        ("restrictions.arrow",
         "filter, Arrow int64 + content_time column, 2 orders in force, IDs/s", arrow,
         "(Arrow int64, no order)", "Arrow int64"),
    ):  # fmt: skip
        ratio = rates.timed / rates.plain if rates.plain else 0.0
        s.add(Figure(key, what, rates.timed, "IDs/s", baseline=rates.plain,
                     baseline_what=base_what, ratio=ratio,
                     target=f"≥ {TARGET_RATIO}× {target}", met=ratio >= TARGET_RATIO,
                     note=note))  # fmt: skip
    ratio = single.timed / single.plain if single.plain else 0.0
    s.add(Figure(
        "restrictions.single", "single lookup with 2 orders in force, requests/s",
        single.timed, "req/s", baseline=single.plain, baseline_what="(no order, same run)",
        ratio=ratio, target="unchanged within noise", met=ratio >= 0.9,
        note=f"best of {REPEATS} each, alternated; last p99 {p99[True]:.2f} ms "
        f"(no order {p99[False]:.2f} ms)",
    ))  # fmt: skip
    placed_count = changed.get("placed") if isinstance(changed, dict) else changed
    for key, what, seconds, write in (
        ("restrictions.placed", "placing an order on BR: every worker answers it", placed,
         br_write),
        ("restrictions.lifted", "lifting it: every worker answers without it", lifted,
         lift_write),
    ):  # fmt: skip
        s.add(Figure(
            key, what, seconds, "s", target=f"≤ {REFLECT_TARGET_S:g} s ({pop.size:,} subjects)",
            met=seconds is not None and seconds <= REFLECT_TARGET_S,
            note=f"after the write's answer ({write * 1000:.0f} ms); {CONSECUTIVE} "
            f"fresh-connection answers in a row; answers changed {placed_count}",
        ))  # fmt: skip
