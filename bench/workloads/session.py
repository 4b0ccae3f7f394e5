"""What every workload is handed: the run's profile, its servers, traffic and results."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.databases import BenchDatabase
from bench.population import PURPOSE, Population
from bench.report import Figure, RunResult
from bench.server import Server
from bench.traffic import Traffic


@dataclass(frozen=True)
class Profile:
    """How long and how much each workload runs: the full benchmark or the quick one."""

    name: str
    sizes: tuple[int, ...]
    stream_ids: int
    wrk_seconds: int
    warmup_seconds: int
    stream_time_limit: float
    batch_seconds: float
    single_seconds: float
    sql_seconds: float
    snapshot_time_limit: float
    freshness_trials: int


FULL = Profile(
    name="full",
    sizes=(100_000, 1_000_000, 10_000_000),
    stream_ids=10_000_000,
    wrk_seconds=10,
    warmup_seconds=2,
    stream_time_limit=60.0,
    batch_seconds=10.0,
    single_seconds=5.0,
    sql_seconds=10.0,
    snapshot_time_limit=300.0,
    freshness_trials=10,
)
QUICK = Profile(
    name="quick",
    sizes=(10_000, 100_000),
    stream_ids=1_000_000,
    wrk_seconds=2,
    warmup_seconds=1,
    stream_time_limit=2.0,
    batch_seconds=1.5,
    single_seconds=1.5,
    sql_seconds=1.0,
    snapshot_time_limit=10.0,
    freshness_trials=4,
)


@dataclass
class Session:
    """One database at one N, its running server, the baseline server, and what was measured."""

    result: RunResult
    database: BenchDatabase
    server: Server
    baseline: Server
    traffic: Traffic
    profile: Profile
    pipeline_token: str
    app_token: str
    filter_rates: dict[str, float] = field(default_factory=dict)  # by figure key, for the SQL ratio

    @property
    def population(self) -> Population:
        """The seeded population."""
        return self.traffic.population

    def add(self, figure: Figure) -> Figure:
        """Record a figure and return it."""
        self.result.figures.append(figure)
        return figure

    def lookup_path(self, user_id: str, as_of: int | None = None) -> str:
        """The single-lookup path for an ID."""
        path = f"/v1/lookup/{PURPOSE}/{user_id}"
        return path if as_of is None else f"{path}?as_of={as_of}"
