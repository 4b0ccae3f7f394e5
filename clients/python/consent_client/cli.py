"""The pipeline commands `filter` and `snapshot`: `consent-client`, also mounted in `consent`."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from tqdm import tqdm

from consent_client.client import ConsentClient, ConsentRefused, ConsentUnavailable
from consent_client.datasets import (
    DatasetError,
    RunError,
    RunRequest,
    TimeColumn,
    count_rows,
    filter_file,
    format_of,
)
from consent_client.times import ContentTimeError
from consent_client.wire import RUN_NAME_PATTERN, SNAPSHOT_SETS

T = TypeVar("T")

# Exit codes of `filter` and `snapshot` (documented in the README).
EXIT_USAGE = 2  # a missing option (click's own code), or no key in the --key-env variable
EXIT_INPUT = 3  # the input cannot be read as asked: unreadable, unknown format, no such column,
# or a time (with --time-column) that is none
EXIT_REFUSED = 4  # the service refused: bad key, wrong role, unknown purpose, bad as_of
EXIT_UNAVAILABLE = 5  # the service could not answer after every retry; nothing was written
EXIT_RUN = 6  # filtered and written, but the --run was not registered or its members recorded

url_option = click.option(
    "--url",
    envvar="CONSENT_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The service (or set CONSENT_URL).",
)
key_env_option = click.option(
    "--key-env",
    default="CONSENT_API_KEY",
    show_default=True,
    help="The environment variable holding a pipeline key.",
)
as_of_option = click.option(
    "--as-of", type=int, default=None, help="Answer as of this seq (default: the head)."
)


@click.group()
def cli() -> None:
    """Filter datasets and take snapshots through a Consent Ledger service, failing closed."""


def _exit(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _client(url: str, key_env: str) -> ConsentClient:
    """A client with the pipeline key read from the environment, never from the command line."""
    token = os.environ.get(key_env, "").strip()
    if not token:
        _exit(EXIT_USAGE, f"set {key_env} to a pipeline API key")
    return ConsentClient(url, token)


def _run(action: Callable[[], T]) -> T:
    """Run a client action; map its failures to the documented exit codes."""
    try:
        return action()
    except RunError as exc:  # before ConsentRefused/Unavailable: the output was written
        _exit(EXIT_RUN, f"{exc}; the output and its manifest were written, without the run")
    except (DatasetError, ContentTimeError) as exc:
        _exit(EXIT_INPUT, str(exc))
    except ConsentRefused as exc:
        _exit(EXIT_REFUSED, f"the service refused: {exc}")
    except ConsentUnavailable as exc:
        _exit(EXIT_UNAVAILABLE, f"{exc}; nothing was written")


@cli.command("filter")
@click.option("--purpose", required=True, help="The purpose to filter for.")
@click.option("--column", required=True, help="The column (field) holding user IDs.")
@as_of_option
@key_env_option
@url_option
@click.option("--batch-rows", type=int, default=1_000_000, show_default=True)
@click.option(
    "--run",
    "run_name",
    default=None,
    help="Register a training run of this name at the filter's as_of, with the kept IDs as "
    "its members.",
)
@click.option("--model", default=None, help="The model the run trains (with --run).")
@click.option(
    "--time-column",
    default=None,
    help="The column (field) holding each row's content time, sent with its ID: a timestamp "
    "with a time zone, or RFC 3339 text with an offset (2024-06-01T00:00:00Z). A row whose "
    "time is empty or null is sent without one, and a windowed restriction denies it (fail "
    "closed).",
)
@click.option(
    "--assume-utc",
    is_flag=True,
    help="With --time-column: read times without a zone (a timestamp column without a time "
    "zone, text without an offset) as UTC; without this flag they are refused (exit 3).",
)
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
def filter_command(
    purpose: str,
    column: str,
    as_of: int | None,
    key_env: str,
    url: str,
    batch_rows: int,
    run_name: str | None,
    model: str | None,
    time_column: str | None,
    assume_utc: bool,
    src: Path,
    dst: Path,
) -> None:
    """Keep the rows of SRC (CSV, JSON Lines or Parquet) whose user ID the service allows.

    Writes DST and DST.manifest.json (purpose, as_of, SHA-256 of input and output, counts).
    With --run NAME, then registers the run NAME at that as_of with the input's URI, digest
    and row counts, records the distinct kept IDs as its members, and adds run {id, name,
    model} to the manifest.
    With --time-column COL, each row is decided at its content's time (windowed
    restrictions); the manifest records COL and how many rows went without a time.
    Exit codes: 0 done; 2 usage; 3 input unreadable, column missing, or a bad time (the
    message names its row; rows count from 1, a CSV header not counted; JSON Lines name the
    line); 4 refused by the service; 5 service unavailable after retries (on these nothing is
    written); 6 the output and manifest were written but the run was not registered or its
    members not recorded (the manifest claims no run).
    """
    if model is not None and run_name is None:
        _exit(EXIT_USAGE, "--model names the model of a --run; give --run too")
    if assume_utc and time_column is None:
        _exit(EXIT_USAGE, "--assume-utc reads the times of a --time-column; give one")
    if run_name is not None and not re.fullmatch(RUN_NAME_PATTERN, run_name):
        _exit(EXIT_USAGE, f"--run {run_name!r}: a run name is 1-128 of A-Z a-z 0-9 . _ : -")
    wanted = RunRequest(run_name, model) if run_name is not None else None
    times = TimeColumn(time_column, assume_utc) if time_column is not None else None
    with _client(url, key_env) as client:

        def run() -> Any:
            format_of(src)
            total = count_rows(src) if src.is_file() else None
            # A bar only on a terminal: logs of batch jobs stay clean.
            with tqdm(total=total, unit="rows", unit_scale=True, disable=None) as bar:
                return filter_file(
                    client,
                    purpose=purpose,
                    column=column,
                    src=src,
                    dst=dst,
                    as_of=as_of,
                    progress=bar,
                    batch_rows=batch_rows,
                    run=wanted,
                    times=times,
                )

        summary = _run(run)
    click.echo(f"{summary.line()}; manifest {summary.manifest}", err=True)


@cli.command("snapshot")
@click.option("--purpose", required=True)
@click.option("--set", "which", type=click.Choice(SNAPSHOT_SETS), default=SNAPSHOT_SETS[0])
@as_of_option
@key_env_option
@url_option
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
def snapshot_command(
    purpose: str, which: str, as_of: int | None, key_env: str, url: str, dst: Path
) -> None:
    """Download every known subject in a set to DST (.parquet, .csv or .ndjson), as of one seq.

    Exit codes as for filter.
    """
    with _client(url, key_env) as client:
        result = _run(lambda: client.snapshot(purpose, dst, which, as_of=as_of))
    click.echo(f"{result.bytes:,} bytes to {result.path}, as_of {result.as_of}", err=True)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the `consent-client` console script."""
    return cli.main(args=argv, prog_name="consent-client")
