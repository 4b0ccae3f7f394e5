"""Run the benchmark: `python -m bench.run [--quick] [--sizes N ...] [--db postgres|sqlite|both]`.

For each N and database: a fresh database, seeded; the server started as `make run` starts
it; every workload beside its baseline; answers checked; tables printed; bench/RESULTS.md written.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench.databases import KINDS, LABELS, fresh_database
from bench.interference import InterferenceWatch
from bench.population import Population
from bench.report import (
    INTERFERENCE_WARNING,
    RunResult,
    code_version,
    run_table,
    scale_table,
    side_by_side,
    write_results,
)
from bench.server import REPO, Server, gunicorn
from bench.traffic import Traffic
from bench.workloads import (
    arrow_batches,
    batch_lookup,
    consent_filter,
    filter_arrow,
    filter_text,
    freshness,
    imports,
    restrictions,
    runs,
    single_lookup,
    snapshot,
    snapshot_signature,
    spot_check,
    sql_baseline,
    writes,
)
from bench.workloads.session import FULL, QUICK, Profile, Session

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# A quick run is a smoke test: it must not overwrite the recorded full results.
QUICK_RESULTS = Path(__file__).resolve().parent / "RESULTS-quick.md"
SEED_SECONDS_PER_MILLION = 120
READY_SECONDS_PER_MILLION = 60
CPUS = len(os.sched_getaffinity(0))

Workload = Callable[[Session], None]
WORKLOADS: list[tuple[str, Workload]] = [
    ("spot check of single lookups", spot_check.spot_check_lookups),
    ("single lookup vs bare Flask (wrk)", single_lookup.single_lookup),
    ("filter, newline text", filter_text.filter_text),
    ("filter, Arrow int64", partial(filter_arrow.filter_arrow, column="int64")),
    ("filter, Arrow string", partial(filter_arrow.filter_arrow, column="string")),
    ("filter, Arrow int64 in one huge batch", arrow_batches.arrow_batches),
    ("hand-written SQL batches", sql_baseline.sql_baseline),
    ("batch lookup vs one lookup per ID", batch_lookup.batch_lookup),
    ("snapshot, Parquet", snapshot.snapshot_parquet),
    ("snapshot signature", snapshot_signature.snapshot_signature),
    ("consent filter, Parquet file", consent_filter.consent_filter),
    # Places two restrictions and lifts them again before it ends.
    ("restrictions: filters with content times", restrictions.restrictions),
    # These write to the ledger: freshness writes each answer back as it was.
    ("freshness and as_of", freshness.freshness),
    # It revokes members of its run for good, so it comes last.
    ("training runs", runs.training_runs),
    # Choice writes at full speed: they flip thousands of users' states, so they come after
    # every workload that checks answers against the seeded population.
    ("choice writes and a mixed surge", writes.writes),
]


# Workloads with a database and a server of their own (not the seeded population): each takes
# the run's result, the database kind, N and the log folder. They run before the seeding, and a
# run whose --only names none of the seeded workloads seeds nothing.
Standalone = Callable[[RunResult, str, int, Path], None]
STANDALONE: list[tuple[str, Standalone]] = [
    ("day-one import into an empty ledger", imports.day_one_import),
]


def ensure_wrk() -> None:
    """Wrk drives the single-lookup workload; install it with apt-get if it is missing."""
    if shutil.which("wrk"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"], check=False, stdout=subprocess.DEVNULL
        )
    if not shutil.which("wrk"):
        sys.exit("bench needs wrk: install it (Debian/Ubuntu: sudo apt-get install -y wrk)")


def seed(url: str, subjects: int, log_dir: Path) -> dict[str, object]:
    """Seed the database in a child process; return its JSON summary."""
    timeout = 120 + SEED_SECONDS_PER_MILLION * subjects / 1_000_000
    with open(log_dir / f"seed-{subjects}.log", "ab") as log:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.seed",
                "--database-url",
                url,
                "--subjects",
                str(subjects),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"seeding failed ({done.returncode}); see {log_dir}/seed-{subjects}.log")
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


class NothingSeeded(Exception):
    """No selected workload needs the seeded population."""


def selected(only: list[str] | None) -> list[tuple[str, Workload]]:
    """The workloads whose names contain one of `only` (all of them without it)."""
    return [(n, w) for n, w in WORKLOADS if not only or any(o in n for o in only)]


def selected_standalone(only: list[str] | None) -> list[tuple[str, Standalone]]:
    """The standalone workloads whose names contain one of `only` (all without it)."""
    return [(n, w) for n, w in STANDALONE if not only or any(o in n for o in only)]


def run_standalone(result: RunResult, kind: str, log_dir: Path, only: list[str] | None) -> None:
    """Run the selected standalone workloads, each on a database of its own; never raise."""
    for name, workload in selected_standalone(only):
        result.code = result.code or code_version()
        began = time.monotonic()
        print(f"  {name} ...", end=" ", flush=True)
        try:
            workload(result, kind, result.subjects, log_dir)
        except Exception as exc:
            result.check(f"{name}: ran to the end", False, f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        print(f"{time.monotonic() - began:.1f} s", flush=True)


def run_one(
    kind: str,
    traffic: Traffic,
    profile: Profile,
    baseline: Server,
    log_dir: Path,
    watch: InterferenceWatch,
    only: list[str] | None = None,
) -> RunResult:
    """Seed a fresh database of one kind, serve it, run every workload; never raise."""
    subjects = traffic.population.size
    result = RunResult(kind, subjects)
    print(f"\n=== {LABELS[kind]}, N = {subjects:,} ===", flush=True)
    run_started = time.monotonic()
    foreign_before = watch.cpu_seconds()
    try:
        run_standalone(result, kind, log_dir, only)
        if not selected(only):
            raise NothingSeeded
        with fresh_database(kind, subjects) as database:
            started = time.monotonic()
            summary = seed(database.url, subjects, log_dir)
            result.seed_seconds = time.monotonic() - started
            print(f"seeded {summary['events']:,} events in {result.seed_seconds:.1f} s", flush=True)
            result.notes.append(
                f"seeded {subjects:,} subjects / {summary['events']:,} events "
                f"in {result.seed_seconds:.1f} s"
            )
            expected_allowed = int(traffic.population.allowed.sum())
            result.check(
                "seed wrote the population the benchmark expects",
                summary["allowed_subjects"] == expected_allowed,
                f"{summary['allowed_subjects']} allowed seeded vs {expected_allowed}",
            )
            ready_timeout = 60 + READY_SECONDS_PER_MILLION * subjects / 1_000_000
            with gunicorn(
                log_dir,
                f"service-{kind}-{subjects}",
                database_url=database.url,
                ready_timeout=ready_timeout,
            ) as server:
                # The workers have imported the service by now: this is the code being measured.
                result.code = code_version()
                result.notes.append(f"code: {result.code}")
                session = Session(
                    result,
                    database,
                    server,
                    baseline,
                    traffic,
                    profile,
                    str(summary["pipeline_token"]),
                    str(summary["app_token"]),
                )
                for name, workload in selected(only):
                    if not server.alive():
                        result.check(f"{name}: server still running", False, server.log_tail())
                        break
                    began = time.monotonic()
                    print(f"  {name} ...", end=" ", flush=True)
                    try:
                        workload(session)
                    except Exception as exc:
                        result.check(
                            f"{name}: ran to the end", False, f"{type(exc).__name__}: {exc}"
                        )
                        traceback.print_exc()
                    print(f"{time.monotonic() - began:.1f} s", flush=True)
                result.notes.append(
                    f"workers' RSS at the end: {server.workers_rss() / (1 << 20):,.0f} MiB"
                )
                for error, count in server.logged_errors().items():
                    result.notes.append(f"THE SERVER LOGGED {count}× `{error}`")
                    print(f"!!! the server logged {count}× {error}", flush=True)
    except NothingSeeded:
        pass
    except Exception as exc:
        result.check("seed, serve and measure", False, f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    foreign = watch.cpu_seconds() - foreign_before
    share = foreign / ((time.monotonic() - run_started) * CPUS)
    result.foreign_cpu_share = share
    print(f"other processes took {share:.1%} of the CPUs during this run", flush=True)
    if share >= INTERFERENCE_WARNING:
        result.notes.append(
            f"OTHER PROCESSES used {foreign:,.0f} CPU-seconds ({share:.0%} of the machine) "
            "during this run: its figures are understated"
        )
        print(f"!!! other processes used {share:.0%} of the CPUs during this run", flush=True)
    print(run_table(result), flush=True)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--quick", action="store_true", help="small N and short durations (under 2 minutes)"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="N subjects to seed (default by profile)"
    )
    parser.add_argument("--db", choices=(*KINDS, "both"), default="both")
    parser.add_argument("--stream-ids", type=int, help="IDs each streamed filter sends")
    parser.add_argument(
        "--only",
        nargs="+",
        help="run only the workloads whose names contain one of these words (e.g. runs)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"where to write the results (default {RESULTS.name}, quick: {QUICK_RESULTS.name})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every size on every chosen database, print tables, write RESULTS.md."""
    args = parse_args(argv)
    profile = QUICK if args.quick else FULL
    sizes = tuple(args.sizes or profile.sizes)
    kinds = KINDS if args.db == "both" else (args.db,)
    stream_ids = args.stream_ids or profile.stream_ids
    output: Path = args.output or (QUICK_RESULTS if args.quick else RESULTS)
    command = f"python -m bench.run {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    ensure_wrk()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix="consent-bench-logs-"))
    results: list[RunResult] = []
    shown_sizes = ", ".join(f"{n:,}" for n in sizes)
    shown_kinds = ", ".join(LABELS[k] for k in kinds)
    print(f"{profile.name} benchmark: N in {shown_sizes} on {shown_kinds}; logs in {log_dir}")
    watch = InterferenceWatch()
    watch.start()
    interrupted = False
    try:
        with gunicorn(log_dir, "baseline", app="bench.baseline_app:app") as baseline:
            for subjects in sizes:
                population = Population.generate(subjects)
                traffic = Traffic.build(population, stream_ids)
                for kind in kinds:
                    results.append(
                        run_one(kind, traffic, profile, baseline, log_dir, watch, args.only)
                    )
    except KeyboardInterrupt:
        # Servers are stopped and databases dropped by now; keep what was measured.
        interrupted = True
        print("\ninterrupted: writing the runs that finished", flush=True)
    finally:
        interference = watch.stop()
    if interrupted and results:
        results[-1].notes.append("the benchmark was interrupted after this run")
    seconds = time.monotonic() - started
    _, all_ok = write_results(
        output, results, command, started_at, seconds, args.quick, interference
    )
    print()
    for subjects in sizes:
        print(f"--- N = {subjects:,} ---")
        print(side_by_side(results, subjects))
    print("--- scale ---")
    print(scale_table(results)[0])
    print(f"\n{profile.name} benchmark took {seconds:.0f} s; results in {output}")
    if len({r.code for r in results if r.code}) > 1:
        print(
            "\n!!! the service's code changed while the benchmark ran: runs measured different code"
        )
    if interrupted:
        return 130
    if not all_ok:
        failures = [(r, c) for r in results for c in r.checks if not c.ok]
        print(f"\n!!! {len(failures)} CORRECTNESS CHECKS FAILED — do not trust these figures:")
        for r, c in failures:
            print(f"!!!   [{r.label}, N={r.subjects:,}] {c.what}: {c.detail}")
        print(f"server logs kept in {log_dir}")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
