"""Choice writes over HTTP under wrk, beside pgbench's serialised pattern; a mixed surge of lookups.

Every write changes its user's effective state (each wrk thread owns its users and flips them),
and afterwards the ledger is checked: every accepted write's event present exactly once, seqs
gap-free, no event without an accepted answer.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench import clients
from bench.population import ID_BASE, PURPOSE, IntArray
from bench.report import Figure
from bench.seed import APP_KEY_NAME
from bench.workloads.session import Session

LUA_SCRIPT = Path(__file__).resolve().parent.parent / "writes.lua"
PGBENCH_SCRIPT = Path(__file__).resolve().parent.parent / "writes.pgbench"
CONNECTIONS = 16
WRK_THREADS = 2
PGBENCH_CLIENTS = 8
PGBENCH_THREADS = 2
LOOKUP_SHARE = 0.9
# Users per wrk thread and run: enough that a thread never has the same user in flight twice.
MAX_USERS_PER_THREAD = 50_000
MIN_USERS_PER_THREAD = 64
RUNS = ("warm-up", "writes", "mixed")


@dataclass(frozen=True)
class WriteRun:
    """What one wrk run measured, and the writes it says were accepted."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    writes_ok: int
    writes_bad: int
    lookups_ok: int
    lookups_bad: int
    accepted: list[tuple[int, str]]  # (seq, user_id) of every 200 write
    refused: Counter[str]  # status of every other write answer

    def rate(self, count: int) -> float:
        """Per second over the run."""
        return count / self.seconds if self.seconds else 0.0


def _current_states(s: Session, indices: IntArray) -> list[bool]:
    """Whether each subject's effective state is granted now (none of them has an override)."""
    pop = s.population
    sql = "SELECT user_id, state FROM choices WHERE purpose = %s"
    if s.database.kind == "postgres":
        with psycopg.connect(s.database.url) as conn:
            chosen = dict(conn.execute(sql, (PURPOSE,)).fetchall())
    else:
        with sqlite3.connect(s.database.sqlite_path) as lite:
            chosen = dict(lite.execute(sql.replace("%s", "?"), (PURPOSE,)).fetchall())
    default = pop.default_granted
    return [
        chosen[uid] == "granted" if uid in chosen else bool(default[i])
        for i, uid in ((int(i), str(ID_BASE + int(i))) for i in indices)
    ]


def _plans(s: Session, directory: Path) -> dict[str, Path]:
    """Disjoint users per run and wrk thread, each with its current state, in plan files."""
    pop = s.population
    rng = np.random.default_rng(15)
    # Users without an override: their choice decides their effective state (no restrictions
    # are placed by the bench).
    candidates = rng.permutation(np.flatnonzero(~pop.has_override))
    per_thread = min(MAX_USERS_PER_THREAD, len(candidates) // (len(RUNS) * WRK_THREADS))
    if per_thread < MIN_USERS_PER_THREAD:
        raise RuntimeError(f"{len(candidates)} subjects are too few for the writes workload")
    chosen = candidates[: per_thread * len(RUNS) * WRK_THREADS]
    granted = _current_states(s, chosen)
    prefixes: dict[str, Path] = {}
    for r, run in enumerate(RUNS):
        prefix = directory / f"plan-{run}"
        prefixes[run] = prefix
        for t in range(WRK_THREADS):
            start = (r * WRK_THREADS + t) * per_thread
            lines = (
                f"{ID_BASE + int(chosen[k])} {'g' if granted[k] else 'd'}\n"
                for k in range(start, start + per_thread)
            )
            (directory / f"plan-{run}.{t + 1}").write_text("".join(lines))
    return prefixes


def run_wrk(
    s: Session, seconds: int, plan: Path | None, log: Path, lookup_share: float
) -> WriteRun:
    """Wrk with 16 connections: writes from the plan, and lookups for `lookup_share` of requests."""
    env = dict(os.environ)
    env.update(
        BENCH_TOKEN=s.app_token,
        BENCH_LOOKUP_TOKEN=s.pipeline_token,
        BENCH_PURPOSE=PURPOSE,
        BENCH_PLAN=str(plan or ""),
        BENCH_LOG=str(log),
        BENCH_LOOKUP_SHARE=str(lookup_share),
        BENCH_ID_BASE=str(ID_BASE),
        BENCH_SUBJECTS=str(s.population.size),
    )
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{clients.HOST}:{s.server.port}/",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
        )
    data = json.loads(match.group(1))
    accepted: list[tuple[int, str]] = []
    refused: Counter[str] = Counter()
    if lookup_share < 1:
        for t in range(WRK_THREADS):
            for line in Path(f"{log}.{t + 1}").read_text().splitlines():
                first, second = line.split(" ", 1)
                if first == "!":
                    refused[second] += 1
                else:
                    accepted.append((int(first), second))
    return WriteRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        writes_ok=data["writes_ok"],
        writes_bad=data["writes_bad"],
        lookups_ok=data["lookups_ok"],
        lookups_bad=data["lookups_bad"],
        accepted=accepted,
        refused=refused,
    )


