"""The in-memory read index: every subject's effective consent per purpose, following the head.

Each worker holds one. Numeric user IDs (canonical digit strings) live in a sorted int64 array
whose positions are the subjects' rows; other IDs, and IDs registered since the last compaction,
live in a dict. Per row: a jurisdiction code and an erased flag; per purpose and row: the user's
choice and one effective code (state and basis). Overrides, being few, are kept per row as the
same facts the pure resolution rule takes.

The index is built from one consistent read of the state tables and then follows the ledger by
applying the events after its seq. An answer as of the head is a vectorised gather. An answer as
of an earlier seq S (not before the index was built) is the same gather, with the policy as of
S for subjects on their default, and with the subjects that have events after S answered from
the database instead: their state as of S is not in memory, everyone else's is unchanged.
"""

from __future__ import annotations

import bisect
import ctypes
import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from service.domain.policy import (
    COUNTRY_CODES,
    OverrideFacts,
    Policy,
    Resolution,
    SubjectFacts,
    default_for,
    resolve,
)
from service.reads.consistent import read_transaction
from service.reads.state import EPOCH
from service.runtime.extensions import db
from service.runtime.models import Event, LedgerHead, Override, Purpose

BASES = ("unknown", "erased", "override", "choice", "default")
BASIS_CODE = {b: i for i, b in enumerate(BASES)}
GRANTED = 1
DEFAULT_CODE = BASIS_CODE["default"] * 2
INVALID = 255  # a malformed ID: never allowed, never looked up
NO_ROW = -1
BAD_ID = -2

USER_ID_PATTERN = "^[A-Za-z0-9._:@-]{1,64}$"
JURISDICTIONS: tuple[str | None, ...] = (None, *sorted(COUNTRY_CODES))
JUR_CODE = {j: i for i, j in enumerate(JURISDICTIONS)}
JURISDICTION_VALUES = pa.array(JURISDICTIONS[1:], pa.string())
CHOICE_CODE = {None: 0, "granted": 1, "denied": 2}
CHOICE_STATE = (None, "granted", "denied")
COMPACT_AFTER = 50_000
DENSE_SLACK = 1_000_000  # a direct table may be this much larger than 4 entries per ID
POWERS_OF_TEN = np.array([10**i for i in range(19)], dtype=np.int64)
PAD = np.array([10**i for i in range(20)], dtype=np.uint64)
LEX_SLICE = 1 << 20
FETCH = 100_000
SQLITE_SPAN = 500_000

IntArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.uint8]


def encode(res: Resolution) -> int:
    """The one-byte code of a resolution: basis and state."""
    return BASIS_CODE[res.basis] * 2 + (GRANTED if res.allowed else 0)


def decode(code: int) -> tuple[str, str]:
    """(state, basis) of a code."""
    return ("granted" if code & GRANTED else "denied"), BASES[code >> 1]


def default_codes(policy: Policy) -> CodeArray:
    """The default code for every jurisdiction code, by the resolution rule itself."""
    return np.array(
        [DEFAULT_CODE | (default_for(policy, j)[0] == "granted") for j in JURISDICTIONS],
        dtype=np.uint8,
    )


def unknown_code(policy: Policy) -> int:
    """The code for an ID the ledger has not seen."""
    return BASIS_CODE["unknown"] * 2 + (policy.unknown_subject == "granted")


class Stale(Exception):
    """The index cannot answer this as_of from memory; the database must."""


@dataclass
class PurposeIndex:
    """One purpose's policy history and per-row state."""

    key: str
    created_seq: int
    history: list[tuple[int, Policy]]
    choice: npt.NDArray[np.int8]
    eff: CodeArray
    overrides: dict[int, list[OverrideFacts]] = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        """The policy at the index's seq."""
        return self.history[-1][1]

    def policy_at(self, seq: int) -> Policy:
        """The policy as of seq (the purpose existed then)."""
        seqs = [s for s, _ in self.history]
        return self.history[bisect.bisect_right(seqs, seq) - 1][1]


