"""The in-memory read index: every subject's effective consent per purpose, following the head.

Each worker holds one. Per row (see directory.py for ID -> row): a jurisdiction code and an
erased flag; per purpose and row: the user's choice and one effective code (codes.py), and once
any choice for the purpose named the notice it was made under, that notice version (a small int
into the purpose's list of versions). Overrides, being few, are kept per row as the same facts
the pure resolution rule takes.

A purpose's legal bases are not in the stored codes: `not_offered` is laid over them at answer
time, per jurisdiction code, from the policy as of the answer's seq (so a change of legal
bases moves no stored code, and every as_of sees its own). A purpose without legal bases pays
one test for it.

The index is built from one consistent read of the state tables (build.py) and then follows the
ledger by applying the typed events after its seq (follow.py). An answer as of the head is a
vectorised gather. An answer as of an earlier seq S (not before the index was built) is the same
gather, with the policy as of S for subjects on their default, and with the subjects that have
events after S answered from the database instead: their state as of S is not in memory,
everyone else's is unchanged.

Restrictions are not written into the rows: each purpose keeps the history of the ones about it
(placed and lifted seqs), and an answer as of seq S lays the restrictions active at S over the
gathered codes, by the rows' jurisdiction codes and, for a windowed one, the content times
given. Placing or lifting one therefore recomputes no stored code, and answers with no
restriction in force take no extra step at all. For the set in force at the head, a purpose
also keeps its codes with those restrictions folded in (Folded: the code and the row's
restriction classes in one byte), made once when the set changes and kept current row by row,
so that an answer under them is the same single gather as one without: only a windowed one's
time comparison is added. Answers as of another set take the general overlay.
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from service.domain import events as ev
from service.domain.clock import EPOCH, to_micros
from service.domain.policy import (
    COUNTRY_CODES,
    DEFAULT_LEGAL_BASIS,
    OverrideFacts,
    Policy,
    RestrictionFacts,
    SubjectFacts,
    legal_basis_for,
    resolve,
    restriction_for,
    selects,
)
from service.readindex import codes as cd
from service.readindex.codes import CodeArray
from service.readindex.directory import BAD_ID, NO_ROW, Directory, IntArray, is_numeric

JURISDICTIONS: tuple[str | None, ...] = (None, *sorted(COUNTRY_CODES))
JUR_CODE = {j: i for i, j in enumerate(JURISDICTIONS)}
CHOICE_CODE = {None: 0, "granted": 1, "denied": 2}
CHOICE_STATE = (None, "granted", "denied")
COMPACT_AFTER = 50_000
COUNT_SLICE = 1 << 20
# Content times travel as microseconds since the epoch (UTC); this one means "no time given".
NO_TIME = np.iinfo(np.int64).min
RESTRICTED = cd.make("restriction", False)
WINDOW_BITS = 7  # windowed restrictions told apart by one gather (see apply_restrictions)
CLASS_SHIFT = 4  # folded codes (see Folded): the code below, restriction classes from here up
CODE_BITS = np.uint8((1 << CLASS_SHIFT) - 1)
FOLDED_WINDOWS = 3
ERASED = cd.make("erased", False)
NOT_OFFERED = cd.make("not_offered", False)
CHOICE_CODES = frozenset({cd.make("choice", False), cd.make("choice", True)})

Times = npt.NDArray[np.int64]


class Stale(Exception):
    """The index cannot answer this as_of from memory; the database must."""


@dataclass(frozen=True, slots=True)
class Earlier:
    """For an as_of before the index was built: the users with an event after it up to the
    build (read from the database), whose answers the database must give. Everyone else's
    state has not changed since that seq, so the index's rows answer for them."""

    seq: int
    user_ids: frozenset[str]


class UnknownPurpose(Exception):
    """The purpose did not exist as of the seq asked about."""

    def __init__(self, purpose: str, seq: int) -> None:
        super().__init__(purpose, seq)
        self.purpose, self.seq = purpose, seq


@dataclass(slots=True)
class RecordedEvent:
    """A typed event with the place in the ledger the index needs: its seq, time, actor and
    ticket (an override's facts name who placed it under which ticket)."""

    seq: int
    at: datetime
    event: ev.LedgerEvent
    actor: str = ""
    ticket: str | None = None