def _head(s: Session) -> int:
    """The ledger head's seq, read from the database itself."""
    sql = "SELECT seq FROM ledger_head"
    if s.database.kind == "postgres":
        with psycopg.connect(s.database.url) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with sqlite3.connect(s.database.sqlite_path) as lite:
            row = lite.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _events_after(s: Session, after: int) -> list[tuple[Any, ...]]:
    """(seq, kind, user_id, purpose, before, after, actor) of every event after a seq."""
    sql = (
        'SELECT seq, kind, user_id, purpose, "before", "after", actor FROM events '
        "WHERE seq > %s ORDER BY seq"
    )
    if s.database.kind == "postgres":
        with psycopg.connect(s.database.url) as conn:
            return list(conn.execute(sql, (after,)).fetchall())
    with sqlite3.connect(s.database.sqlite_path) as lite:
        return list(lite.execute(sql.replace("%s", "?"), (after,)).fetchall())


def _settled_head(s: Session) -> int:
    """The head once the writes still in flight when wrk stopped have committed or failed."""
    head = _head(s)
    for _ in range(20):
        time.sleep(0.5)
        now = _head(s)
        if now == head:
            return head
        head = now
    return head


def check_ledger(s: Session, name: str, run: WriteRun, head_before: int) -> None:
    """Every accepted write's event present exactly once; seqs gap-free; no unanswered event."""
    _settled_head(s)
    events = _events_after(s, head_before)
    seqs = [e[0] for e in events]
    s.result.check(
        f"writes ({name}): seqs after the run are gap-free from the head before it",
        seqs == list(range(head_before + 1, head_before + 1 + len(seqs))),
        f"{len(seqs)} events from {seqs[:1]} to {seqs[-1:]}",
    )
    by_seq = {e[0]: e for e in events}
    answered = Counter(seq for seq, _ in run.accepted)
    twice = [seq for seq, n in answered.items() if n > 1]
    s.result.check(
        f"writes ({name}): no seq answered twice", not twice, f"{len(twice)}, e.g. {twice[:3]}"
    )
    missing = [
        (seq, uid)
        for seq, uid in run.accepted
        if (e := by_seq.get(seq)) is None
        or (e[1], e[2], e[3], e[6]) != ("choice_set", uid, PURPOSE, APP_KEY_NAME)
    ]
    s.result.check(
        f"writes ({name}): every accepted write's event is in the ledger at its seq",
        not missing,
        f"{len(missing)} of {len(run.accepted)} missing, e.g. {missing[:3]}",
    )
    written = [e for e in events if e[6] == APP_KEY_NAME]
    # wrk stops when its time is up without reading the answers still in flight: those writes
    # (at most one per connection) are in the ledger without an answer wrk saw.
    unanswered = len(written) - len(run.accepted)
    s.result.check(
        f"writes ({name}): one event per accepted write, none for a refused one",
        0 <= unanswered <= CONNECTIONS and not twice,
        f"{len(written)} events by {APP_KEY_NAME}, {len(run.accepted)} writes accepted",
    )
    unchanged = [e[0] for e in written if e[4] == e[5]]
    s.result.check(
        f"writes ({name}): every write changed the user's effective state",
        not unchanged,
        f"{len(unchanged)} did not, e.g. seqs {unchanged[:3]}",
    )
    s.result.check(
        f"writes ({name}): every write was accepted and no socket errors",
        not run.refused and run.errors == 0 and run.lookups_bad == 0,
        f"refused {dict(run.refused)}, {run.errors} socket errors, "
        f"{run.lookups_bad} lookups not 200",
    )


