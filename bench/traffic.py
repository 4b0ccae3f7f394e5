"""The IDs the workloads send, prepared before timing, with the answers expected for them."""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.population import ID_BASE, BoolArray, IntArray, Population, user_ids

UNKNOWN_SHARE = 0.05
UNKNOWN_SPAN = 10_000_000
STREAM_BLOCK = 100_000
BATCH_SIZE = 10_000
BATCH_VARIANTS = 16
TRAFFIC_SEED = 7


def draw_indices(pop: Population, count: int, rng: np.random.Generator) -> IntArray:
    """Subject indices, mostly known (uniform, with repeats), UNKNOWN_SHARE never seen."""
    known = rng.integers(0, pop.size, count)
    unknown = pop.size + rng.integers(0, UNKNOWN_SPAN, count)
    return np.where(rng.random(count) < UNKNOWN_SHARE, unknown, known).astype(np.int64)


def _text(indices: IntArray) -> bytes:
    return ("\n".join(user_ids(indices)) + "\n").encode() if len(indices) else b""


@dataclass(frozen=True)
class TextStream:
    """A newline-separated ID stream in parts, and what the allowed lines must add up to."""

    parts: list[bytes]
    ids_per_part: list[int]
    allowed_per_part: list[int]
    crc_after_part: list[int]  # CRC-32 of the expected response after each part

    def expected(self, parts_sent: int) -> tuple[int, int, int]:
        """IDs sent, allowed lines and response CRC-32 expected when `parts_sent` were sent."""
        if parts_sent == 0:
            return 0, 0, 0
        return (
            sum(self.ids_per_part[:parts_sent]),
            sum(self.allowed_per_part[:parts_sent]),
            self.crc_after_part[parts_sent - 1],
        )


@dataclass(frozen=True)
class ArrowStream:
    """An Arrow IPC stream in parts: schema, record batches, end marker; with expected masks."""

    head: bytes
    parts: list[bytes]
    tail: bytes
    masks: list[BoolArray]

    def expected(self, parts_sent: int) -> BoolArray:
        """The `allowed` column expected when the first `parts_sent` batches were sent."""
        if parts_sent == 0:
            return np.zeros(0, dtype=bool)
        return np.concatenate(self.masks[:parts_sent])


def ipc_parts(
    schema: pa.Schema, batches: Iterable[list[pa.Array]]
) -> tuple[bytes, list[bytes], bytes]:
    """An Arrow IPC stream cut where a sender sends it: the schema, one part a record batch,
    the end marker."""
    sink = io.BytesIO()

    def take() -> bytes:
        data = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return data

    writer = pa.ipc.new_stream(sink, schema)
    head = take()
    parts = []
    for columns in batches:
        writer.write_batch(pa.record_batch(columns, schema=schema))
        parts.append(take())
    writer.close()
    return head, parts, take()


def _arrow_stream(blocks: list[IntArray], masks: list[BoolArray], as_text: bool) -> ArrowStream:
    type_ = pa.string() if as_text else pa.int64()
    schema = pa.schema([pa.field("user_id", type_)])

    def columns(block: IntArray) -> list[pa.Array]:
        column = pa.array(block + ID_BASE, pa.int64())
        return [pc.cast(column, pa.string()) if as_text else column]

    head, parts, tail = ipc_parts(schema, (columns(b) for b in blocks))
    return ArrowStream(head, parts, tail, masks)


@dataclass(frozen=True)
class Traffic:
    """Everything the workloads send for one population, built once before any timing."""

    population: Population
    blocks: list[IntArray]

    @classmethod
    def build(cls, pop: Population, stream_ids: int) -> Traffic:
        """Draw `stream_ids` IDs for the streamed workloads, in blocks of STREAM_BLOCK."""
        rng = np.random.default_rng(TRAFFIC_SEED)
        blocks = [
            draw_indices(pop, min(STREAM_BLOCK, stream_ids - lo), rng)
            for lo in range(0, stream_ids, STREAM_BLOCK)
        ]
        return cls(pop, blocks)

    @property
    def total_ids(self) -> int:
        """How many IDs the streamed workloads send in all."""
        return sum(len(b) for b in self.blocks)

    @cached_property
    def masks(self) -> list[BoolArray]:
        """The expected answer for every ID of every block."""
        return [self.population.allowed_for(b) for b in self.blocks]

    @cached_property
    def text(self) -> TextStream:
        """The stream as newline-separated text."""
        parts, counts, allowed, crcs = [], [], [], []
        crc = 0
        for block, mask in zip(self.blocks, self.masks, strict=True):
            parts.append(_text(block))
            counts.append(len(block))
            allowed.append(int(mask.sum()))
            crc = zlib.crc32(_text(block[mask]), crc)
            crcs.append(crc)
        return TextStream(parts, counts, allowed, crcs)

    @cached_property
    def arrow_int64(self) -> ArrowStream:
        """The stream as an Arrow IPC stream of one int64 column."""
        return _arrow_stream(self.blocks, self.masks, as_text=False)

    @cached_property
    def arrow_string(self) -> ArrowStream:
        """The stream as an Arrow IPC stream of one string column."""
        return _arrow_stream(self.blocks, self.masks, as_text=True)

    @cached_property
    def batches(self) -> list[tuple[bytes, int, IntArray]]:
        """Batch-lookup bodies of BATCH_SIZE distinct IDs: (JSON body, allowed count, indices)."""
        rng = np.random.default_rng(TRAFFIC_SEED + 1)
        pop = self.population
        out = []
        for _ in range(BATCH_VARIANTS):
            unknown_count = int(BATCH_SIZE * UNKNOWN_SHARE)
            known = rng.choice(pop.size, min(pop.size, BATCH_SIZE - unknown_count), replace=False)
            unknown = pop.size + rng.choice(UNKNOWN_SPAN, BATCH_SIZE - len(known), replace=False)
            indices = rng.permutation(np.concatenate([known, unknown]).astype(np.int64))
            body = json.dumps({"user_ids": user_ids(indices)}).encode()
            out.append((body, int(pop.allowed_for(indices).sum()), indices))
        return out