@dataclass(frozen=True, slots=True)
class LegalTable:
    """A policy's legal basis for each jurisdiction code, and where it is not_offered."""

    bases: tuple[str, ...]
    not_offered: npt.NDArray[np.bool_] | None  # None: offered everywhere

    @classmethod
    def of(cls, policy: Policy) -> LegalTable:
        """The table of a policy, by the resolution rule's own selector order."""
        bases = tuple(legal_basis_for(policy, j) for j in JURISDICTIONS)
        mask = np.array([b == "not_offered" for b in bases], dtype=np.bool_)
        return cls(bases, mask if mask.any() else None)


class Answer(NamedTuple):
    """One ID's answer as of a seq: its code, the purpose's legal basis in the subject's
    jurisdiction, when the basis is the user's choice the notice version it was made under, and
    when it is a restriction, that restriction.
    (A tuple: the single lookup makes one per request.)"""

    code: cd.Code
    legal_basis: str = DEFAULT_LEGAL_BASIS
    notice_version: str | None = None
    restriction: RestrictionFacts | None = None


@dataclass
class Folded:
    """A purpose's codes with the restrictions of one active set folded in, so an answer under
    them is one gather: per row, bits 0-3 hold the stored code with not_offered laid over it
    (under the purpose's current policy) and bits 4-7 the row's restriction classes, bit 4 for
    the restrictions that deny whatever the time and one bit each for up to three windowed
    ones. Kept current row by row as events move codes or jurisdictions; dropped when the
    active set, the policy or the row capacity changes."""

    codes: CodeArray
    ids: tuple[int, ...]  # the active restrictions it folds, in the purpose's order
    policy: Policy
    classes: CodeArray  # per jurisdiction code: its class bits (not yet shifted)
    windows: tuple[RestrictionFacts, ...]  # the windowed ones, bit 1 (of the classes) first
    not_offered: npt.NDArray[np.bool_] | None


