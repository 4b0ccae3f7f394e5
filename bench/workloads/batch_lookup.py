"""Batch lookups of 10,000 IDs from 8 threads, beside one lookup per ID from 8 threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from bench import clients
from bench.population import ID_BASE, PURPOSE, user_ids
from bench.report import Figure
from bench.traffic import BATCH_SIZE
from bench.workloads.session import Session

CLIENT_THREADS = 8


def _in_threads(count: int, work: Callable[[int], tuple[int, int]]) -> tuple[int, int, float]:
    """Run work(i) in `count` threads; return summed (done, wrong) and the wall time."""
    totals = [(0, 0)] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            totals[i] = work(i)
        except BaseException as exc:  # reported after the join, with the others' figures
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    seconds = time.monotonic() - started
    if errors:
        raise errors[0]
    return sum(d for d, _ in totals), sum(w for _, w in totals), seconds


def batch_lookup(s: Session) -> None:
    """POST /v1/lookup with 10,000 IDs from 8 threads; baseline: one GET per ID from 8 threads."""
    batches = s.traffic.batches
    body, _, indices = batches[0]
    status, answer = clients.once_json(
        s.server.port, "POST", f"/v1/lookup/{PURPOSE}", s.pipeline_token, body
    )
    expected = {
        u
        for u, a in zip(user_ids(indices), s.population.allowed_for(indices).tolist(), strict=True)
        if a
    }
    s.result.check(
        "batch lookup: exactly the expected IDs allowed",
        status == 200
        and set(answer.get("allowed", [])) == expected
        and len(answer.get("denied", [])) == BATCH_SIZE - len(expected),
        f"{status}: {str(answer)[:200]}; expected {len(expected)} allowed",
    )
    path = f"/v1/lookup/{PURPOSE}"

    def batch_client(i: int) -> tuple[int, int]:
        conn = clients.connect(s.server.port)
        deadline = time.monotonic() + s.profile.batch_seconds
        done = wrong = 0
        k = i
        try:
            while time.monotonic() < deadline:
                data, allowed, _ = batches[k % len(batches)]
                code, doc = clients.request_json(conn, "POST", path, s.pipeline_token, data)
                ok = (
                    code == 200
                    and len(doc["allowed"]) == allowed
                    and len(doc["allowed"]) + len(doc["denied"]) == BATCH_SIZE
                )
                wrong += not ok
                done += BATCH_SIZE
                k += 1
        finally:
            conn.close()
        return done, wrong

    done, wrong, seconds = _in_threads(CLIENT_THREADS, batch_client)
    s.result.check(
        "batch lookup: every timed answer had the expected allowed count",
        wrong == 0,
        f"{wrong} wrong answers",
    )
    batch_rate = done / seconds if seconds else 0.0

    flat = np.concatenate(s.traffic.blocks)
    expected_mask = np.concatenate(s.traffic.masks)
    share = len(flat) // CLIENT_THREADS

    def single_client(i: int) -> tuple[int, int]:
        conn = clients.connect(s.server.port)
        deadline = time.monotonic() + s.profile.single_seconds
        done = wrong = 0
        position = i * share
        try:
            while time.monotonic() < deadline and done < share:
                uid = str(ID_BASE + int(flat[position + done]))
                code, doc = clients.request_json(conn, "GET", s.lookup_path(uid), s.pipeline_token)
                wrong += code != 200 or doc.get("allowed") is not bool(
                    expected_mask[position + done]
                )
                done += 1
        finally:
            conn.close()
        return done, wrong

    singles, single_wrong, single_seconds = _in_threads(CLIENT_THREADS, single_client)
    s.result.check(
        "one-lookup-per-ID client: every answer right",
        single_wrong == 0,
        f"{single_wrong} wrong answers",
    )
    single_rate = singles / single_seconds if single_seconds else 0.0
    ratio = batch_rate / single_rate if single_rate else None
    s.add(
        Figure(
            "batch.json",
            "batch lookup JSON, 10,000 IDs a request, IDs/s",
            batch_rate,
            "IDs/s",
            baseline=single_rate,
            baseline_what="(1 lookup per ID)",
            ratio=ratio,
            target="≥ 300,000 IDs/s and ≥ 100× (N = 1M)",
            met=batch_rate >= 300_000 and ratio is not None and ratio >= 100,
        )
    )