class ConsentIndex:
    """Subjects and their effective consent per purpose, as of `seq`, in memory."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # One thread at a time applies events and compacts (the poll thread, or a request
        # catching up); two compactions at once could each drop the other's new IDs.
        self.follow_lock = threading.Lock()
        self.seq = 0
        self.at: datetime = EPOCH
        self.built_seq = 0
        self.keys: IntArray = np.empty(0, dtype=np.int64)  # sorted numeric IDs
        self.key_rows = np.empty(0, dtype=np.int32)  # the row of each key
        self.extra: dict[str, int] = {}  # IDs that are not plain numbers -> row
        self.extra_numbers: dict[int, int] = {}  # numeric IDs since the last compaction -> row
        self._recent: tuple[IntArray, IntArray] | None = None
        self.dense: npt.NDArray[np.int32] | None = None
        self.dense_lo = 0
        self.lex = np.empty(0, dtype=np.int32)  # positions of `keys` in byte order of the text
        self.n_rows = 0
        self.jur = np.zeros(0, dtype=np.uint8)
        self.erased = np.zeros(0, dtype=np.bool_)
        self.purposes: dict[str, PurposeIndex] = {}
        self.changed: dict[str, int] = {}  # user_id -> seq of its last event since the build

    # ------------------------------------------------------------------ rows

    def _grow(self, rows: int) -> None:
        if rows <= len(self.jur):
            return
        capacity = max(rows, int(len(self.jur) * 1.25) + 1024)
        self.jur = _resized(self.jur, capacity)
        self.erased = _resized(self.erased, capacity)
        for p in self.purposes.values():
            p.choice = _resized(p.choice, capacity)
            p.eff = _resized(p.eff, capacity)

    def row_of(self, user_id: str) -> int:
        """The row of a known subject, or NO_ROW."""
        if not _is_numeric(user_id):
            return self.extra.get(user_id, NO_ROW)
        value = int(user_id)
        if self.dense is not None:
            offset = value - self.dense_lo
            if 0 <= offset < len(self.dense) and self.dense[offset] != NO_ROW:
                return int(self.dense[offset])
        else:
            i = int(np.searchsorted(self.keys, value))
            if i < len(self.keys) and self.keys[i] == value:
                return int(self.key_rows[i])
        return self.extra_numbers.get(value, NO_ROW)

    def _new_row(self, user_id: str) -> int:
        row = self.n_rows
        self.n_rows += 1
        self._grow(self.n_rows)
        if _is_numeric(user_id):
            self.extra_numbers[int(user_id)] = row
            self._recent = None
        else:
            self.extra[user_id] = row
        self.jur[row] = 0
        self.erased[row] = False
        for p in self.purposes.values():
            p.choice[row] = 0
        return row

    def rows_for(self, ids: pa.Array) -> IntArray:
        """Rows for an Arrow string array of IDs: NO_ROW if unknown, BAD_ID if malformed/null."""
        n = len(ids)
        rows = np.full(n, BAD_ID, dtype=np.int64)
        if n == 0:
            return rows
        numeric = numeric_mask(ids)
        at_numeric = np.flatnonzero(numeric)
        if len(at_numeric):
            values = pc.cast(ids.filter(pa.array(numeric)), pa.int64()).to_numpy()
            rows[at_numeric] = self.rows_of_numbers(values)
        others = np.flatnonzero(~numeric)
        if len(others):
            # Only IDs that are not plain numbers need the full pattern (and the dict).
            texts = ids.take(pa.array(others))
            ok = pc.fill_null(pc.match_substring_regex(texts, USER_ID_PATTERN), False)
            ok_np = ok.to_numpy(zero_copy_only=False)
            valid = others[ok_np]
            if len(valid):
                get = self.extra.get
                names = texts.filter(ok).to_pylist()
                rows[valid] = [get(t, NO_ROW) for t in names]
        return rows

    def rows_of_numbers(self, values: IntArray) -> IntArray:
        """Rows of numeric IDs (NO_ROW where unknown): a direct table when IDs are dense."""
        out = np.full(len(values), NO_ROW, dtype=np.int64)
        if self.dense is not None:
            offset = values - self.dense_lo
            inside = (offset >= 0) & (offset < len(self.dense))
            out[inside] = self.dense[offset[inside]]
        elif len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, values), len(self.keys) - 1)
            out = np.where(self.keys[pos] == values, self.key_rows[pos], NO_ROW).astype(np.int64)
        if self.extra_numbers:
            missing = np.flatnonzero(out == NO_ROW)
            if len(missing):
                keys, rows = self._recent_numbers()
                pos = np.minimum(np.searchsorted(keys, values[missing]), len(keys) - 1)
                out[missing] = np.where(keys[pos] == values[missing], rows[pos], NO_ROW)
        return out

    def _recent_numbers(self) -> tuple[IntArray, IntArray]:
        if self._recent is None:
            keys = np.fromiter(self.extra_numbers.keys(), np.int64, len(self.extra_numbers))
            rows = np.fromiter(self.extra_numbers.values(), np.int64, len(self.extra_numbers))
            order = np.argsort(keys)
            self._recent = (keys[order], rows[order])
        return self._recent

    def _index_keys(self) -> None:
        """Derive what lookups and snapshots need from the keys: the direct table from numeric
        ID to row (when the IDs are dense enough) and their byte order as text."""
        self.lex = _lexicographic_order(self.keys)
        self.dense, self.dense_lo = None, 0
        if len(self.keys):
            lo, span = int(self.keys[0]), int(self.keys[-1] - self.keys[0]) + 1
            if span <= 4 * len(self.keys) + DENSE_SLACK:
                dense = np.full(span, NO_ROW, dtype=np.int32)
                dense[self.keys - lo] = self.key_rows
                self.dense, self.dense_lo = dense, lo

    # ------------------------------------------------------------------ answers

    def _purpose_at(self, purpose: str, seq: int) -> PurposeIndex:
        if seq > self.seq or seq < self.built_seq:
            raise Stale(seq)
        p = self.purposes.get(purpose)
        if p is None or p.created_seq > seq:
            raise KeyError(purpose)
        return p

    def _codes(self, p: PurposeIndex, seq: int, rows: IntArray) -> CodeArray:
        known = rows >= 0
        policy = p.policy_at(seq)
        out = np.full(len(rows), unknown_code(policy), dtype=np.uint8)
        out[known] = p.eff[rows[known]]
        out[rows == BAD_ID] = INVALID
        if policy is not p.policy:
            # Subjects untouched since seq answer with the policy of then if on their default.
            on_default = known & ((out >> 1) == BASIS_CODE["default"])
            out[on_default] = default_codes(policy)[self.jur[rows[on_default]]]
        return out

    def number_codes(self, purpose: str, seq: int, values: IntArray) -> tuple[CodeArray, list[int]]:
        """codes() for numeric IDs given as integers in [0, 10**18): no text at all."""
        with self.lock:
            p = self._purpose_at(purpose, seq)
            out = self._codes(p, seq, self.rows_of_numbers(values))
            stale: list[int] = []
            if seq < self.seq and self.changed:
                changed = [int(u) for u, s in self.changed.items() if s > seq and _is_numeric(u)]
                if changed:
                    stale = np.flatnonzero(np.isin(values, changed)).tolist()
            return out, stale

    def code_of(self, purpose: str, seq: int, user_id: str) -> int | None:
        """The code of one well-formed ID as of seq, or None if the database must answer."""
        with self.lock:
            p = self._purpose_at(purpose, seq)
            if seq < self.seq and self.changed.get(user_id, 0) > seq:
                return None
            row = self.row_of(user_id)
            policy = p.policy_at(seq)
            if row == NO_ROW:
                return unknown_code(policy)
            code = int(p.eff[row])
            if policy is not p.policy and code >> 1 == BASIS_CODE["default"]:
                code = int(default_codes(policy)[self.jur[row]])
            return code

    def codes(self, purpose: str, seq: int, ids: pa.Array) -> tuple[CodeArray, list[int]]:
        """Codes for each ID as of seq, and the positions the database must answer instead.

        Raises Stale when seq is outside what memory can answer (before the build, or after
        the index's own seq), and KeyError when the purpose did not exist as of seq.
        """
        with self.lock:
            p = self._purpose_at(purpose, seq)
            rows = self.rows_for(ids)
            out = self._codes(p, seq, rows)
            stale: list[int] = []
            if seq < self.seq and self.changed:
                changed = [u for u, s in self.changed.items() if s > seq]
                if changed:
                    hit = pc.fill_null(pc.is_in(ids, value_set=pa.array(changed, ids.type)), False)
                    stale = np.flatnonzero(hit.to_numpy(zero_copy_only=False)).tolist()
            return out, stale

    # ------------------------------------------------------------------ applying the ledger

    def _recompute(self, row: int, purposes: Iterable[PurposeIndex]) -> None:
        subject = SubjectFacts(JURISDICTIONS[self.jur[row]], bool(self.erased[row]))
        for p in purposes:
            res = resolve(
                subject,
                CHOICE_STATE[p.choice[row]],
                p.overrides.get(row, ()),
                p.policy,
                self.seq,
                self.at,
            )
            p.eff[row] = encode(res)

    def _add_purpose(self, key: str, seq: int, policy: Policy) -> PurposeIndex:
        capacity = len(self.jur)
        p = PurposeIndex(
            key,
            seq,
            [(seq, policy)],
            np.zeros(capacity, dtype=np.int8),
            np.zeros(capacity, dtype=np.uint8),
        )
        self.purposes[key] = p
        self._recompute_all(p)
        return p

    def _recompute_all(self, p: PurposeIndex) -> None:
        """Vectorised: erased, else choice, else default; then rows with overrides one by one."""
        n = self.n_rows
        eff = default_codes(p.policy)[self.jur[:n]]
        choice = p.choice[:n]
        has_choice = choice != 0
        eff[has_choice] = BASIS_CODE["choice"] * 2 + (choice[has_choice] == 1)
        eff[self.erased[:n]] = BASIS_CODE["erased"] * 2
        p.eff[:n] = eff
        for row in list(p.overrides):
            self._recompute(row, [p])

    def apply(self, events: Sequence[Any]) -> None:
        """Apply events in seq order and move the index to the last; ones it has are skipped
        (two threads catching up at once may fetch the same events)."""
        with self.lock:
            events = [e for e in events if e.seq > self.seq]
            if not events:
                return
            touched: set[int] = set()
            policy_moved: set[str] = set()
            for e in events:
                self.seq, self.at = e.seq, e.at
                self._apply_one(e, touched, policy_moved)
            for key in policy_moved:
                self._recompute_all(self.purposes[key])
            for row in touched:
                self._recompute(row, self.purposes.values())
        if len(self.extra_numbers) > COMPACT_AFTER:
            self.compact()

    def _apply_one(self, e: Any, touched: set[int], policy_moved: set[str]) -> None:
        data = e.data or {}
        kind = e.kind
        if kind in ("purpose_created", "policy_changed"):
            policy = Policy(dict(data["defaults"]), data["unknown_subject"])
            if e.purpose in self.purposes:
                self.purposes[e.purpose].history.append((e.seq, policy))
                policy_moved.add(e.purpose)
            else:
                self._add_purpose(e.purpose, e.seq, policy)
            return
        if e.user_id is None:
            return
        self.changed[e.user_id] = e.seq
        row = self.row_of(e.user_id)
        if row == NO_ROW:
            row = self._new_row(e.user_id)
        touched.add(row)
        p = self.purposes.get(e.purpose) if e.purpose else None
        if kind == "subject_registered":
            self.jur[row] = JUR_CODE.get(data.get("jurisdiction"), 0)
        elif kind == "jurisdiction_changed":
            self.jur[row] = JUR_CODE.get(data.get("to"), 0)
        elif kind == "subject_erased":
            self.erased[row] = True
        elif kind == "choice_set" and p is not None:
            p.choice[row] = CHOICE_CODE.get(data.get("state"), 0)
        elif kind == "override_placed" and p is not None:
            expires = data.get("expires_at")
            p.overrides.setdefault(row, []).append(
                OverrideFacts(
                    id=int(data["override_id"]),
                    state=str(data["state"]),
                    placed_seq=e.seq,
                    expires_at=datetime.fromisoformat(expires) if expires else None,
                    placed_by=e.actor,
                    ticket=e.ticket or "",
                )
            )
        elif kind == "override_lifted" and p is not None:
            kept = [o for o in p.overrides.get(row, []) if o.id != data.get("override_id")]
            if kept:
                p.overrides[row] = kept
            else:
                p.overrides.pop(row, None)

    def compact(self) -> None:
        """Fold numeric IDs registered since the last compaction into the sorted key array.

        Only the thread holding follow_lock calls this (through apply). Rows never move, and
        the new arrays are built aside and swapped in at once, so readers (a snapshot being
        streamed) keep a consistent set of the old ones and are not held up while they are
        built.
        """
        new = dict(self.extra_numbers)
        if not new:
            return
        shadow = ConsentIndex()
        keys = np.concatenate([self.keys, np.fromiter(new.keys(), np.int64, len(new))])
        rows = np.concatenate([self.key_rows, np.fromiter(new.values(), np.int32, len(new))])
        order = np.argsort(keys, kind="stable")
        shadow.keys, shadow.key_rows = keys[order], rows[order]
        shadow._index_keys()
        with self.lock:
            self.keys, self.key_rows = shadow.keys, shadow.key_rows
            self.lex, self.dense, self.dense_lo = shadow.lex, shadow.dense, shadow.dense_lo
            for number in new:
                self.extra_numbers.pop(number, None)
            self._recent = None

    # ------------------------------------------------------------------ snapshots

    def snapshot_pages(
        self, purpose: str, seq: int, page: int = 100_000
    ) -> Iterator[tuple[pa.Array, CodeArray, list[int]]]:
        """Subjects in user_id byte order, page by page: (ids, codes, stale positions).

        Codes come straight from rows, no ID parsing. The key arrays are taken once, at the
        start: compaction swaps in new ones rather than changing these, and rows never move.
        """
        with self.lock:
            self._purpose_at(purpose, seq)
            keys, key_rows, lex = self.keys, self.key_rows, self.lex
            others = sorted(
                [*self.extra.items(), *((str(n), r) for n, r in self.extra_numbers.items())]
            )
            changed = pa.array([u for u, s in self.changed.items() if s > seq], pa.string())
        strings = [u for u, _ in others]
        string_rows = np.array([r for _, r in others], dtype=np.int64)
        digits = _Digits(keys, lex)
        positions = [bisect.bisect_left(digits, u) for u in strings]
        n, s_i = len(keys), 0
        for start in range(0, max(n, 1), page):
            stop = min(start + page, n)
            here = lex[start:stop]
            rows = key_rows[here].astype(np.int64)
            ids = pc.cast(pa.array(keys[here]), pa.string())
            take = s_i
            while take < len(strings) and (positions[take] < stop or stop == n):
                take += 1
            if take > s_i:
                # IDs kept outside the sorted array that sort inside this page: merge them in.
                ids = pa.concat_arrays([ids, pa.array(strings[s_i:take], pa.string())])
                rows = np.concatenate([rows, string_rows[s_i:take]])
                order = pc.sort_indices(ids).to_numpy()
                ids, rows = ids.take(pa.array(order)), rows[order]
                s_i = take
            if len(rows) == 0:
                continue
            with self.lock:
                out = self._codes(self._purpose_at(purpose, seq), seq, rows)
            stale: list[int] = []
            if len(changed):
                hit = pc.is_in(ids, value_set=changed).to_numpy(zero_copy_only=False)
                stale = np.flatnonzero(hit).tolist()
            yield ids, out, stale


class _Digits(Sequence[str]):
    """The numeric IDs as strings, in byte order, for bisecting a string ID into them."""

    def __init__(self, keys: IntArray, lex: npt.NDArray[np.int32]) -> None:
        self.keys, self.lex = keys, lex

    def __len__(self) -> int:
        return len(self.lex)

    def __getitem__(self, i: Any) -> Any:
        return str(int(self.keys[self.lex[i]]))


def _lexicographic_order(keys: IntArray) -> npt.NDArray[np.int32]:
    """Positions of sorted numeric IDs ordered as strings: by the digits padded right with
    zeros, shorter first on a tie (a prefix sorts first).

    The keys are sorted, so their lengths already ascend and a stable sort on the padded value
    alone gives that order. Worked in slices to keep the transient memory small.
    """
    padded = np.empty(len(keys), dtype=np.uint64)
    for start in range(0, len(keys), LEX_SLICE):
        part = keys[start : start + LEX_SLICE]
        # Digit counts by comparison with powers of ten: exact, unlike a floating-point log10.
        lengths = np.maximum(np.searchsorted(POWERS_OF_TEN, part, side="right"), 1)
        padded[start : start + LEX_SLICE] = part.astype(np.uint64) * PAD[19 - lengths]
    order: npt.NDArray[np.int32] = np.argsort(padded, kind="stable").astype(np.int32)
    return order


def numeric_mask(ids: pa.Array) -> npt.NDArray[np.bool_]:
    """Where IDs are canonical digit strings that fit an int64 (no leading zero, <= 18 digits).

    Cheaper than a regular expression: these are most IDs, and then need no other check.
    """
    digits = pc.fill_null(pc.ascii_is_decimal(ids), False)
    length = pc.utf8_length(ids)
    short = pc.fill_null(pc.less_equal(length, 18), False)
    no_leading_zero = pc.or_(pc.invert(pc.starts_with(ids, "0")), pc.equal(length, 1))
    mask = pc.and_(pc.and_(digits, short), pc.fill_null(no_leading_zero, False))
    out: npt.NDArray[np.bool_] = mask.to_numpy(zero_copy_only=False)
    return out


def _is_numeric(user_id: str) -> bool:
    return (
        user_id.isascii()
        and user_id.isdigit()
        and (user_id == "0" or user_id[0] != "0")
        and len(user_id) <= 18
    )


def _resized(array: Any, capacity: int) -> Any:
    out = np.zeros(capacity, dtype=array.dtype)
    out[: len(array)] = array
    return out


# ---------------------------------------------------------------------- loading from the database


EVENT_FIELDS = (
    Event.seq,
    Event.at,
    Event.kind,
    Event.user_id,
    Event.purpose,
    Event.data,
    Event.actor,
    Event.ticket,
)


def build() -> ConsentIndex:
    """Build an index from one consistent read of the state tables at the ledger head."""
    index = ConsentIndex()
    session = db.session
    with read_transaction():
        if session.get_bind().dialect.name == "postgresql":
            # Reading every subject is long by design; only this transaction's limit is lifted.
            session.execute(sa.text("SET LOCAL statement_timeout = 0"))
        head = session.execute(sa.select(LedgerHead.seq, LedgerHead.at)).one()
        index.seq = index.built_seq = int(head.seq)
        index.at = head.at or EPOCH
        _load_subjects(index)
        histories = _policy_histories()
        for p in session.execute(sa.select(Purpose.key, Purpose.created_seq)):
            index.purposes[p.key] = PurposeIndex(
                p.key,
                p.created_seq,
                histories[p.key],
                np.zeros(len(index.jur), dtype=np.int8),
                np.zeros(len(index.jur), dtype=np.uint8),
            )
        _load_choices(index)
        _load_overrides(index)
        for pi in index.purposes.values():
            index._recompute_all(pi)
    _release_build_memory()
    return index


def _release_build_memory() -> None:
    """Hand the build's freed buffers back to the OS: a worker's resident memory is then the
    index itself, not the high-water mark of reading it."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _table_batches(table: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """A table's columns (named by schema) as Arrow record batches, in the session's transaction.

    Both backends hand the rows over as CSV text that Arrow parses in C++, so no per-row Python
    objects are made: PostgreSQL with COPY ... TO STDOUT, SQLite with group_concat over rowid
    ranges. (No value here can hold a comma: IDs, codes and states are validated.)
    """
    columns = ", ".join(schema.names)
    dbapi: Any = db.session.connection().connection.dbapi_connection
    if db.session.get_bind().dialect.name == "postgresql":
        with (
            dbapi.cursor() as cursor,
            cursor.copy(f"COPY (SELECT {columns} FROM {table}) TO STDOUT (FORMAT csv)") as copy,
        ):
            reader = _CopyReader(copy)
            if reader.peek():  # Arrow refuses an empty CSV; an empty table has no batches
                yield from _parse_csv(reader, schema)
        return
    row = " || ',' || ".join(f"coalesce({c}, '')" for c in schema.names)
    cursor = dbapi.cursor()
    try:
        top = cursor.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0]
        for lo in range(0, top, SQLITE_SPAN):
            text = cursor.execute(
                f"SELECT group_concat({row}, char(10)) FROM {table} WHERE rowid > ? AND rowid <= ?",
                (lo, lo + SQLITE_SPAN),
            ).fetchone()[0]
            if text:
                yield from _parse_csv(io.BytesIO(text.encode() + b"\n"), schema)
    finally:
        cursor.close()


def _parse_csv(source: Any, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    yield from pa_csv.open_csv(
        source,
        read_options=pa_csv.ReadOptions(column_names=schema.names, block_size=1 << 22),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema,
            true_values=["t", "1"],
            false_values=["f", "0"],
            # Only the empty string is null: an ID such as "NULL" or "NaN" is an ID.
            null_values=[""],
            strings_can_be_null=True,
        ),
    )


class _CopyReader:
    """A file-like view of a psycopg COPY ... TO STDOUT, for Arrow's CSV reader."""

    def __init__(self, copy: Any) -> None:
        self.copy, self.pending, self.closed = copy, bytearray(), False

    def peek(self) -> bytes:
        """Whatever the first read would return (at least one block, if there is one)."""
        if not self.pending:
            self.pending += self.copy.read() or b""
        return bytes(self.pending)

    def read(self, size: int = -1) -> bytes:
        # Appending to a bytearray and cutting from its front keeps this linear in the data.
        while size < 0 or len(self.pending) < size:
            block = self.copy.read()
            if not block:
                break
            self.pending += block
        if size < 0 or size > len(self.pending):
            size = len(self.pending)
        out = bytes(self.pending[:size])
        del self.pending[:size]
        return out

    def close(self) -> None:
        self.closed = True


def _jurisdiction_codes(column: pa.Array) -> CodeArray:
    found = pc.index_in(column, value_set=JURISDICTION_VALUES)
    codes: CodeArray = (pc.fill_null(found, -1).to_numpy(zero_copy_only=False) + 1).astype(np.uint8)
    return codes


def _load_subjects(index: ConsentIndex) -> None:
    numeric_ids: list[IntArray] = []
    numeric_jur: list[CodeArray] = []
    numeric_erased: list[npt.NDArray[np.bool_]] = []
    strings: list[tuple[str, int, bool]] = []
    schema = pa.schema(
        [("user_id", pa.string()), ("jurisdiction", pa.string()), ("erased", pa.bool_())]
    )
    for batch in _table_batches("subjects", schema):
        ids = batch.column(0)
        jur = _jurisdiction_codes(batch.column(1))
        erased = batch.column(2).to_numpy(zero_copy_only=False).astype(np.bool_)
        numeric = numeric_mask(ids)
        numeric_ids.append(pc.cast(pc.filter(ids, pa.array(numeric)), pa.int64()).to_numpy())
        numeric_jur.append(jur[numeric])
        numeric_erased.append(erased[numeric])
        others = np.flatnonzero(~numeric).tolist()
        if others:
            texts = ids.take(pa.array(others)).to_pylist()
            strings.extend(
                (t, int(jur[i]), bool(erased[i])) for t, i in zip(texts, others, strict=True)
            )
    keys = np.concatenate(numeric_ids) if numeric_ids else np.empty(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    index.keys = keys[order]
    index.key_rows = np.arange(len(keys), dtype=np.int32)
    index._index_keys()
    n = len(keys) + len(strings)
    index.n_rows = n
    index._grow(n)
    if len(keys):
        index.jur[: len(keys)] = np.concatenate(numeric_jur)[order]
        index.erased[: len(keys)] = np.concatenate(numeric_erased)[order]
    for i, (user_id, jur_code, erased_flag) in enumerate(strings):
        row = len(keys) + i
        index.extra[user_id] = row
        index.jur[row] = jur_code
        index.erased[row] = erased_flag


def _policy_histories() -> dict[str, list[tuple[int, Policy]]]:
    histories: dict[str, list[tuple[int, Policy]]] = {}
    rows = db.session.execute(
        sa.select(Event.seq, Event.purpose, Event.data)
        .where(Event.kind.in_(("purpose_created", "policy_changed")), Event.user_id.is_(None))
        .order_by(Event.seq)
    )
    for r in rows:
        data = r.data or {}
        histories.setdefault(r.purpose, []).append(
            (int(r.seq), Policy(dict(data["defaults"]), data["unknown_subject"]))
        )
    return histories


def _load_choices(index: ConsentIndex) -> None:
    schema = pa.schema([("user_id", pa.string()), ("purpose", pa.string()), ("state", pa.string())])
    for batch in _table_batches("choices", schema):
        for key, p in index.purposes.items():
            mine = pc.equal(batch.column(1), key)
            ids = pc.filter(batch.column(0), mine)
            if not len(ids):
                continue
            granted = pc.equal(pc.filter(batch.column(2), mine), "granted").to_numpy(
                zero_copy_only=False
            )
            p.choice[index.rows_for(ids)] = np.where(granted, 1, 2).astype(np.int8)


def _load_overrides(index: ConsentIndex) -> None:
    rows = db.session.execute(
        sa.select(
            Override.id,
            Override.user_id,
            Override.purpose,
            Override.state,
            Override.placed_seq,
            Override.expires_at,
            Override.placed_by,
            Override.ticket,
        ).where(Override.lifted_seq.is_(None))
    )
    for o in rows:
        row = index.row_of(o.user_id)
        index.purposes[o.purpose].overrides.setdefault(row, []).append(
            OverrideFacts(o.id, o.state, o.placed_seq, o.expires_at, None, o.placed_by, o.ticket)
        )


def events_after(seq: int, limit: int = 10_000) -> list[Any]:
    """The next events after seq, oldest first (committed ones only, in commit order)."""
    rows = db.session.execute(
        sa.select(*EVENT_FIELDS).where(Event.seq > seq).order_by(Event.seq).limit(limit)
    ).all()
    db.session.rollback()
    return list(rows)