@dataclass
class PurposeIndex:
    """One purpose's policy history and per-row state."""

    key: str
    created_seq: int
    history: list[tuple[int, Policy]]
    choice: npt.NDArray[np.int8]
    eff: CodeArray
    overrides: dict[int, list[OverrideFacts]] = field(default_factory=dict)
    # Every restriction ever placed on this purpose, lifted ones too (as of any seq).
    restrictions: list[RestrictionFacts] = field(default_factory=list)
    # Per row: 1 + the position of its choice's notice version in notice_versions (0: none);
    # allocated only once some choice for the purpose named a notice version.
    notice: npt.NDArray[np.unsignedinteger[Any]] | None = None
    notice_versions: list[str] = field(default_factory=list)
    notice_codes: dict[str, int] = field(default_factory=dict)
    # id(policy) -> (policy, its legal table): a policy of the history lives as long as this.
    legal: dict[int, tuple[Policy, LegalTable]] = field(default_factory=dict)
    # The restrictions in force folded into the codes (see Folded); None until first asked for.
    folded: Folded | None = None

    @property
    def policy(self) -> Policy:
        """The policy at the index's seq."""
        return self.history[-1][1]

    def policy_at(self, seq: int) -> Policy:
        """The policy as of seq (the purpose existed then)."""
        seqs = [s for s, _ in self.history]
        return self.history[bisect.bisect_right(seqs, seq) - 1][1]

    def default_codes(self, policy: Policy) -> CodeArray:
        """The default code of each jurisdiction code under a policy."""
        return cd.default_codes(policy, JURISDICTIONS)

    def legal_at(self, policy: Policy) -> LegalTable | None:
        """The legal table of a policy of this purpose; None when it names no legal bases
        (consent everywhere), which is the one test the common case pays."""
        if not policy.legal_bases:
            return None
        kept = self.legal.get(id(policy))
        if kept is None or kept[0] is not policy:
            kept = (policy, LegalTable.of(policy))
            self.legal[id(policy)] = kept
        return kept[1]

    def _notice_code(self, version: str) -> int:
        code = self.notice_codes.get(version)
        if code is None:
            self.notice_versions.append(version)
            code = self.notice_codes[version] = len(self.notice_versions)
            if self.notice is not None and code > np.iinfo(self.notice.dtype).max:
                self.notice = self.notice.astype(np.uint32)
        return code

    def set_notice(self, row: int, version: str | None) -> None:
        """Record the notice version of a row's choice (None: not said)."""
        if version is None:
            if self.notice is not None:
                self.notice[row] = 0
            return
        if self.notice is None:
            self.notice = np.zeros(len(self.choice), dtype=np.uint16)
        code = self._notice_code(version)
        self.notice[row] = code

    def load_notices(self, rows: IntArray, versions: pa.Array) -> None:
        """set_notice for many rows at once (versions: strings or nulls, aligned to rows)."""
        encoded = pc.dictionary_encode(versions)
        codes = np.array([0, *(self._notice_code(v) for v in encoded.dictionary.to_pylist())])
        indices = pc.fill_null(pc.add(encoded.indices, 1), 0).to_numpy(zero_copy_only=False)
        if self.notice is None:
            self.notice = np.zeros(len(self.choice), dtype=np.uint16)
        if codes.max() > np.iinfo(self.notice.dtype).max:
            self.notice = self.notice.astype(np.uint32)
        self.notice[rows] = codes[indices]

    def notice_of(self, row: int) -> str | None:
        """The notice version of a row's choice, if it named one."""
        if self.notice is None or row < 0:
            return None
        code = self.notice[row]
        return self.notice_versions[code - 1] if code else None


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
        self.ids = Directory()
        self.n_rows = 0
        # One slot from the start: the spare last slot grow() keeps (see there).
        self.jur = np.zeros(1, dtype=np.uint8)
        self.erased = np.zeros(1, dtype=np.bool_)
        self.purposes: dict[str, PurposeIndex] = {}
        self.changed: dict[str, int] = {}  # user_id -> seq of its last event since the build
        self.earlier: dict[int, Earlier | None] = {}  # for as_of seqs before the build

    # ------------------------------------------------------------------ rows

    def grow(self, rows: int) -> None:
        """Make room for `rows` rows in every per-row array, and one slot more: the last slot
        is never a row, so its jurisdiction code stays 0 and `self.jur[NO_ROW]` reads the
        code of no jurisdiction, which is what a never-seen ID has (see _restrict)."""
        if rows < len(self.jur):
            return
        capacity = max(rows + 1, int(len(self.jur) * 1.25) + 1024)
        self.jur = _resized(self.jur, capacity)
        self.erased = _resized(self.erased, capacity)
        for p in self.purposes.values():
            p.choice = _resized(p.choice, capacity)
            p.eff = _resized(p.eff, capacity)
            p.folded = None
            if p.notice is not None:
                p.notice = _resized(p.notice, capacity)

    def add_purpose_arrays(
        self, key: str, created_seq: int, history: list[tuple[int, Policy]]
    ) -> PurposeIndex:
        """Register a purpose with empty per-row arrays (its codes still to be computed)."""
        capacity = len(self.jur)
        p = PurposeIndex(
            key,
            created_seq,
            history,
            np.zeros(capacity, dtype=np.int8),
            np.zeros(capacity, dtype=np.uint8),
        )
        self.purposes[key] = p
        return p

    def _new_row(self, user_id: str) -> int:
        row = self.n_rows
        self.n_rows += 1
        self.grow(self.n_rows)
        self.ids.add(user_id, row)
        self.jur[row] = 0
        self.erased[row] = False
        for p in self.purposes.values():
            p.choice[row] = 0
            if p.notice is not None:
                p.notice[row] = 0
        return row

    # ------------------------------------------------------------------ answers

    def _purpose_at(self, purpose: str, seq: int, earlier: Earlier | None = None) -> PurposeIndex:
        before_build = earlier is not None and earlier.seq == seq
        if seq > self.seq or (seq < self.built_seq and not before_build):
            raise Stale(seq)
        p = self.purposes.get(purpose)
        if p is None or p.created_seq > seq:
            raise UnknownPurpose(purpose, seq)
        return p

    def _changed_after(self, seq: int, earlier: Earlier | None) -> list[str]:
        """Users whose state as of seq the index does not hold: an event after seq."""
        changed = [u for u, s in self.changed.items() if s > seq] if seq < self.seq else []
        if earlier is not None and earlier.seq == seq:
            changed.extend(earlier.user_ids)
        return changed

    def _codes(
        self,
        p: PurposeIndex,
        seq: int,
        rows: IntArray,
        times: Times | None = None,
        exclude: int | None = None,
    ) -> CodeArray:
        policy = p.policy_at(seq)
        active = (
            [r for r in p.restrictions if r.active(seq) and r.id != exclude]
            if p.restrictions
            else []
        )
        if active and exclude is None and policy is p.policy:
            folded = self._folded(p, active)
            if folded is not None:
                return self._folded_codes(p, seq, folded, rows, times)
        out = self._stored_codes(p, policy, rows)
        self._not_offered(p, policy, rows, out)
        if active:
            # NO_ROW reads the spare last slot (no jurisdiction); BAD_ID reads some row, but a
            # malformed ID's code is INVALID, which no restriction changes.
            apply_restrictions(out, active, np.take(self.jur, rows), times)
        return out

    def _stored_codes(self, p: PurposeIndex, policy: Policy, rows: IntArray) -> CodeArray:
        """The stored codes of rows (a plain gather; the few unknown and malformed IDs fixed up
        after it), with the policy as of the answer for subjects on their default."""
        out: CodeArray = np.take(p.eff, rows, mode="clip")
        outside = np.flatnonzero(rows < 0)
        if len(outside):
            out[outside] = np.where(
                rows[outside] == BAD_ID, cd.INVALID, cd.unknown_code(policy)
            ).astype(np.uint8)
        if policy is not p.policy:
            # Subjects untouched since seq answer with the policy of then if on their default.
            default = (rows >= 0) & cd.on_default(out)
            out[default] = p.default_codes(policy)[self.jur[rows[default]]]
        return out

    def _folded(self, p: PurposeIndex, active: list[RestrictionFacts]) -> Folded | None:
        """The purpose's codes with these active restrictions folded in, made when first asked
        for (one pass over the rows); None unless they are the ones in force at the head (an
        answer as of another set takes the general path rather than refold back and forth), or
        when they do not fit the class bits."""
        ids = tuple(r.id for r in active)
        f = p.folded
        if f is not None and f.ids == ids and f.policy is p.policy and len(f.codes) == len(p.eff):
            return f
        if ids != tuple(r.id for r in p.restrictions if r.active(self.seq)):
            return None
        windows = tuple(r for r in active if r.window is not None)
        if len(windows) > FOLDED_WINDOWS:
            return None
        classes = np.zeros(len(JURISDICTIONS), dtype=np.uint8)
        for r in active:
            if r.window is None:
                classes[covered_codes(r.jurisdictions)] |= 1
        for bit, r in enumerate(windows, start=1):
            classes[covered_codes(r.jurisdictions)] |= 1 << bit
        table = p.legal_at(p.policy)
        not_offered = None if table is None else table.not_offered
        codes = p.eff.copy()
        if not_offered is not None:
            codes[not_offered[self.jur] & (codes != ERASED)] = NOT_OFFERED
        codes |= classes[self.jur] << CLASS_SHIFT
        p.folded = Folded(codes, ids, p.policy, classes, windows, not_offered)
        return p.folded

    def _fold_row(self, p: PurposeIndex, row: int) -> None:
        """Keep a row of the purpose's folded codes current after its code or jurisdiction
        moved."""
        f = p.folded
        if f is None:
            return
        code, jur = int(p.eff[row]), int(self.jur[row])
        if f.not_offered is not None and f.not_offered[jur] and code != ERASED:
            code = NOT_OFFERED
        f.codes[row] = code | (int(f.classes[jur]) << CLASS_SHIFT)

    def _folded_codes(
        self, p: PurposeIndex, seq: int, f: Folded, rows: IntArray, times: Times | None
    ) -> CodeArray:
        """_codes by one gather of the folded codes; the few unknown and malformed IDs by the
        general path."""
        got = np.take(f.codes, rows, mode="clip")
        out: CodeArray = got & CODE_BITS
        classes = got >> CLASS_SHIFT
        hit = classes & 1
        for bit, r in enumerate(f.windows, start=1):
            covered = (classes >> bit) & 1
            if times is None:  # no time given: fail closed
                hit |= covered
            else:
                assert r.window is not None
                hit |= covered & in_window(times, r.window.start, r.window.end).view(np.uint8)
        hit &= out != ERASED
        # out = RESTRICTED where hit, by uint8 arithmetic: far cheaper than a masked store.
        delta = np.uint8(RESTRICTED) - out
        delta *= hit
        out += delta
        outside = np.flatnonzero(rows < 0)
        if len(outside):
            out[outside] = self._codes_unfolded(p, seq, rows[outside], times, outside)
        return out

    def _codes_unfolded(
        self, p: PurposeIndex, seq: int, rows: IntArray, times: Times | None, at: IntArray
    ) -> CodeArray:
        """The general path for some positions of a folded answer (their times picked)."""
        policy = p.policy_at(seq)
        out = self._stored_codes(p, policy, rows)
        self._not_offered(p, policy, rows, out)
        active = [r for r in p.restrictions if r.active(seq)]
        picked = None if times is None else times[at]
        apply_restrictions(out, active, np.take(self.jur, rows), picked)
        return out

    def _not_offered(self, p: PurposeIndex, policy: Policy, rows: IntArray, out: CodeArray) -> None:
        """Lay not_offered over the codes where the policy (as of the answer) does not offer the
        purpose in the subject's jurisdiction; never-seen IDs are judged under `*` alone, as
        subjects without one. Erased subjects stay erased and malformed IDs invalid."""
        table = p.legal_at(policy)
        if table is None or table.not_offered is None:
            return
        known = rows >= 0
        jur = np.zeros(len(rows), dtype=np.uint8)
        jur[known] = self.jur[rows[known]]
        hit = table.not_offered[jur] & (out != cd.INVALID) & (out != ERASED)
        out[hit] = NOT_OFFERED

    def number_codes(
        self,
        purpose: str,
        seq: int,
        values: IntArray,
        earlier: Earlier | None = None,
        times: Times | None = None,
    ) -> tuple[CodeArray, list[int]]:
        """codes() for numeric IDs given as integers in [0, 10**18): no text at all."""
        with self.lock:
            p = self._purpose_at(purpose, seq, earlier)
            out = self._codes(p, seq, self.ids.rows_of_numbers(values), times)
            stale: list[int] = []
            changed = [int(u) for u in self._changed_after(seq, earlier) if is_numeric(u)]
            if changed:
                stale = np.flatnonzero(np.isin(values, changed)).tolist()
            return out, stale

    def code_of(
        self,
        purpose: str,
        seq: int,
        user_id: str,
        earlier: Earlier | None = None,
        content_time: datetime | None = None,
    ) -> cd.Code | None:
        """The code of one well-formed ID as of seq, or None if the database must answer."""
        answer = self.answer_of(purpose, seq, user_id, earlier, content_time)
        return None if answer is None else answer.code

    def answer_of(
        self,
        purpose: str,
        seq: int,
        user_id: str,
        earlier: Earlier | None = None,
        content_time: datetime | None = None,
    ) -> Answer | None:
        """The answer for one well-formed ID as of seq, for content of that time if given (code,
        legal basis, notice version, and the restriction that denies it, the earliest placed, if
        one does), or None if the database must answer."""
        with self.lock:
            p = self._purpose_at(purpose, seq, earlier)
            if seq < self.seq and self.changed.get(user_id, 0) > seq:
                return None
            if earlier is not None and user_id in earlier.user_ids:
                return None
            row = self.ids.row_of(user_id)
            policy = p.policy_at(seq)
            if row == NO_ROW:
                code = cd.unknown_code(policy)
            else:
                code = int(p.eff[row])
                if policy is not p.policy and cd.Code(code).on_default:
                    code = int(p.default_codes(policy)[self.jur[row]])
            legal: str = DEFAULT_LEGAL_BASIS
            table = p.legal_at(policy)
            if table is not None:
                code, legal = _not_offered_one(table, 0 if row == NO_ROW else self.jur[row], code)
            if p.restrictions and code != ERASED:
                jurisdiction = None if row == NO_ROW else JURISDICTIONS[self.jur[row]]
                found = restriction_for(p.restrictions, purpose, jurisdiction, seq, content_time)
                if found is not None:
                    return Answer(cd.Code(RESTRICTED), legal, None, found)
            notice = p.notice_of(row) if code in CHOICE_CODES else None
            return Answer(cd.Code(code), legal, notice)

    def codes(
        self,
        purpose: str,
        seq: int,
        ids: pa.Array,
        earlier: Earlier | None = None,
        times: Times | None = None,
    ) -> tuple[CodeArray, list[int]]:
        """Codes for each ID as of seq, and the positions the database must answer instead.

        Raises Stale when seq is outside what memory can answer (after the index's own seq, or
        before the build without `earlier` for it), and UnknownPurpose when the purpose did not
        exist as of seq.
        """
        with self.lock:
            p = self._purpose_at(purpose, seq, earlier)
            rows = self.ids.rows_for(ids)
            out = self._codes(p, seq, rows, times)
            stale: list[int] = []
            changed = self._changed_after(seq, earlier)
            if changed:
                hit = pc.fill_null(pc.is_in(ids, value_set=pa.array(changed, ids.type)), False)
                stale = np.flatnonzero(hit.to_numpy(zero_copy_only=False)).tolist()
            return out, stale

    def snapshot_pages(
        self, purpose: str, seq: int, page: int = 100_000
    ) -> Iterator[tuple[pa.Array, CodeArray, list[int]]]:
        """Subjects in user_id byte order, page by page: (ids, codes, stale positions).

        Codes come straight from rows, no ID parsing.
        """
        with self.lock:
            self._purpose_at(purpose, seq)
            pages = self.ids.in_byte_order(page)
            changed = pa.array([u for u, s in self.changed.items() if s > seq], pa.string())
        for ids, rows in pages:
            with self.lock:
                out = self._codes(self._purpose_at(purpose, seq), seq, rows)
            stale: list[int] = []
            if len(changed):
                hit = pc.is_in(ids, value_set=changed).to_numpy(zero_copy_only=False)
                stale = np.flatnonzero(hit).tolist()
            yield ids, out, stale

    def allowed_in(
        self,
        purpose: str,
        jurisdictions: frozenset[str],
        exclude: int | None,
        skip: Iterable[str] = (),
    ) -> int:
        """How many known subjects of these jurisdictions (selectors) are allowed for purpose
        as of the index's seq, answered without a content time; with `exclude`, as if that
        restriction were not in force; the users in `skip` left out. Slice by slice, so
        readers wait for one slice at most."""
        covered = covered_codes(jurisdictions)
        with self.lock:
            p, seq, n = self.purposes[purpose], self.seq, self.n_rows
            skipped = [r for r in (self.ids.row_of(u) for u in skip) if r != NO_ROW]
        total = 0
        for start in range(0, n, COUNT_SLICE):
            rows = np.arange(start, min(n, start + COUNT_SLICE), dtype=np.int64)
            total += self._allowed_rows(p, seq, rows, covered, exclude)
        if skipped:
            total -= self._allowed_rows(p, seq, np.array(skipped, np.int64), covered, exclude)
        return total

    def _allowed_rows(
        self,
        p: PurposeIndex,
        seq: int,
        rows: IntArray,
        covered: npt.NDArray[np.bool_],
        exclude: int | None,
    ) -> int:
        with self.lock:
            codes = self._codes(p, seq, rows, exclude=exclude)
            inside = covered[self.jur[rows]]
        return int(np.count_nonzero(cd.allowed(codes) & inside))

    # ------------------------------------------------------------------ applying the ledger

    def _recompute(self, row: int, purposes: Iterable[PurposeIndex]) -> None:
        subject = SubjectFacts(JURISDICTIONS[self.jur[row]], bool(self.erased[row]))
        for p in purposes:
            res = resolve(
                subject,
                CHOICE_STATE[p.choice[row]],
                p.overrides.get(row, ()),
                _stored(p.policy),
                self.seq,
                self.at,
            )
            p.eff[row] = cd.encode(res)
            self._fold_row(p, row)

    def recompute_all(self, p: PurposeIndex) -> None:
        """Vectorised: erased, else choice, else default; then rows with overrides one by one."""
        n = self.n_rows
        eff = p.default_codes(p.policy)[self.jur[:n]]
        choice = p.choice[:n]
        has_choice = choice != 0
        eff[has_choice] = cd.choice_codes(choice[has_choice] == 1)
        eff[self.erased[:n]] = cd.make("erased", False)
        p.eff[:n] = eff
        p.folded = None  # refolded when next asked for, under the new policy
        for row in list(p.overrides):
            self._recompute(row, [p])

    def apply(self, events: Sequence[RecordedEvent]) -> None:
        """Apply events in seq order and move the index to the last; ones it has are skipped
        (two threads catching up at once may fetch the same events)."""
        with self.lock:
            events = [e for e in events if e.seq > self.seq]
            if not events:
                return
            touched: set[int] = set()
            policy_moved: set[str] = set()
            restricted: set[str] = set()
            for e in events:
                self.seq, self.at = e.seq, e.at
                if isinstance(e.event, ev.RestrictionEvent):
                    self._apply_restriction(e.seq, e.event)
                    restricted.add(e.event.purpose)
                else:
                    self._apply_one(e, touched, policy_moved)
            for key in policy_moved:
                self.recompute_all(self.purposes[key])
            for row in touched:
                self._recompute(row, self.purposes.values())
            for key in restricted | policy_moved:
                self._refold(key)
        if self.ids.uncompacted > COMPACT_AFTER:
            self.ids.compact(self.lock)

    def _apply_one(self, e: RecordedEvent, touched: set[int], policy_moved: set[str]) -> None:
        event = e.event
        if isinstance(event, ev.PolicyEvent):
            if event.purpose in self.purposes:
                self.purposes[event.purpose].history.append((e.seq, event.policy))
                policy_moved.add(event.purpose)
            else:
                added = self.add_purpose_arrays(event.purpose, e.seq, [(e.seq, event.policy)])
                self.recompute_all(added)
            return
        if event.user_id is None:
            return
        self.changed[event.user_id] = e.seq
        row = self.ids.row_of(event.user_id)
        if row == NO_ROW:
            row = self._new_row(event.user_id)
        touched.add(row)
        p = self.purposes.get(event.purpose) if event.purpose else None
        match event:
            case ev.SubjectRegistered(jurisdiction=jurisdiction):
                self.jur[row] = JUR_CODE.get(jurisdiction, 0)
            case ev.JurisdictionChanged(jurisdiction=jurisdiction):
                self.jur[row] = JUR_CODE.get(jurisdiction, 0)
            case ev.SubjectErased():
                self.erased[row] = True
            case ev.ChoiceSet(state=state, notice_version=notice_version) if p is not None:
                p.choice[row] = CHOICE_CODE.get(state, 0)
                p.set_notice(row, notice_version)
            case ev.OverridePlaced() if p is not None:
                p.overrides.setdefault(row, []).append(
                    OverrideFacts(
                        id=event.override_id,
                        state=event.state,
                        placed_seq=e.seq,
                        expires_at=event.expires_at,
                        placed_by=e.actor,
                        ticket=e.ticket or "",
                    )
                )
            case ev.OverrideLifted(override_id=override_id) if p is not None:
                kept = [o for o in p.overrides.get(row, []) if o.id != override_id]
                if kept:
                    p.overrides[row] = kept
                else:
                    p.overrides.pop(row, None)
            case _:
                # An expiry needs no state change: resolution judges expiry by time already.
                pass

    def _refold(self, purpose: str) -> None:
        """Fold the purpose's restrictions in force at the head now, off the read path (or
        drop the folded codes when none is in force)."""
        p = self.purposes.get(purpose)
        if p is None:
            return
        active = [r for r in p.restrictions if r.active(self.seq)]
        if active:
            self._folded(p, active)
        else:
            p.folded = None

    def _apply_restriction(self, seq: int, event: ev.RestrictionEvent) -> None:
        """One purpose's restriction placed or lifted at seq: its history gains the fact."""
        p = self.purposes.get(event.purpose)
        if p is None:
            return
        if isinstance(event, ev.RestrictionPlaced):
            p.restrictions.append(replace(event.facts(seq), purposes=frozenset({event.purpose})))
        elif isinstance(event, ev.RestrictionLifted):
            p.restrictions = [
                replace(r, lifted_seq=seq)
                if r.id == event.restriction_id and r.lifted_seq is None
                else r
                for r in p.restrictions
            ]


