"""Configuration read from the environment: defaults, and settings refused at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime import config


def test_idempotency_records_are_replayed_for_24_hours_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONSENT_IDEMPOTENCY_TTL_HOURS", raising=False)
    assert config.from_environ(str(tmp_path))["CONSENT_IDEMPOTENCY_TTL_HOURS"] == 24.0
    monkeypatch.setenv("CONSENT_IDEMPOTENCY_TTL_HOURS", "1.5")
    assert config.from_environ(str(tmp_path))["CONSENT_IDEMPOTENCY_TTL_HOURS"] == 1.5


@pytest.mark.parametrize("value", ["0", "-1", "", "a day", "inf", "nan"])
def test_an_idempotency_ttl_that_is_not_a_positive_number_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONSENT_IDEMPOTENCY_TTL_HOURS", value)
    with pytest.raises(ValueError, match="CONSENT_IDEMPOTENCY_TTL_HOURS must be a number above"):
        config.from_environ(str(tmp_path))


def test_an_index_is_rebuilt_past_a_lag_of_100_000_events_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONSENT_INDEX_REBUILD_LAG", raising=False)
    assert config.from_environ(str(tmp_path))["CONSENT_INDEX_REBUILD_LAG"] == 100_000
    monkeypatch.setenv("CONSENT_INDEX_REBUILD_LAG", "1_000_000")
    assert config.from_environ(str(tmp_path))["CONSENT_INDEX_REBUILD_LAG"] == 1_000_000


@pytest.mark.parametrize("value", ["0", "-5", "", "1.5", "many"])
def test_a_rebuild_lag_that_is_not_a_whole_number_above_zero_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONSENT_INDEX_REBUILD_LAG", value)
    with pytest.raises(ValueError, match="CONSENT_INDEX_REBUILD_LAG must be a whole number"):
        config.from_environ(str(tmp_path))
