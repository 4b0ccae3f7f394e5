"""Statements run straight on the database driver, for the write path's hottest statements.

Through the ORM session a statement costs about a millisecond of Python on a loaded machine
(building it, its cache key, the execution context); the driver's own cursor costs a tenth
of that. A PlainStatement is SQL written once with `:name` parameters, each parameter encoded
(and each result column decoded) exactly as its column's SQLAlchemy type would, so rows read
and written either way are the same. It runs on the connection of the session's transaction,
inside that transaction. (psycopg's pipeline mode was measured too: it saved no time on this
machine and cost more CPU per statement.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect

from service.runtime.extensions import db

Processor = Callable[[Any], Any]
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class PlainStatement:
    """SQL with `:name` parameters (per dialect name when they differ), the column whose type
    encodes each parameter, and the column whose type decodes each result column."""

    sql: str | Mapping[str, str]
    binds: Mapping[str, sa.ColumnElement[Any]] = field(default_factory=dict)
    results: Sequence[sa.ColumnElement[Any] | None] = ()
    _compiled: dict[str, _Compiled] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def insert(cls, into: sa.Table, columns: Sequence[str], then: str = "") -> PlainStatement:
        """INSERT of one row of these columns (a parameter each, named as the column), with
        `then` after it (an ON CONFLICT clause, say)."""
        names = ", ".join(f'"{c}"' for c in columns)
        values = ", ".join(f":{c}" for c in columns)
        return cls(
            f"INSERT INTO {into.name} ({names}) VALUES ({values}){then}",
            binds={c: into.c[c] for c in columns},
        )

    def compiled(self, dialect: Dialect) -> _Compiled:
        """This statement for a dialect: its driver's parameter style and the processors."""
        found = self._compiled.get(dialect.name)
        if found is None:
            sql = self.sql if isinstance(self.sql, str) else self.sql[dialect.name]
            if dialect.paramstyle == "pyformat":
                sql = _PARAMETER.sub(r"%(\1)s", sql)
            encoders = {
                name: p
                for name, column in self.binds.items()
                if (p := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
            }
            decoders = tuple(
                (i, p)
                for i, column in enumerate(self.results)
                if column is not None
                and (p := column.type.dialect_impl(dialect).result_processor(dialect, None))
                is not None
            )
            found = self._compiled.setdefault(dialect.name, _Compiled(sql, encoders, decoders))
        return found


@dataclass(frozen=True)
class _Compiled:
    sql: str
    encoders: Mapping[str, Processor]
    decoders: tuple[tuple[int, Processor], ...]  # (result column, its decoder)

    def encode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        encoded = dict(params)
        for name, encode in self.encoders.items():
            if encoded.get(name) is not None:
                encoded[name] = encode(encoded[name])
        return encoded

    def decode(self, row: Sequence[Any]) -> tuple[Any, ...]:
        values = list(row)
        for i, decode in self.decoders:
            if values[i] is not None:
                values[i] = decode(values[i])
        return tuple(values)


class Driver:
    """The driver connection of the session's current transaction, and how to run on it.

    The driver's errors are raised as SQLAlchemy raises them (an outage is an
    OperationalError, answered 503), and a connection found dead is invalidated, as a
    statement through the session would leave it.
    """

    def __init__(self, connection: sa.Connection | None = None) -> None:
        # Asking the session again costs a quarter of a millisecond: pass what it gave.
        self.connection = connection if connection is not None else db.session.connection()
        self.dialect = self.connection.dialect
        raw = self.connection.connection.dbapi_connection
        assert raw is not None
        self.raw: Any = raw  # psycopg's or sqlite3's connection

    @property
    def postgres(self) -> bool:
        """Whether this is PostgreSQL (else SQLite)."""
        return self.dialect.name == "postgresql"

    def execute(self, statement: PlainStatement, params: Mapping[str, Any] | None = None) -> Any:
        """Run the statement; return its cursor (rows are read with `rows`)."""
        compiled = statement.compiled(self.dialect)
        with self._translated(compiled.sql):
            cursor = self.raw.cursor()
            cursor.execute(compiled.sql, compiled.encode(params or {}))
        return cursor

    def executemany(self, statement: PlainStatement, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (on PostgreSQL, in one round trip)."""
        if len(params) == 1:  # the driver's executemany costs more for a single row
            self.execute(statement, params[0]).close()
            return
        compiled = statement.compiled(self.dialect)
        with self._translated(compiled.sql):
            cursor = self.raw.cursor()
            cursor.executemany(compiled.sql, [compiled.encode(p) for p in params])
            cursor.close()

    def rows(self, statement: PlainStatement, cursor: Any) -> list[tuple[Any, ...]]:
        """The cursor's rows, decoded as the statement's result columns say."""
        compiled = statement.compiled(self.dialect)
        with self._translated(compiled.sql):
            rows = [compiled.decode(r) for r in cursor.fetchall()]
            cursor.close()
        return rows

    @contextmanager
    def _translated(self, sql: str) -> Iterator[None]:
        dbapi = self.dialect.loaded_dbapi
        try:
            yield
        except dbapi.Error as error:
            if self.dialect.is_disconnect(error, self.raw, None):
                self.connection.invalidate(error)
            raise sa_exc.DBAPIError.instance(
                sql, None, error, dbapi.Error, dialect=self.dialect
            ) from error
