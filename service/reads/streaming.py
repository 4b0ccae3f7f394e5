"""ByteSink: a write-only file for Arrow and Parquet writers whose output is streamed out."""

from __future__ import annotations


class ByteSink:
    """Collects what a writer writes, so a generator can yield it as soon as it is written."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        """Keep a copy of the bytes (the writer may reuse its buffer)."""
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""

    def close(self) -> None:
        """Mark closed, as file objects do."""
        self.closed = True

    def take(self) -> bytes:
        """Return everything written since the last take."""
        out = b"".join(self.parts)
        self.parts.clear()
        return out
