"""Decision codes: one byte per answer holding its basis and state, and the only ways to read one.

A code is `basis * 2 + granted`. The index stores one per subject and purpose, and the read
paths move arrays of them; everything that asks what a code means asks here. A malformed ID gets
INVALID, whose grant bit is clear, so even a bare bit test reads it as not allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.domain.policy import Policy, Resolution, default_for

BASES = ("unknown", "erased", "override", "choice", "default", "restriction", "not_offered")
BASIS_CODE = {b: i for i, b in enumerate(BASES)}
_GRANTED = 1
INVALID = 0xFE  # a malformed ID: never allowed, never looked up (basis slot 127, grant bit 0)
INVALID_BASIS = "invalid"

CodeArray = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Code:
    """One decision code: what basis gave which state."""

    value: int

    @classmethod
    def of(cls, resolution: Resolution) -> Code:
        """The code of a resolution."""
        return cls(encode(resolution))

    @property
    def allowed(self) -> bool:
        """Only a positive grant of a well-formed ID allows."""
        return self.value != INVALID and bool(self.value & _GRANTED)

    @property
    def state(self) -> str:
        """'granted' or 'denied'."""
        return "granted" if self.allowed else "denied"

    @property
    def basis(self) -> str:
        """The basis of the decision ('invalid' for a malformed ID)."""
        return INVALID_BASIS if self.value == INVALID else BASES[self.value >> 1]

    @property
    def on_default(self) -> bool:
        """Whether the purpose's default policy gave this answer."""
        return self.value != INVALID and self.value >> 1 == BASIS_CODE["default"]


def make(basis: str, granted: bool) -> int:
    """The code value for a basis and state."""
    return BASIS_CODE[basis] * 2 + (_GRANTED if granted else 0)


def encode(res: Resolution) -> int:
    """The code value of a resolution: basis and state."""
    return make(res.basis, res.allowed)


def default_codes(policy: Policy, jurisdictions: tuple[str | None, ...]) -> CodeArray:
    """The default code for each jurisdiction (by position), by the resolution rule itself."""
    return np.array(
        [make("default", default_for(policy, j)[0] == "granted") for j in jurisdictions],
        dtype=np.uint8,
    )


def unknown_code(policy: Policy) -> int:
    """The code for an ID the ledger has not seen."""
    return make("unknown", policy.unknown_subject == "granted")


def choice_codes(granted: Mask) -> CodeArray:
    """Codes of users' own choices, granted where the mask says."""
    out: CodeArray = (make("choice", False) + granted.astype(np.uint8)).astype(np.uint8)
    return out


def allowed(codes: CodeArray) -> Mask:
    """Where codes allow: a grant of a well-formed ID."""
    mask: Mask = (codes != INVALID) & ((codes & _GRANTED) == _GRANTED)
    return mask


def on_default(codes: CodeArray) -> Mask:
    """Where the purpose's default policy gave the answer."""
    mask: Mask = (codes != INVALID) & ((codes >> 1) == BASIS_CODE["default"])
    return mask


def known(codes: CodeArray) -> Mask:
    """Where the ID is a subject the ledger knows (well-formed, not unknown)."""
    mask: Mask = (codes != INVALID) & ((codes >> 1) != BASIS_CODE["unknown"])
    return mask


def basis_indices(codes: CodeArray) -> npt.NDArray[np.int8]:
    """Each code's position in BASES (for codes of well-formed IDs only)."""
    out: npt.NDArray[np.int8] = (codes >> 1).astype(np.int8)
    return out


def labels() -> dict[int, tuple[str, str]]:
    """(basis, allowed) label values of every code value, for counting decisions."""
    out: dict[int, tuple[str, str]] = {}
    for basis in BASES:
        for granted in (False, True):
            code = Code(make(basis, granted))
            out[code.value] = (code.basis, "true" if code.allowed else "false")
    out[INVALID] = (INVALID_BASIS, "false")
    return out


def full(n: int, value: int) -> CodeArray:
    """An array of n copies of one code."""
    return np.full(n, value, dtype=np.uint8)


def as_codes(values: Any) -> CodeArray:
    """An array of code values (from a list of ints)."""
    return np.asarray(values, dtype=np.uint8)
