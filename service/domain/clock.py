"""Time as the ledger sees it: aware UTC datetimes and their RFC 3339 form."""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def isoformat(value: datetime | None) -> str | None:
    """Render an aware datetime as RFC 3339 with a Z suffix (None stays None)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
