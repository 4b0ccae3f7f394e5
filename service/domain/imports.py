"""Importing an existing user base: the input's columns and row rules, and the rows and events a
batch of new subjects becomes, exactly as the API would write them (pure: Arrow in, Arrow out).

An input row is `user_id`, `jurisdiction` and, per purpose, an optional `choice:<purpose>` of
`granted` or `denied` (empty: no choice). A new subject gets what registering it through the
API writes (one subject_registered event per purpose, or one for no purpose while there are
none) and then, per choice, what setting it writes (a choice_set event, source `import`). Their
`before` and `after` states come from the pure resolution rule, evaluated once per jurisdiction
and purpose rather than once per row: for a subject the ledger has never seen, nothing else
(overrides, earlier choices, erasure) can bear on them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from service.domain import events as ev
from service.domain import validation
from service.domain.errors import ValidationFailed
from service.domain.policy import (
    COUNTRY_CODES,
    Policy,
    RestrictionFacts,
    SubjectFacts,
    resolve,
)

USER_ID = "user_id"
JURISDICTION = "jurisdiction"
CHOICE_PREFIX = "choice:"
# The `source` of every imported choice.
SOURCE = "import"
# What a choice cell may hold, exactly; an empty cell is no choice.
NO_CHOICE, GRANTED, DENIED = 0, 1, 2
CHOICE_CELLS = ("granted", "denied")
# Jurisdictions are carried as small codes: 0 is none, then every country code in order.
JURISDICTIONS: tuple[str | None, ...] = (None, *sorted(COUNTRY_CODES))
_COUNTRY_VALUES = pa.array(JURISDICTIONS[1:], pa.string())
_JURISDICTION_TEXT = pa.array(JURISDICTIONS, pa.string())
_CHOICE_VALUES = pa.array(CHOICE_CELLS, pa.string())
# Effective states as small codes (0: none, for an event about no purpose).
_STATE_TEXT = pa.array([None, "granted", "denied"], pa.string())
_STATE_CODE = {"granted": 1, "denied": 2}
_BLANKS = " \t\r\n"

SUBJECT_COLUMNS = (
    "user_id", "jurisdiction", "erased", "registered_seq", "updated_seq", "erased_seq",
    "created_at", "updated_at",
)  # fmt: skip
CHOICE_COLUMNS = (
    "user_id", "purpose", "state", "source", "version", "updated_seq", "updated_at",
    "notice_version",
)  # fmt: skip
EVENT_COLUMNS = (
    "seq", "at", "kind", "user_id", "purpose", "before", "after", "actor", "role", "reason",
    "ticket", "request_id", "data",
)  # fmt: skip

Codes = npt.NDArray[np.int8]


class RowError(ValidationFailed):
    """A malformed input row: its number (1 is the first row after a CSV's header) and why."""

    def __init__(self, row: int, column: str, why: str) -> None:
        super().__init__(f"row {row}: {why}", errors={column: [why]})
        self.row = row
        self.column = column


@dataclass(frozen=True, slots=True)
class Columns:
    """The input's columns: which purpose each choice column is about."""

    names: tuple[str, ...]
    choices: Mapping[str, str]  # purpose -> column name

    @classmethod
    def of(cls, names: Sequence[str], purposes: Sequence[str]) -> Columns:
        """Check the header: user_id and jurisdiction, then only choice:<purpose> columns for
        purposes that exist, each once; a 422 naming every wrong column otherwise."""
        problems: dict[str, list[str]] = {}
        for required in (USER_ID, JURISDICTION):
            if required not in names:
                problems[required] = ["Missing: every import has this column."]
        choices: dict[str, str] = {}
        for name in names:
            if names.count(name) > 1:
                problems[name] = ["Given more than once."]
            elif name.startswith(CHOICE_PREFIX):
                purpose = name.removeprefix(CHOICE_PREFIX)
                if purpose not in purposes:
                    problems[name] = [f"No purpose {purpose!r} exists; create it first."]
                choices[purpose] = name
            elif name not in (USER_ID, JURISDICTION):
                problems[name] = ["Not an import column: user_id, jurisdiction, choice:<purpose>."]
        if problems:
            raise ValidationFailed(
                "The input's columns must be user_id, jurisdiction and choice:<purpose> for "
                "existing purposes.",
                errors=problems,
            )
        return cls(tuple(names), dict(sorted(choices.items())))


@dataclass(frozen=True, slots=True)
class Rows:
    """Checked input rows: their IDs, jurisdiction codes and choices per purpose."""

    first_row: int  # the number of the first row (1 is the input's first)
    user_ids: pa.StringArray
    jurisdictions: npt.NDArray[np.uint8]  # positions in JURISDICTIONS
    choices: Mapping[str, Codes]  # purpose -> NO_CHOICE, GRANTED or DENIED per row

    def __len__(self) -> int:
        return len(self.user_ids)

    def take(self, keep: npt.NDArray[np.bool_]) -> Rows:
        """The rows where keep is true (first_row then no longer numbers them)."""
        return Rows(
            self.first_row,
            self.user_ids.filter(pa.array(keep)),
            self.jurisdictions[keep],
            {p: c[keep] for p, c in self.choices.items()},
        )

    def first_occurrences(self) -> npt.NDArray[np.bool_]:
        """True for each row whose ID no earlier row of these has: the first row of an ID wins,
        as it would if the later ones came in a later batch."""
        order = pc.sort_indices(self.user_ids).to_numpy()  # stable: equal IDs keep their order
        ids = self.user_ids.take(pa.array(order))
        first = np.ones(len(order), dtype=np.bool_)
        if len(order) > 1:
            first[1:] = ~pc.equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
        keep = np.empty(len(order), dtype=np.bool_)
        keep[order] = first
        return keep


def check_rows(batch: pa.Table, first_row: int, columns: Columns) -> Rows:
    """Check one batch of input rows (every column text); the first bad row is a RowError
    naming it, with the API's own message for the value."""
    user_ids = _text(batch.column(USER_ID))
    found: list[tuple[int, str, str]] = []  # (position, column, why) of each column's first
    bad = _first(pc.invert(pc.fill_null(pc.match_substring_regex(user_ids, _USER_ID_RE2), False)))
    if bad is not None:
        found.append((bad, USER_ID, _user_id_problem(user_ids[bad].as_py())))
    jurisdictions, bad = _jurisdiction_codes(_text(batch.column(JURISDICTION)))
    if bad is not None:
        value = batch.column(JURISDICTION)[bad].as_py()
        found.append((bad, JURISDICTION, _jurisdiction_problem(value)))
    choices: dict[str, Codes] = {}
    for purpose, name in columns.choices.items():
        column = _text(batch.column(name))
        choices[purpose], bad = _choice_codes(column)
        if bad is not None:
            why = f"{name} must be granted, denied or empty, not {column[bad].as_py()!r}."
            found.append((bad, name, why))
    if found:
        position, column_name, why = min(found)
        raise RowError(first_row + position, column_name, why)
    return Rows(first_row, user_ids, jurisdictions, choices)


# The user ID rule as RE2 (Arrow's regex engine) spells it: the same pattern, anchored the same.
_USER_ID_RE2 = validation.USER_ID_PATTERN


def _text(column: pa.ChunkedArray | pa.Array) -> pa.StringArray:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array if array.type == pa.string() else pc.cast(array, pa.string())


def _first(mask: pa.Array) -> int | None:
    hits = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    return int(hits[0]) if len(hits) else None


def _empty(column: pa.StringArray) -> pa.BooleanArray:
    return pc.fill_null(pc.equal(column, ""), True)


def _user_id_problem(value: str | None) -> str:
    if value is None:
        return "user_id is empty."
    try:
        validation.user_id(value)
    except ValidationFailed as problem:
        return problem.detail
    return f"{value[:80]!r} is not a valid user ID."  # pragma: no cover - RE2 and re agree


def _jurisdiction_codes(column: pa.StringArray) -> tuple[npt.NDArray[np.uint8], int | None]:
    """Codes by the API's rule (blanks around forgiven, any letter case); none for empty."""
    empty = _empty(column)
    code = pc.ascii_upper(pc.utf8_trim(column, _BLANKS))
    found = pc.index_in(code, value_set=_COUNTRY_VALUES)
    unknown = pc.and_(pc.invert(empty), pc.is_null(found))
    codes = (pc.fill_null(found, -1).to_numpy(zero_copy_only=False) + 1).astype(np.uint8)
    return codes, _first(unknown)


def _jurisdiction_problem(value: str | None) -> str:
    try:
        validation.jurisdiction(value)
    except ValidationFailed as problem:
        return problem.detail
    return f"{value!r} is not an ISO 3166-1 alpha-2 country code."  # pragma: no cover


def _choice_codes(column: pa.StringArray) -> tuple[Codes, int | None]:
    empty = _empty(column)
    found = pc.index_in(column, value_set=_CHOICE_VALUES)
    wrong = pc.and_(pc.invert(empty), pc.is_null(found))
    codes = (pc.fill_null(found, -1).to_numpy(zero_copy_only=False) + 1).astype(np.int8)
    return codes, _first(wrong)


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    """What a batch's events depend on, read under the head lock: the head and its time, every
    purpose's policy (in key order, the order registration writes its events in) and every
    restriction placed."""

    head: int
    at: datetime
    policies: Mapping[str, Policy]
    restrictions: Sequence[RestrictionFacts]


@dataclass(frozen=True, slots=True)
class StateTable:
    """For each purpose, the effective states a new subject's events carry, by jurisdiction code:
    before registering, once registered, and after each choice (codes of _STATE_TEXT)."""

    unknown: Codes  # per purpose
    registered: npt.NDArray[np.int8]  # [purpose, jurisdiction]
    chosen: npt.NDArray[np.int8]  # [purpose, jurisdiction, choice code]

    @classmethod
    def of(cls, facts: LedgerFacts) -> StateTable:
        """Resolve every case once. Every restriction was placed (and any lift recorded) at or
        before the locked head, so which are active is the same at every seq of the batch; a
        never-seen subject has no overrides, so the time matters not either."""
        seq = facts.head + 1
        keys = list(facts.policies)
        unknown = np.zeros(len(keys), dtype=np.int8)
        registered = np.zeros((len(keys), len(JURISDICTIONS)), dtype=np.int8)
        chosen = np.zeros((len(keys), len(JURISDICTIONS), 3), dtype=np.int8)
        for p, key in enumerate(keys):

            def state(subject: SubjectFacts | None, choice: str | None, key: str = key) -> int:
                res = resolve(
                    subject,
                    choice,
                    (),
                    facts.policies[key],
                    seq,
                    facts.at,
                    purpose=key,
                    restrictions=facts.restrictions,
                )
                return _STATE_CODE[res.state]

            unknown[p] = state(None, None)
            for j, jurisdiction in enumerate(JURISDICTIONS):
                subject = SubjectFacts(jurisdiction, False)
                registered[p, j] = state(subject, None)
                chosen[p, j, GRANTED] = state(subject, "granted")
                chosen[p, j, DENIED] = state(subject, "denied")
        return cls(unknown, registered, chosen)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The rows one batch writes to subjects, choices and events, in seq order; `head` is the
    ledger head after them."""

    subjects: pa.Table
    choices: pa.Table
    events: pa.Table
    head: int

    def tables(self) -> Iterator[tuple[str, pa.Table]]:
        """The tables to write, named, in the order their foreign keys need (empty ones left
        out)."""
        for name, table in (
            ("subjects", self.subjects),
            ("choices", self.choices),
            ("events", self.events),
        ):
            if table.num_rows:
                yield name, table


# Payloads are made by the event types themselves, so imported rows hold exactly what the API
# writes: one JSON text per jurisdiction, and one per choice state, taken per row by Arrow.
REGISTERED_DATA = [
    json.dumps(ev.SubjectRegistered(user_id="-", jurisdiction=j).to_data()) for j in JURISDICTIONS
]
CHOICE_DATA = [
    json.dumps(
        ev.ChoiceSet(
            user_id="-", purpose="-", state=s, previous=None, source=SOURCE, version=1
        ).to_data()
    )
    for s in CHOICE_CELLS
]
_DATA_TEXT = pa.array([*REGISTERED_DATA, *CHOICE_DATA], pa.string())
_KIND_TEXT = pa.array([ev.Kind.SUBJECT_REGISTERED.value, ev.Kind.CHOICE_SET.value], pa.string())


def plan(rows: Rows, facts: LedgerFacts, actor: tuple[str, str], at_text: str) -> BatchPlan:
    """The subjects, choices and events that registering `rows` (all new to the ledger) and
    setting their choices write, numbered from the head on. `at_text` is the batch's time as
    the database stores it; `actor` is (name, role)."""
    n = len(rows)
    purposes = list(facts.policies)
    table = StateTable.of(facts)
    # One registration event per purpose, or one for no purpose; then one per choice made.
    registrations = max(len(purposes), 1)
    chosen = np.zeros((n, len(purposes)), dtype=np.int8)
    for p, key in enumerate(purposes):
        if key in rows.choices:
            chosen[:, p] = rows.choices[key]
    made = chosen != NO_CHOICE
    per_subject = registrations + made.sum(axis=1)
    first_seq = facts.head + 1 + np.cumsum(per_subject) - per_subject
    jur = rows.jurisdictions.astype(np.intp)

    # Every subject's possible events as slots: its registrations, then a choice per purpose.
    slots = registrations + len(purposes)
    present = np.ones((n, slots), dtype=np.bool_)
    present[:, registrations:] = made
    kind = np.zeros((n, slots), dtype=np.int8)
    kind[:, registrations:] = 1
    purpose = np.full((n, slots), len(purposes), dtype=np.int32)  # len(purposes): none
    before = np.zeros((n, slots), dtype=np.int8)
    after = np.zeros((n, slots), dtype=np.int8)
    data = np.zeros((n, slots), dtype=np.int32)
    data[:, :registrations] = jur[:, None]
    for p in range(len(purposes)):
        c = registrations + p
        purpose[:, p] = purpose[:, c] = p
        before[:, p] = table.unknown[p]
        after[:, p] = before[:, c] = table.registered[p, jur]
        after[:, c] = table.chosen[p, jur, chosen[:, p]]
        data[:, c] = len(JURISDICTIONS) - 1 + np.maximum(chosen[:, p], 1).astype(np.int32)

    flat = present.ravel()
    count = int(flat.sum())
    seqs = facts.head + 1 + np.arange(count, dtype=np.int64)
    owner = np.repeat(np.arange(n), slots)[flat]
    purpose_text = pa.array([*purposes, None], pa.string())
    events = pa.table(
        [
            pa.array(seqs),
            _repeat(at_text, count),
            pc.take(_KIND_TEXT, pa.array(kind.ravel()[flat])),
            rows.user_ids.take(pa.array(owner)),
            pc.take(purpose_text, pa.array(purpose.ravel()[flat])),
            pc.take(_STATE_TEXT, pa.array(before.ravel()[flat])),
            pc.take(_STATE_TEXT, pa.array(after.ravel()[flat])),
            _repeat(actor[0], count),
            _repeat(actor[1], count),
            pa.nulls(count, pa.string()),
            pa.nulls(count, pa.string()),
            pa.nulls(count, pa.string()),
            pc.take(_DATA_TEXT, pa.array(data.ravel()[flat])),
        ],
        names=EVENT_COLUMNS,
    )
    subjects = pa.table(
        [
            rows.user_ids,
            pc.take(_JURISDICTION_TEXT, pa.array(rows.jurisdictions)),
            pa.array(np.zeros(n, dtype=np.bool_)),
            pa.array(first_seq),
            pa.array(first_seq),
            pa.nulls(n, pa.int64()),
            _repeat(at_text, n),
            _repeat(at_text, n),
        ],
        names=SUBJECT_COLUMNS,
    )
    # A choice's seq: after the subject's registrations and its choices for earlier purposes.
    choice_seq = first_seq[:, None] + registrations + np.cumsum(made, axis=1) - 1
    choices = _choices(rows, purposes, chosen, made, choice_seq, at_text)
    return BatchPlan(subjects, choices, events, int(seqs[-1]) if count else facts.head)


def _choices(
    rows: Rows,
    purposes: list[str],
    chosen: Codes,
    made: npt.NDArray[np.bool_],
    choice_seq: npt.NDArray[np.int64],
    at_text: str,
) -> pa.Table:
    """The choices rows, subject by subject and purpose by purpose (the events' order)."""
    flat = made.ravel()
    count = int(flat.sum())
    owner = np.repeat(np.arange(len(rows)), len(purposes))[flat]
    which = np.tile(np.arange(len(purposes)), len(rows))[flat]
    return pa.table(
        [
            rows.user_ids.take(pa.array(owner)),
            pc.take(pa.array(purposes, pa.string()), pa.array(which)),
            pc.take(_STATE_TEXT, pa.array(chosen.ravel()[flat])),
            _repeat(SOURCE, count),
            pa.array(np.ones(count, dtype=np.int32)),
            pa.array(choice_seq.ravel()[flat].astype(np.int64)),
            _repeat(at_text, count),
            pa.nulls(count, pa.string()),
        ],
        names=CHOICE_COLUMNS,
    )


def _repeat(text: str, count: int) -> pa.Array:
    return pa.repeat(pa.scalar(text, pa.string()), count)
