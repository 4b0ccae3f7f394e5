"""Writes through the API, timed until every worker answers with them; as_of answers checked."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from bench import clients
from bench.population import ID_BASE, PURPOSE, IntArray
from bench.report import Figure
from bench.workloads.session import Session

FRESHNESS_POLL_LIMIT = 5.0
FRESHNESS_STREAK = 20
FRESHNESS_POLLERS = 2


@dataclass
class _Poll:
    started: float
    correct: bool


def _streak(polls: list[_Poll]) -> int:
    """How many of the latest polls in a row answered right."""
    count = 0
    for p in reversed(polls):
        if not p.correct:
            break
        count += 1
    return count


def _poll_until_reflected(
    s: Session, uid: str, want: bool, written_at: float
) -> tuple[float | None, int, list[str]]:
    """Poll on fresh connections until a streak of answers all reflect the write.

    Returns the delay after which every answer was right (None: not within the poll limit),
    how many polls were made and the last wrong answers.
    """
    polls: list[_Poll] = []
    wrong: deque[str] = deque(maxlen=2)  # the last wrong answers, to explain a failure
    lock = threading.Lock()
    stop = threading.Event()
    deadline = written_at + FRESHNESS_POLL_LIMIT

    def poller() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                code, body = clients.once_json(
                    s.server.port, "GET", s.lookup_path(uid), s.pipeline_token
                )
            except OSError as e:  # counted as a wrong answer; a dead poller would look stale
                code, body = 0, {"error": repr(e)}
            correct = code == 200 and body.get("allowed") is want
            if not correct:
                wrong.append(f"{code} {str(body)[:80]}")
            with lock:
                polls.append(_Poll(started, correct))
                polls.sort(key=lambda p: p.started)
                if _streak(polls) >= FRESHNESS_STREAK:
                    stop.set()

    threads = [threading.Thread(target=poller, daemon=True) for _ in range(FRESHNESS_POLLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(FRESHNESS_POLL_LIMIT + 15)
    if _streak(polls) < FRESHNESS_STREAK:
        return None, len(polls), list(wrong)
    stale = [i for i, p in enumerate(polls) if not p.correct]
    if not stale:
        return 0.0, len(polls), []
    # From the first right answer after the last stale one on, every answer was right.
    return max(0.0, polls[stale[-1] + 1].started - written_at), len(polls), []


def freshness(s: Session) -> None:
    """Write choices through the API; time until every worker answers with them; check as_of."""
    pop = s.population
    rng = np.random.default_rng(13)
    candidates = np.flatnonzero(~pop.has_override)
    subjects: IntArray = rng.choice(
        candidates, max(1, s.profile.freshness_trials // 2), replace=False
    )
    delays: list[float] = []
    as_of_wrong: list[str] = []
    never: list[str] = []
    for index in subjects.tolist():
        uid = str(ID_BASE + index)
        for _ in range(2):  # flip the answer, then flip it back: the population stays as seeded
            code, before = clients.once_json(
                s.server.port, "GET", s.lookup_path(uid), s.pipeline_token
            )
            if code != 200:
                raise RuntimeError(f"lookup of {uid} answered {code}: {before}")
            old = before["allowed"]
            new_state = "denied" if old else "granted"
            code, written = clients.once_json(
                s.server.port,
                "PUT",
                f"/v1/users/{uid}/consents/{PURPOSE}",
                s.app_token,
                json.dumps({"state": new_state, "source": "api"}).encode(),
            )
            written_at = time.monotonic()
            if code != 200:
                raise RuntimeError(f"PUT consent of {uid} answered {code}: {written}")
            seq = written["as_of"]
            delay, polls, wrong = _poll_until_reflected(s, uid, not old, written_at)
            if delay is None:
                never.append(f"{uid} (seq {seq}, {polls} polls, last wrong: {wrong})")
            else:
                delays.append(delay)
            for as_of, want in ((seq - 1, old), (before["as_of"], old), (seq, not old)):
                for _ in range(2):
                    code, doc = clients.once_json(
                        s.server.port, "GET", s.lookup_path(uid, as_of), s.pipeline_token
                    )
                    if code != 200 or doc.get("allowed") is not want or doc.get("as_of") != as_of:
                        as_of_wrong.append(
                            f"{uid} as_of={as_of}: got {code} {str(doc)[:100]}, want allowed={want}"
                        )
    s.result.check(
        f"freshness: every write was reflected within {FRESHNESS_POLL_LIMIT:.0f} s",
        not never,
        "not reflected: " + ", ".join(never),
    )
    s.result.check(
        "freshness: lookups pinned with as_of give the answer of that seq",
        not as_of_wrong,
        f"{len(as_of_wrong)} wrong, e.g. {as_of_wrong[0]}" if as_of_wrong else "",
    )
    worst = max(delays) * 1000 if delays and not never else None
    s.add(
        Figure(
            "freshness.delay",
            f"freshness: worst delay until every answer reflects a write "
            f"({len(delays) + len(never)} writes)",
            worst,
            "ms",
            target="≤ 1,000 ms",
            met=worst is not None and worst <= 1000,
            note="" if not never else f"{len(never)} never reflected",
        )
    )
    s.add(
        Figure(
            "freshness.as_of",
            "freshness: as_of answers exact",
            float(not as_of_wrong),
            "yes/no",
            target="exact",
            met=not as_of_wrong,
        )
    )
