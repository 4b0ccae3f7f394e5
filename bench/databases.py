"""Fresh databases for one benchmark run: a PostgreSQL database or a SQLite file, always removed."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
KINDS = ("postgres", "sqlite")
LABELS = {"postgres": "PostgreSQL", "sqlite": "SQLite"}


@dataclass(frozen=True)
class BenchDatabase:
    """A database made for one run: its kind and the URL the service and clients use."""

    kind: str
    url: str

    @property
    def label(self) -> str:
        """PostgreSQL or SQLite."""
        return LABELS[self.kind]

    @property
    def sqlite_path(self) -> str:
        """The SQLite file (only for kind sqlite)."""
        return self.url.removeprefix("sqlite:///")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5)


@contextmanager
def fresh_database(kind: str, subjects: int, purpose: str = "") -> Iterator[BenchDatabase]:
    """Create an empty database for a run of `subjects`, and drop it however the run ends.
    `purpose` tells a workload's own database from the run's (e.g. "import")."""
    if kind == "postgres":
        # BENCH_DB_TAG keeps benchmarks run side by side (e.g. from several worktrees) apart.
        tag = os.environ.get("BENCH_DB_TAG", "")
        name = "_".join(part for part in ("bench", tag, purpose, str(subjects)) if part)
        with _admin() as conn:
            # A run that was killed outright may have left its database behind.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield BenchDatabase(kind, f"{POSTGRES_SERVER}/{name}")
        finally:
            with _admin() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    elif kind == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix=f"consent-bench-{purpose}{subjects}-"))
        try:
            yield BenchDatabase(kind, f"sqlite:///{directory / 'consent.db'}")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        raise ValueError(f"unknown database kind {kind!r}")


def describe(kind: str) -> str:
    """Version and the main memory setting of a database engine, for the results."""
    if kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    try:
        with _admin() as conn:
            version = conn.execute("SHOW server_version").fetchone()
            buffers = conn.execute("SHOW shared_buffers").fetchone()
        shown = buffers[0] if buffers else "?"
        return f"PostgreSQL {version[0] if version else '?'} (shared_buffers {shown})"
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable ({type(exc).__name__})"
