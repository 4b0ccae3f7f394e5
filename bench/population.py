"""A synthetic, deterministic population of subjects and the answers the ledger owes for each."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

ID_BASE = 10_000_000
PURPOSE = "model_training"
DEFAULT_SEED = 20261125

# Every code here is unambiguously inside (EEA_CODES) or outside (OTHER_CODES) the EEA.
EEA_CODES = (
    "DE", "FR", "IT", "ES", "NL", "PL", "SE", "AT", "BE",
    "IE", "DK", "FI", "PT", "CZ", "NO", "IS", "LI",
)  # fmt: skip
OTHER_CODES = (
    "US", "BR", "IN", "GB", "CA", "JP", "MX", "AU", "ID", "NG", "CH", "TR", "KR", "ZA", "AR",
)  # fmt: skip
JURISDICTIONS: tuple[str | None, ...] = (None, *EEA_CODES, *OTHER_CODES)
FIRST_EEA, FIRST_OTHER = 1, 1 + len(EEA_CODES)

EEA_SHARE = 0.15
NO_JURISDICTION_SHARE = 0.15
DENIED_CHOICE_SHARE = 0.10
GRANTED_CHOICE_SHARE = 0.05
MAX_OVERRIDES = 100
OVERRIDE_GRANTED_SHARE = 0.4
OVERRIDE_EXPIRING_SHARE = 0.2

NO_CHOICE, GRANTED, DENIED = 0, 1, 2
STATE_NAMES = {GRANTED: "granted", DENIED: "denied"}
BASIS_DEFAULT, BASIS_CHOICE, BASIS_OVERRIDE = 0, 1, 2
BASIS_NAMES = ("default", "choice", "override")

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
SmallArray = npt.NDArray[np.int8]


def user_ids(indices: IntArray) -> list[str]:
    """The user IDs of subject indices (also valid for indices past the population: unknown IDs)."""
    return [str(i) for i in (indices + ID_BASE).tolist()]


@dataclass(frozen=True)
class Population:
    """N subjects: jurisdiction, explicit choice and override per subject index.

    Subject i has user ID str(ID_BASE + i); IDs from ID_BASE + size on are never seen.
    The expected answers are computed here independently of the service, so the benchmark can
    check that the service's answers are right.
    """

    size: int
    jurisdiction: SmallArray
    choice: SmallArray
    override_index: IntArray
    override_state: SmallArray
    override_expiring: BoolArray
    seed: int = field(default=DEFAULT_SEED)

    @classmethod
    def generate(cls, size: int, seed: int = DEFAULT_SEED) -> Population:
        """Draw the population for `size` subjects; the same size and seed give the same one."""
        rng = np.random.default_rng(seed)
        where = rng.random(size)
        jurisdiction = np.where(
            where < EEA_SHARE,
            rng.integers(FIRST_EEA, FIRST_OTHER, size),
            np.where(
                where < EEA_SHARE + NO_JURISDICTION_SHARE,
                0,
                rng.integers(FIRST_OTHER, len(JURISDICTIONS), size),
            ),
        ).astype(np.int8)
        draw = rng.random(size)
        choice = np.where(
            draw < DENIED_CHOICE_SHARE,
            DENIED,
            np.where(draw < DENIED_CHOICE_SHARE + GRANTED_CHOICE_SHARE, GRANTED, NO_CHOICE),
        ).astype(np.int8)
        count = min(MAX_OVERRIDES, max(1, size // 100))
        override_index = np.sort(rng.choice(size, count, replace=False)).astype(np.int64)
        override_state = np.where(
            rng.random(count) < OVERRIDE_GRANTED_SHARE, GRANTED, DENIED
        ).astype(np.int8)
        override_expiring = rng.random(count) < OVERRIDE_EXPIRING_SHARE
        return cls(
            size, jurisdiction, choice, override_index, override_state, override_expiring, seed
        )

    @cached_property
    def in_eea(self) -> BoolArray:
        """Whether each subject's jurisdiction is in the EEA."""
        return (self.jurisdiction >= FIRST_EEA) & (self.jurisdiction < FIRST_OTHER)

    @cached_property
    def has_override(self) -> BoolArray:
        """Whether each subject has an (active) override."""
        mask = np.zeros(self.size, dtype=bool)
        mask[self.override_index] = True
        return mask

    @cached_property
    def default_granted(self) -> BoolArray:
        """The purpose default per subject: EEA denied, all else (no jurisdiction too) granted."""
        return ~self.in_eea

    @cached_property
    def before_override_granted(self) -> BoolArray:
        """Effective state after registration and choice, before any override."""
        return np.where(self.choice == NO_CHOICE, self.default_granted, self.choice == GRANTED)

    @cached_property
    def allowed(self) -> BoolArray:
        """The expected answer per subject: override, else choice, else default."""
        allowed = self.before_override_granted.copy()
        allowed[self.override_index] = self.override_state == GRANTED
        return allowed

    @cached_property
    def basis(self) -> SmallArray:
        """The expected basis per subject (BASIS_NAMES indexes it)."""
        basis = np.where(self.choice == NO_CHOICE, BASIS_DEFAULT, BASIS_CHOICE).astype(np.int8)
        basis[self.override_index] = BASIS_OVERRIDE
        return basis

    @cached_property
    def events_per_subject(self) -> IntArray:
        """How many events each subject's seeding writes: registration, choice, override."""
        counts: IntArray = (1 + (self.choice != NO_CHOICE) + self.has_override).astype(np.int64)
        return counts

    @property
    def event_count(self) -> int:
        """Events the whole population's seeding writes."""
        return int(self.events_per_subject.sum())

    def allowed_for(self, indices: IntArray) -> BoolArray:
        """Expected answers for subject indices, where indices past the population are unknown."""
        known = indices < self.size
        result = np.zeros(len(indices), dtype=bool)
        result[known] = self.allowed[indices[known]]
        return result