@functools.lru_cache(maxsize=1024)
def covered_codes(jurisdictions: frozenset[str]) -> npt.NDArray[np.bool_]:
    """Which jurisdiction codes (by position in JURISDICTIONS) a set of selectors covers;
    the code of no jurisdiction only by `*`."""
    return np.array([selects(jurisdictions, j) for j in JURISDICTIONS], dtype=np.bool_)


def apply_restrictions(
    out: CodeArray,
    active: Sequence[RestrictionFacts],
    jur: npt.NDArray[np.uint8],
    times: Times | None,
) -> None:
    """Deny (basis restriction) every answer an active restriction covers, in place: by the
    jurisdiction code of each position, and for a windowed one only where the content time is
    inside its window or missing (NO_TIME, or no times at all: fail closed). Erased subjects
    stay erased and malformed IDs stay invalid.

    One gather of a per-jurisdiction byte serves every restriction: bit 0 for those that deny
    whatever the time, one bit each for (up to seven) windowed ones.
    """
    classes = np.zeros(len(JURISDICTIONS), dtype=np.uint8)
    windowed: list[RestrictionFacts] = []
    for r in active:
        if r.window is None or times is None:
            classes |= covered_codes(r.jurisdictions)
        else:
            windowed.append(r)
    for bit, r in enumerate(windowed[:WINDOW_BITS], start=1):
        classes[covered_codes(r.jurisdictions)] |= 1 << bit
    cls = np.take(classes, jur)
    hit = (cls & 1).view(np.bool_) if windowed else cls.view(np.bool_)
    for bit, r in enumerate(windowed, start=1):
        assert r.window is not None
        assert times is not None
        inside = in_window(times, r.window.start, r.window.end)
        covered = (
            ((cls >> bit) & 1).view(np.bool_)
            if bit <= WINDOW_BITS
            else covered_codes(r.jurisdictions)[jur]
        )
        hit |= covered & inside
    hit &= (out != ERASED) & (out != cd.INVALID)
    # out = RESTRICTED where hit, by uint8 arithmetic: far cheaper than a masked store.
    delta = np.uint8(RESTRICTED) - out
    delta *= hit.view(np.uint8)
    out += delta


def in_window(times: Times, start: datetime, end: datetime) -> npt.NDArray[np.bool_]:
    """Where content of these times is inside [start, end), or has no time (fail closed)."""
    low = to_micros(start)
    # One unsigned comparison: times before the start wrap around to far beyond its length.
    inside: npt.NDArray[np.bool_] = (times - low).view(np.uint64) < np.uint64(to_micros(end) - low)
    inside |= times == NO_TIME
    return inside


def _not_offered_one(table: LegalTable, jur: int, code: int) -> tuple[int, str]:
    """ConsentIndex._not_offered for one answer: its code, and the legal basis of its
    jurisdiction code."""
    legal = table.bases[jur]
    if legal == "not_offered" and code != ERASED:
        code = NOT_OFFERED
    return code, legal


def _stored(policy: Policy) -> Policy:
    """The policy the stored codes are resolved under: without legal bases, which are laid
    over them at answer time (see _not_offered)."""
    return Policy(policy.defaults, policy.unknown_subject) if policy.legal_bases else policy


def _resized(array: Any, capacity: int) -> Any:
    out = np.zeros(capacity, dtype=array.dtype)
    out[: len(array)] = array
    return out
