"""Time as the ledger sees it: aware UTC datetimes, their RFC 3339 form, and microseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from consent_client.wire import RFC3339_PATTERN

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# An RFC 3339 date and time with an offset or Z, as every time the API reads must be: the one
# pattern the client checks times by too.
RFC3339_RE = re.compile(RFC3339_PATTERN)
RFC3339_RULE = "an RFC 3339 time with an offset or Z, e.g. 2024-06-01T00:00:00Z"
_FRACTION_RE = re.compile(r"\.([0-9]{1,9})")


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def isoformat(value: datetime | None) -> str | None:
    """Render an aware datetime as RFC 3339 with a Z suffix (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 time (offset or Z required) as an aware UTC datetime, or None if it is not
    one (or names no real date or cannot be held). Digits beyond microseconds are dropped:
    every time the ledger compares with has microseconds at most, so the order is kept."""
    if RFC3339_RE.fullmatch(text) is None:
        return None
    clean = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.upper(), count=1)
    try:
        return datetime.fromisoformat(clean.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch (negative before it) of an aware datetime."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=value)
