"""A run's members: the set of distinct user IDs, its compact encoding, and each worker's cache.

Numeric IDs (canonical digit strings of at most 18 digits, as the read index keeps them) are a
sorted int64 array; every other ID is in a sorted string array. Stored, the numbers are a
Parquet column in DELTA_BINARY_PACKED encoding without further compression (about
log2(gap) bits per ID, decoded at hundreds of millions a second), the strings a Parquet column
in DELTA_BYTE_ARRAY (prefix) encoding with zstd. bench/runs.py measured the alternatives
(roaring bitmaps, deltas with zstd, plain Parquet); the README gives the figures.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from service.readindex import codes as cd
from service.readindex.codes import CodeArray
from service.readindex.directory import is_numeric
from service.runtime.extensions import db, worker_state
from service.runtime.models import RunMembers

IntArray = npt.NDArray[np.int64]
COLUMN = "user_id"
CODES_CODEC = "zstd"
CACHE_BYTES = 512 << 20
DENSE_FACTOR = 8  # a bitmap of up to 8 bits an ID is cheaper than sorting them


@dataclass(frozen=True, eq=False)
class MemberSet:
    """Distinct user IDs: numeric ones as a sorted int64 array, the others sorted as text."""

    numbers: IntArray
    strings: pa.StringArray

    @classmethod
    def of(cls, numbers: IntArray, strings: pa.Array) -> MemberSet:
        """A set from IDs in any order, with repeats: sorted and made distinct (`numbers` is
        sorted in place)."""
        text = pc.unique(strings.cast(pa.string())) if len(strings) else strings
        text = text.take(pc.sort_indices(text)) if len(text) else pa.array([], pa.string())
        return cls(_distinct_sorted(numbers), text)

    def __len__(self) -> int:
        return len(self.numbers) + len(self.strings)

    @property
    def nbytes(self) -> int:
        """Memory held, for the cache's budget."""
        return int(self.numbers.nbytes) + int(self.strings.nbytes)

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self.has(member_key(user_id))

    def has(self, key: int | str) -> bool:
        """Whether a member_key() is in the set."""
        if isinstance(key, int):
            i = int(np.searchsorted(self.numbers, key))
            return i < len(self.numbers) and int(self.numbers[i]) == key
        strings = self.strings
        lo, hi = 0, len(strings)
        while lo < hi:  # bisect on the Arrow array itself: no copy of it as Python strings
            mid = (lo + hi) // 2
            if strings[mid].as_py() < key:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(strings) and strings[lo].as_py() == key

    def ids(self, positions: npt.NDArray[np.intp]) -> pa.Array:
        """The IDs at positions of the member order (numbers first, then strings), as text."""
        n = len(self.numbers)
        small = positions[positions < n]
        large = positions[positions >= n] - n
        parts = []
        if len(small):
            parts.append(pc.cast(pa.array(self.numbers[small]), pa.string()))
        if len(large):
            parts.append(self.strings.take(pa.array(large)))
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())

    def sha256(self) -> str:
        """SHA-256 of the numbers as little-endian int64, then each other ID and a newline."""
        digest = hashlib.sha256(np.ascontiguousarray(self.numbers, dtype="<i8").data)
        for chunk in _slices(self.strings, 1 << 16):
            digest.update(("\n".join(chunk.to_pylist()) + "\n").encode())
        return digest.hexdigest()

    def encode(self) -> tuple[bytes, bytes]:
        """The stored form: (numbers, strings), each a one-column Parquet file."""
        numbers = _parquet(
            pa.table({COLUMN: pa.array(self.numbers, pa.int64())}),
            encoding="DELTA_BINARY_PACKED",
            compression="none",
        )
        strings = _parquet(
            pa.table({COLUMN: self.strings}), encoding="DELTA_BYTE_ARRAY", compression="zstd"
        )
        return numbers, strings

    @classmethod
    def decode(cls, numbers: bytes, strings: bytes) -> MemberSet:
        """The set back from its stored form."""
        ints = pq.read_table(pa.BufferReader(numbers)).column(0).to_numpy()
        text = pq.read_table(pa.BufferReader(strings)).column(0).combine_chunks()
        return cls(np.ascontiguousarray(ints, dtype=np.int64), text.cast(pa.string()))