def pgbench(s: Session, seconds: int) -> float:
    """Transactions/s of the serialised pattern run by pgbench alone, on copies of the tables."""
    with psycopg.connect(s.database.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_pgbench_events, bench_pgbench_head")
        conn.execute("CREATE TABLE bench_pgbench_head (LIKE ledger_head INCLUDING ALL)")
        conn.execute("CREATE TABLE bench_pgbench_events (LIKE events INCLUDING ALL)")
        conn.execute("INSERT INTO bench_pgbench_head (id, seq, at) VALUES (1, 0, now())")
    try:
        command = [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-c",
            str(PGBENCH_CLIENTS),
            "-j",
            str(PGBENCH_THREADS),
            "-T",
            str(seconds),
            "-D",
            f"subjects={s.population.size}",
            "-f",
            str(PGBENCH_SCRIPT),
            s.database.url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        match = re.search(r"^tps = ([0-9.]+) \(without initial", done.stdout, re.MULTILINE)
        failed = re.search(r"^number of failed transactions: (\d+)", done.stdout, re.MULTILINE)
        if done.returncode != 0 or match is None:
            raise RuntimeError(
                f"pgbench failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}"
            )
        s.result.check(
            "pgbench: no failed transactions",
            failed is None or failed.group(1) == "0",
            failed.group(0) if failed else "",
        )
        return float(match.group(1))
    finally:
        with psycopg.connect(s.database.url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_pgbench_events, bench_pgbench_head")


def writes(s: Session) -> None:
    """Writes alone (after a warm-up), pgbench's baseline, lookups alone, then the mixed surge."""
    p = s.profile
    postgres = s.database.kind == "postgres"
    with tempfile.TemporaryDirectory(prefix="consent-bench-writes-") as tmp:
        directory = Path(tmp)
        plans = _plans(s, directory)
        head = _head(s)
        warm = run_wrk(s, p.warmup_seconds, plans["warm-up"], directory / "log-warm-up", 0.0)
        check_ledger(s, "warm-up", warm, head)
        head = _head(s)
        alone = run_wrk(s, p.wrk_seconds, plans["writes"], directory / "log-writes", 0.0)
        check_ledger(s, "16 connections", alone, head)
        baseline = pgbench(s, p.wrk_seconds) if postgres else None
        lookups = run_wrk(s, p.wrk_seconds, None, directory / "log-lookups", 1.0)
        head = _head(s)
        mixed = run_wrk(s, p.wrk_seconds, plans["mixed"], directory / "log-mixed", LOOKUP_SHARE)
        check_ledger(s, "mixed surge", mixed, head)
    rate = alone.rate(alone.writes_ok)
    ratio = rate / baseline if baseline else None
    s.add(
        Figure(
            "writes.rps",
            f"choice writes over HTTP, {CONNECTIONS} connections, writes/s",
            rate,
            "req/s",
            baseline=baseline,
            baseline_what=f"(pgbench, {PGBENCH_CLIENTS} clients)" if baseline else "",
            ratio=ratio,
            target="≥ 0.4× pgbench (N = 1M)" if postgres else "≥ 400/s (N = 1M)",
            met=(ratio is not None and ratio >= 0.4) if postgres else rate >= 400,
        )
    )
    s.add(Figure("writes.p50", "choice writes p50", alone.p50_ms, "ms"))
    limit = 50.0 if postgres else 100.0
    s.add(
        Figure(
            "writes.p99",
            "choice writes p99",
            alone.p99_ms,
            "ms",
            target=f"≤ {limit:.0f} ms (N = 1M)",
            met=alone.p99_ms <= limit,
        )
    )
    alone_rate = lookups.rate(lookups.lookups_ok)
    mixed_rate = mixed.rate(mixed.lookups_ok)
    mixed_ratio = mixed_rate / alone_rate if alone_rate else None
    s.add(
        Figure(
            "writes.mixed.lookups",
            f"mixed surge ({LOOKUP_SHARE:.0%} lookups): lookups/s",
            mixed_rate,
            "req/s",
            baseline=alone_rate,
            baseline_what=f"(lookups alone, {CONNECTIONS} connections)",
            ratio=mixed_ratio,
            target="≥ 0.7× lookups alone",
            met=mixed_ratio is not None and mixed_ratio >= 0.7,
        )
    )
    s.add(
        Figure(
            "writes.mixed.writes",
            "mixed surge: writes/s beside the lookups",
            mixed.rate(mixed.writes_ok),
            "req/s",
        )
    )
