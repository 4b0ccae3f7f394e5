"""The pipeline commands `filter` and `snapshot`: `consent-client`, also mounted in `consent`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from tqdm import tqdm

from consent_client.client import ConsentClient, ConsentRefused, ConsentUnavailable
from consent_client.datasets import DatasetError, count_rows, filter_file, format_of
from consent_client.wire import SNAPSHOT_SETS

T = TypeVar("T")

# Exit codes of `filter` and `snapshot` (documented in the README).
EXIT_USAGE = 2  # a missing option (click's own code), or no key in the --key-env variable
EXIT_INPUT = 3  # the input cannot be read as asked: unreadable, unknown format, no such column
EXIT_REFUSED = 4  # the service refused: bad key, wrong role, unknown purpose, bad as_of
EXIT_UNAVAILABLE = 5  # the service could not answer after every retry; nothing was written

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
    except DatasetError as exc:
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
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
def filter_command(
    purpose: str,
    column: str,
    as_of: int | None,
    key_env: str,
    url: str,
    batch_rows: int,
    src: Path,
    dst: Path,
) -> None:
    """Keep the rows of SRC (CSV, JSON Lines or Parquet) whose user ID the service allows.

    Writes DST and DST.manifest.json (purpose, as_of, SHA-256 of input and output, counts).
    Exit codes: 0 done; 2 usage; 3 input unreadable or column missing; 4 refused by the
    service; 5 service unavailable after retries. On any failure nothing is written.
    """
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