def member_key(user_id: str) -> int | str:
    """How a user ID is looked up in member sets: the number of a numeric ID, else the text."""
    return int(user_id) if is_numeric(user_id) else user_id


def _distinct_sorted(numbers: IntArray) -> IntArray:
    """The distinct values in ascending order. IDs handed out in sequence are dense: then a
    bitmap over their span sorts and removes repeats in linear time (10M IDs in about a
    tenth of the time of a sort); sparse ones are sorted in place."""
    if len(numbers) == 0:
        return np.empty(0, dtype=np.int64)
    lo, hi = int(numbers.min()), int(numbers.max())
    if hi - lo < DENSE_FACTOR * len(numbers) + (1 << 20):
        seen = np.zeros(hi - lo + 1, dtype=np.bool_)
        seen[numbers - lo] = True
        return np.flatnonzero(seen).astype(np.int64, copy=False) + lo
    numbers.sort()
    keep = np.empty(len(numbers), dtype=np.bool_)
    keep[0] = True
    np.not_equal(numbers[1:], numbers[:-1], out=keep[1:])
    return numbers[keep]


def _parquet(table: pa.Table, *, encoding: str, compression: str) -> bytes:
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression=compression,
        use_dictionary=False,
        column_encoding={COLUMN: encoding},
        write_statistics=False,
        row_group_size=1 << 20,
    )
    return sink.getvalue()


def _slices(array: pa.Array, size: int) -> Iterator[pa.Array]:
    for start in range(0, len(array), size):
        yield array.slice(start, size)


def encode_codes(codes: CodeArray) -> bytes:
    """Decision codes (one byte per member, in member order), compressed."""
    return bytes(pa.compress(codes.tobytes(), codec=CODES_CODEC, asbytes=True))


def decode_codes(blob: bytes, count: int) -> CodeArray:
    """The decision codes stored beside a member set."""
    raw = pa.decompress(blob, decompressed_size=count, codec=CODES_CODEC, asbytes=True)
    return cd.as_codes(np.frombuffer(raw, dtype=np.uint8))


class MemberCache:
    """Decoded member sets by run id, least recently used first out, within a byte budget.

    Members never change once recorded, so a cached set is never stale: a worker only ever
    loads each run's blobs once while they fit.
    """

    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.budget = budget
        self.sets: OrderedDict[int, MemberSet] = OrderedDict()
        self.used = 0
        self.lock = threading.Lock()

    def get_many(self, run_ids: Iterable[int]) -> dict[int, MemberSet]:
        """The member sets of these runs (each recorded), loading the missing ones at once."""
        wanted = list(dict.fromkeys(run_ids))
        found: dict[int, MemberSet] = {}
        with self.lock:
            for run_id in wanted:
                hit = self.sets.get(run_id)
                if hit is not None:
                    self.sets.move_to_end(run_id)
                    found[run_id] = hit
        missing = [r for r in wanted if r not in found]
        for start in range(0, len(missing), 500):
            rows = db.session.execute(
                sa.select(RunMembers.run_id, RunMembers.numbers, RunMembers.strings).where(
                    RunMembers.run_id.in_(missing[start : start + 500])
                )
            )
            for row in rows:
                members = MemberSet.decode(row.numbers, row.strings)
                found[row.run_id] = members
                self.keep(row.run_id, members)
        return found

    def keep(self, run_id: int, members: MemberSet) -> None:
        with self.lock:
            if run_id in self.sets or members.nbytes > self.budget:
                return
            self.sets[run_id] = members
            self.used += members.nbytes
            while self.used > self.budget:
                _, old = self.sets.popitem(last=False)
                self.used -= old.nbytes


def cache() -> MemberCache:
    """This worker's member cache."""
    return worker_state("consent_run_members", MemberCache)


def members_of(run_id: int) -> MemberSet:
    """One recorded run's member set (from this worker's cache, or the database)."""
    return cache().get_many([run_id])[run_id]
