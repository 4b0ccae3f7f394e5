"""Day one: `consent import` of N subjects with one choice each into an empty ledger that a server
(2 workers, as `make run`) is serving, then how soon every worker answers the imported state.

The workload has a database and a server of its own (an import is about an empty ledger, not
the seeded population). The input is a Parquet file made here; the import runs as an operator
runs it, as a `consent import` process, timed end to end (reading, checking, every event). Its
baseline is the database's own speed for the very same rows: the first rows' subjects, choices
and events rendered as CSV beforehand and only COPYed, batch by batch, into a second fresh
database (on SQLite: executemany). After the import, fresh connections ask a sample of the
imported IDs until a run of answers is right (every worker answers the imported state), and
/metrics is read until no worker's index lags (every worker has rebuilt its index).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from flask_migrate import upgrade

from bench import clients
from bench.databases import BenchDatabase, fresh_database
from bench.population import DEFAULT_SEED, JURISDICTIONS, PURPOSE, Population
from bench.report import Figure, RunResult
from bench.seed import DEFAULTS, SEED_ACTOR, UNKNOWN_SUBJECT
from bench.server import gunicorn
from service import create_app
from service.domain import imports as rules
from service.domain.policy import Policy
from service.ledger import keys as api_keys
from service.ledger import purposes
from service.runtime.config import normalise_database_url
from service.runtime.extensions import db
from service.runtime.readiness import MIGRATIONS_DIR

CONSENT = Path(sys.executable).parent / "consent"
ID_BASE = 50_000_000
BATCH = 100_000
GRANTED_SHARE = 0.35
BASELINE_ROWS = 1_000_000
SAMPLE = 1_000
STREAK = 20
WAIT_LIMIT_S = 900.0
RATE_TARGET = 250_000
READY_TARGET_S = 60.0
TARGET_N = 10_000_000


@dataclass(frozen=True)
class Input:
    """The generated input: its file, and per subject its ID and whether it chose granted."""

    path: Path
    ids: np.ndarray
    granted: np.ndarray


def make_input(directory: Path, size: int) -> Input:
    """N rows: numeric IDs, the seeded population's jurisdiction mix, a choice each."""
    population = Population.generate(size, DEFAULT_SEED)
    rng = np.random.default_rng(DEFAULT_SEED + 15)
    granted = rng.random(size) < GRANTED_SHARE
    ids = ID_BASE + np.arange(size, dtype=np.int64)
    path = directory / f"users-{size}.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(ids),
                "jurisdiction": pa.array(JURISDICTIONS, pa.string()).take(
                    pa.array(population.jurisdiction)
                ),
                f"choice:{PURPOSE}": pa.array(np.where(granted, "granted", "denied")),
            }
        ),
        path,
        row_group_size=1_000_000,
    )
    return Input(path, ids, granted)


def prepare(database: BenchDatabase) -> str:
    """Migrate a fresh database, create the purpose; return a pipeline key's token."""
    url = normalise_database_url(database.url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "CONSENT_EXPIRY_SWEEP_SECONDS": 0})
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR))
        purposes.create(
            SEED_ACTOR, PURPOSE, "Model training", "Training our own models.", DEFAULTS,
            UNKNOWN_SUBJECT,
        )  # fmt: skip
        _, token = api_keys.create_key("bench-import", "pipeline", SEED_ACTOR)
        db.session.rollback()
        db.engine.dispose()
    return token


def bare_copy_rate(kind: str, data: Input, log_dir: Path) -> float:
    """Subjects/s of the database alone taking the same rows: the first BASELINE_ROWS rows'
    subjects, choices and events, rendered beforehand, written in batches of BATCH."""
    count = min(BASELINE_ROWS, len(data.ids))
    table = pq.read_table(data.path).slice(0, count)
    with fresh_database(kind, count, "copy") as database:
        prepare(database)
        postgres = kind == "postgres"
        at = datetime.now(UTC)
        facts = rules.LedgerFacts(
            head=_head(database), at=at, policies={PURPOSE: Policy.of(DEFAULTS, "denied")},
            restrictions=(),
        )  # fmt: skip
        at_text = (
            at.isoformat(sep=" ")
            if postgres
            else at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        )
        columns = rules.Columns.of(table.column_names, [PURPOSE])
        plans = []
        for lo in range(0, count, BATCH):
            rows = rules.check_rows(table.slice(lo, BATCH), lo + 1, columns)
            plan = rules.plan(rows, facts, ("bench", "admin"), at_text)
            facts = rules.LedgerFacts(plan.head, at, facts.policies, ())
            plans.append(plan)
        began = time.monotonic()
        if postgres:
            _copy_postgres(database.url, plans)
        else:
            _insert_sqlite(database.sqlite_path, plans)
        return count / (time.monotonic() - began)


def _head(database: BenchDatabase) -> int:
    sql = "SELECT seq FROM ledger_head"
    if database.kind == "postgres":
        import psycopg

        with psycopg.connect(database.url) as conn:
            row = conn.execute(sql).fetchone()
    else:
        with sqlite3.connect(database.sqlite_path) as lite:
            row = lite.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue()


def _copy_postgres(url: str, plans: list[rules.BatchPlan]) -> None:
    import psycopg

    rendered = [[(name, t.column_names, _csv(t)) for name, t in _tables(plan)] for plan in plans]
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        for batch in rendered:
            for name, names, text in batch:
                with cursor.copy(f"COPY {name} ({', '.join(names)}) FROM STDIN (FORMAT csv)") as c:
                    c.write(text)
            conn.commit()


