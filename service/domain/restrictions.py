"""What a restriction must hold: its purposes and jurisdictions (selectors), and its window.

Checked before anything is written, each problem named by its field (`purposes.1`,
`window.to`, ...), so a refused order says exactly what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.domain.clock import RFC3339_RULE, parse_rfc3339
from service.domain.errors import ValidationFailed
from service.domain.policy import TIME_BASES, Window
from service.domain.validation import PURPOSE_KEY_RE, PURPOSE_KEY_RULE, SELECTOR_RE

SELECTOR_RULE = "an ISO 3166-1 alpha-2 country code, a region group (EEA) or '*'"


@dataclass(frozen=True, slots=True)
class Order:
    """A restriction's scope, checked: purposes and selectors in the order given, each once."""

    purposes: tuple[str, ...]
    jurisdictions: tuple[str, ...]
    window: Window | None


def order(
    purposes: Sequence[Any], jurisdictions: Sequence[Any], window: Mapping[str, Any] | None
) -> Order:
    """Check a restriction's scope, or raise one 422 naming every problem found."""
    problems: dict[str, list[str]] = {}
    keys = _distinct(purposes, "purposes", _purpose_key, problems)
    selectors = _distinct(jurisdictions, "jurisdictions", _selector, problems)
    checked = _window(window, problems) if window is not None else None
    if problems:
        raise ValidationFailed(
            "The restriction is invalid: "
            + "; ".join(f"{field}: {msgs[0]}" for field, msgs in list(problems.items())[:5]),
            errors=problems,
        )
    return Order(tuple(keys), tuple(selectors), checked)


def _purpose_key(value: Any) -> str | None:
    return value if isinstance(value, str) and PURPOSE_KEY_RE.fullmatch(value) else None


def _selector(value: Any) -> str | None:
    if isinstance(value, str) and SELECTOR_RE.fullmatch(value):
        return value.upper()
    return None


def _distinct(
    values: Sequence[Any],
    field: str,
    clean: Any,
    problems: dict[str, list[str]],
) -> list[str]:
    rule = f"Must match {PURPOSE_KEY_RULE}." if field == "purposes" else f"Must be {SELECTOR_RULE}."
    if not values:
        problems[field] = ["Give at least one."]
        return []
    found: list[str] = []
    for i, value in enumerate(values):
        checked = clean(value)
        if checked is None:
            problems[f"{field}.{i}"] = [rule]
        elif checked in found:
            problems[f"{field}.{i}"] = [f"{checked!r} is given twice."]
        else:
            found.append(checked)
    return found


def _window(window: Mapping[str, Any], problems: dict[str, list[str]]) -> Window | None:
    bounds = {}
    for name in ("from", "to"):
        raw = window.get(name)
        when = parse_rfc3339(raw) if isinstance(raw, str) else None
        if when is None:
            problems[f"window.{name}"] = [f"Must be {RFC3339_RULE}."]
        bounds[name] = when
    basis = window.get("time_basis")
    if basis not in TIME_BASES:
        problems["window.time_basis"] = [f"Must be one of: {', '.join(TIME_BASES)}."]
    start, end = bounds["from"], bounds["to"]
    if start is None or end is None or basis not in TIME_BASES:
        return None
    if start >= end:
        problems["window.to"] = ["Must be later than window.from (the window is [from, to))."]
        return None
    return Window(start, end, str(basis))
