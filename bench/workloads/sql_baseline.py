"""Hand-written SQL batches on the same database: the baseline of the streamed filter."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.databases import BenchDatabase
from bench.population import PURPOSE, user_ids
from bench.report import Figure
from bench.traffic import Traffic
from bench.workloads.session import Session

SQL_CHUNK = 10_000
EEA_MEMBERS = (
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO"
).split()
POSTGRES_BATCH_SQL = """
SELECT s.user_id,
       CASE WHEN s.erased THEN false
            WHEN o.state IS NOT NULL THEN o.state = 'granted'
            WHEN c.state IS NOT NULL THEN c.state = 'granted'
            WHEN s.jurisdiction = ANY(%(eea)s) THEN false
            ELSE true END
FROM subjects s
LEFT JOIN choices c ON c.user_id = s.user_id AND c.purpose = %(purpose)s
LEFT JOIN overrides o ON o.user_id = s.user_id AND o.purpose = %(purpose)s
     AND o.lifted_seq IS NULL AND o.expired_seq IS NULL
     AND (o.expires_at IS NULL OR o.expires_at > now())
WHERE s.user_id = ANY(%(ids)s)
"""
SQLITE_BATCH_SQL = """
SELECT s.user_id,
       CASE WHEN s.erased THEN 0
            WHEN o.state IS NOT NULL THEN o.state = 'granted'
            WHEN c.state IS NOT NULL THEN c.state = 'granted'
            WHEN s.jurisdiction IN ({eea}) THEN 0
            ELSE 1 END
FROM subjects s
LEFT JOIN choices c ON c.user_id = s.user_id AND c.purpose = ?
LEFT JOIN overrides o ON o.user_id = s.user_id AND o.purpose = ?
     AND o.lifted_seq IS NULL AND o.expired_seq IS NULL
     AND (o.expires_at IS NULL OR o.expires_at > ?)
WHERE s.user_id IN ({ids})
"""


def _sql_chunks(traffic: Traffic) -> Any:
    for block in traffic.blocks:
        for lo in range(0, len(block), SQL_CHUNK):
            yield block[lo : lo + SQL_CHUNK]


def _sql_runner(
    database: BenchDatabase,
) -> tuple[Callable[[list[str]], dict[str, bool]], Callable[[], None]]:
    """A function answering one batch of IDs with one hand-written query, and a closer."""
    if database.kind == "postgres":
        pg = psycopg.connect(database.url, autocommit=True)
        params: dict[str, Any] = {"eea": EEA_MEMBERS, "purpose": PURPOSE}

        def query_postgres(ids: list[str]) -> dict[str, bool]:
            params["ids"] = ids
            return dict(pg.execute(POSTGRES_BATCH_SQL, params).fetchall())

        return query_postgres, pg.close
    lite = sqlite3.connect(database.sqlite_path, check_same_thread=False)
    eea = ", ".join(f"'{c}'" for c in EEA_MEMBERS)
    now = datetime.now(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    def query_sqlite(ids: list[str]) -> dict[str, bool]:
        sql = SQLITE_BATCH_SQL.format(eea=eea, ids=", ".join("?" * len(ids)))
        return {u: bool(a) for u, a in lite.execute(sql, [PURPOSE, PURPOSE, now, *ids])}

    return query_sqlite, lite.close


def sql_baseline(s: Session) -> None:
    """Hand-written SQL batches of 10,000 IDs on the same database, against the filter's rate."""
    query, close = _sql_runner(s.database)
    population = s.population
    done = 0
    spent = 0.0
    wrong = 0
    try:
        for chunk in _sql_chunks(s.traffic):
            if spent > s.profile.sql_seconds:
                break
            ids = user_ids(chunk)
            started = time.perf_counter()
            found = query(ids)
            allowed = sum(found.get(u, False) for u in ids)
            spent += time.perf_counter() - started
            wrong += allowed != int(population.allowed_for(chunk).sum())
            done += len(chunk)
    finally:
        close()
    s.result.check(
        "hand-written SQL baseline agrees with the population", wrong == 0, f"{wrong} batches off"
    )
    sql_rate = done / spent if spent else 0.0
    for key, what in (
        ("filter.text", "filter (text)"),
        ("filter.arrow.int64", "filter (Arrow int64)"),
    ):
        rate = s.filter_rates.get(key)
        ratio = rate / sql_rate if rate is not None and sql_rate else None
        s.add(
            Figure(
                f"sql.{key}",
                f"{what} vs hand-written SQL batch of 10,000, IDs/s",
                rate,
                "IDs/s",
                baseline=sql_rate,
                baseline_what="(SQL)",
                ratio=ratio,
                target="≥ 10× SQL",
                met=ratio is not None and ratio >= 10,
                note=f"SQL over {done:,} IDs",
            )
        )