def _insert_sqlite(path: str, plans: list[rules.BatchPlan]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        for plan in plans:
            conn.execute("BEGIN IMMEDIATE")
            for name, t in _tables(plan):
                values = [t.column(i).to_pylist() for i in range(t.num_columns)]
                marks = ", ".join("?" * t.num_columns)
                conn.executemany(
                    f"INSERT INTO {name} ({', '.join(t.column_names)}) VALUES ({marks})",
                    zip(*values, strict=True),
                )
            conn.execute("COMMIT")
    finally:
        conn.close()


def _tables(plan: rules.BatchPlan) -> list[tuple[str, pa.Table]]:
    return [("subjects", plan.subjects), ("choices", plan.choices), ("events", plan.events)]


def _metrics(port: int) -> dict[str, float]:
    """The unlabelled samples of /metrics (none if it cannot be read)."""
    conn = http.client.HTTPConnection(clients.HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except OSError:
        return {}
    finally:
        conn.close()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^([a-z_]+) ([0-9.e+-]+)$", text, re.MULTILINE)
    }


def _answers_right(port: int, token: str, data: Input, sample: np.ndarray, head: int) -> bool:
    """Whether a batch lookup of the sample answers the imported state (a request that fails
    or times out answers nothing right)."""
    body = json.dumps({"user_ids": [str(i) for i in data.ids[sample]]}).encode()
    try:
        status, got = clients.once_json(port, "POST", f"/v1/lookup/{PURPOSE}", token, body)
    except OSError:
        return False
    want = {str(i) for i in data.ids[sample][data.granted[sample]]}
    return status == 200 and got.get("as_of", 0) >= head and set(got.get("allowed", ())) == want


def _until(check: Callable[[], bool], since: float, streak: int = 1) -> float | None:
    """Seconds from `since` until `check` held `streak` times in a row (to the first of them),
    or None if not within WAIT_LIMIT_S."""
    first: float | None = None
    run = 0
    while time.monotonic() - since < WAIT_LIMIT_S:
        asked = time.monotonic()
        if check():
            first = asked if run == 0 else first
            run += 1
            if run >= streak:
                assert first is not None
                return first - since
        else:
            run = 0
            time.sleep(0.05)
    return None


def day_one_import(result: RunResult, kind: str, size: int, log_dir: Path) -> None:
    """Import `size` subjects with a choice each beside a running server; record the figures."""
    directory = Path(tempfile.mkdtemp(prefix="consent-bench-import-"))
    postgres = kind == "postgres"
    try:
        data = make_input(directory, size)
        with fresh_database(kind, size, "import") as database:
            token = prepare(database)
            with gunicorn(log_dir, f"import-{kind}-{size}", database_url=database.url) as server:
                began = time.monotonic()
                done = subprocess.run(
                    [str(CONSENT), "import", str(data.path), "--batch-size", str(BATCH)],
                    env={**os.environ, "CONSENT_DATABASE_URL": database.url},
                    capture_output=True,
                    text=True,
                    timeout=WAIT_LIMIT_S + 120 * size / 1_000_000,
                    check=False,
                )
                ended = time.monotonic()
                seconds = ended - began
                if not result.check(
                    "import: consent import succeeded", done.returncode == 0, done.stderr[-500:]
                ):
                    return
                summary = done.stdout.strip().splitlines()[-1]
                result.notes.append(f"consent import: {summary}")
                head = int(re.findall(r"ledger head ([0-9]+)", summary)[0])
                result.check(
                    "import: every subject imported once, with its registration and choice",
                    f"Imported {size:,} subjects (0 skipped" in summary
                    and f"{size:,} choices, {2 * size:,} events" in summary,
                    summary,
                )
                sample = np.unique(np.linspace(0, size - 1, min(SAMPLE, size)).astype(np.int64))
                answered = _until(
                    lambda: _answers_right(server.port, token, data, sample, head), ended, STREAK
                )
                indexed = _until(
                    lambda: (
                        (m := _metrics(server.port)).get("consent_index_lag_events") == 0
                        and m.get("consent_index_seq", 0) >= head
                    ),
                    ended,
                )
                metrics = _metrics(server.port)
                result.check(
                    "import: every worker answers the imported state",
                    answered is not None,
                    f"no run of {STREAK} right answers within {WAIT_LIMIT_S:.0f} s",
                )
                result.check(
                    "import: the answers are still right once every index holds the import",
                    _answers_right(server.port, token, data, sample, head),
                )
        baseline = bare_copy_rate(kind, data, log_dir)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rate = size / seconds
    ratio = rate / baseline if baseline else None
    at_target = size >= TARGET_N
    result.figures.append(
        Figure(
            "import.rate",
            f"consent import, {size:,} subjects with one choice each ({2 * size:,} events), "
            "end to end: subjects/s",
            rate,
            "/s",
            baseline=baseline,
            baseline_what=f"(bare {'COPY' if postgres else 'executemany'} of the same rows)",
            ratio=ratio,
            target=f"≥ {RATE_TARGET:,}/s (N = 10M)" if postgres else "",
            met=(rate >= RATE_TARGET) if postgres and at_target else None,
        )
    )
    result.figures.append(
        Figure(
            "import.answered",
            "after the import: every worker answers the imported state (fresh connections)",
            answered,
            "s",
            note="the database answers while an index is behind",
        )
    )
    result.figures.append(
        Figure(
            "import.indexed",
            "after the import: every worker's index holds it (rebuilt, /metrics lag 0)",
            indexed,
            "s",
            target=f"≤ {READY_TARGET_S:.0f} s (N = 10M)",
            met=(indexed is not None and indexed <= READY_TARGET_S) if at_target else None,
        )
    )
    result.notes.append(
        f"import: {metrics.get('consent_index_rebuilds_total', 0):.0f} index rebuilds over both "
        f"workers, the last taking {metrics.get('consent_index_rebuild_seconds', 0):.1f} s; "
        f"the import took {seconds:.1f} s"
    )
