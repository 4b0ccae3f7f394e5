"""Fixed-window counting for rate limits: local counts and shared (`limits` storage) agree."""

from __future__ import annotations

import pytest
from limits import parse

from service.web.ratelimit import LocalWindows, SharedWindows


class FrozenTime:
    """A settable time.time()."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenTime:
    frozen = FrozenTime(1_000_000.25)
    monkeypatch.setattr("service.web.ratelimit.time.time", frozen)
    return frozen


def test_local_windows_allow_the_limit_then_say_when_the_window_resets(clock: FrozenTime) -> None:
    windows, item = LocalWindows(), parse("3/second")
    assert [windows.hit(item, "k") for _ in range(3)] == [None, None, None]
    assert windows.hit(item, "k") == pytest.approx(0.75)
    assert windows.hit(item, "other") is None
    clock.now += 1
    assert windows.hit(item, "k") is None


def test_local_windows_sweep_ended_windows_when_many_keys_pile_up(
    clock: FrozenTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalWindows, "SWEEP_AT", 10)
    windows, item, daily = LocalWindows(), parse("5/second"), parse("100/day")
    windows.hit(daily, "kept")
    for i in range(10):
        windows.hit(item, f"bad-token-{i}")
    clock.now += 1
    windows.hit(item, "new")
    assert {key for _, key in windows.counts} == {"kept", "new"}


def test_shared_windows_count_the_same_way(clock: FrozenTime) -> None:
    shared, item = SharedWindows("memory://"), parse("2/minute")
    assert [shared.hit(item, "k") is None for _ in range(3)] == [True, True, False]
