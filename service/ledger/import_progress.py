"""An import's progress file: which input (SHA-256 and size) and how many of its rows are
committed, so that a rerun goes on after them; written atomically after every batch."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.domain.clock import isoformat, utcnow
from service.domain.errors import Conflict
from service.ledger.import_source import Digest

SUFFIX = ".import-progress.json"


def default_path(input_path: Path) -> Path:
    """FILE.import-progress.json beside the input."""
    return input_path.with_name(input_path.name + SUFFIX)


@dataclass
class Totals:
    """Counts over the batches committed so far."""

    rows: int = 0
    imported: int = 0
    skipped: int = 0
    choices: int = 0
    events: int = 0


@dataclass
class Progress:
    """The progress file's content."""

    input: str
    sha256: str
    size: int
    rows_committed: int = 0
    complete: bool = False
    head: int | None = None
    updated_at: str | None = None
    totals: Totals = field(default_factory=Totals)

    @classmethod
    def load(cls, path: Path, input_path: Path, digest: Digest) -> Progress:
        """The progress of this input so far (none yet: a new one); a progress file of another
        input is a 409, since resuming from it would skip the wrong rows."""
        if not path.exists():
            return cls(str(input_path.resolve()), digest.sha256, digest.size)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            progress = cls(**{**data, "totals": Totals(**data.get("totals") or {})})
        except (ValueError, TypeError) as exc:
            raise Conflict(
                f"The progress file {path} cannot be read ({exc}); move it away to start over."
            ) from None
        if (progress.sha256, progress.size) != (digest.sha256, digest.size):
            raise Conflict(
                f"The progress file {path} is for another input ({progress.input}, "
                f"sha256 {progress.sha256[:12]}…, {progress.size:,} bytes); this one is "
                f"sha256 {digest.sha256[:12]}…, {digest.size:,} bytes. Pass --progress with a "
                "new file, or move the old one away."
            )
        return progress

    def save(self, path: Path) -> None:
        """Replace the file atomically, durably (a crash leaves the old or the new one)."""
        self.updated_at = isoformat(utcnow())
        partial = path.with_name(path.name + ".tmp")
        with partial.open("w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
