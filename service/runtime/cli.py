"""The `consent` command: keys, database migrations and purposes, so operators need no SQL."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup
from flask_migrate import downgrade as alembic_downgrade
from flask_migrate import upgrade as alembic_upgrade

from service.domain.errors import ConsentError
from service.ledger import keys as api_keys
from service.ledger import purposes
from service.reads.state import policies
from service.runtime.extensions import db
from service.runtime.models import ROLES
from service.runtime.readiness import MIGRATIONS_DIR


def _create_app() -> Flask:
    from service import create_app

    app = create_app()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        # Close pooled connections when the command ends, rather than leaving them to the GC.
        ctx.call_on_close(lambda: _dispose(app))
    return app


def _dispose(app: Flask) -> None:
    with app.app_context():
        db.engine.dispose()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False)
def cli() -> None:
    """Consent Ledger administration."""


def _fail(error: ConsentError) -> None:
    click.echo(f"error: {error.detail}", err=True)
    if error.errors:
        for name, msgs in error.errors.items():
            click.echo(f"  {name}: {' '.join(msgs) if isinstance(msgs, list) else msgs}", err=True)
    sys.exit(2)


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES), help="What the key may do.")
@click.option("--name", required=True, help="Unique name; it is recorded as the actor.")
def keys_create(role: str, name: str) -> None:
    """Create a key and print its token once, alone on the last line."""
    try:
        doc, token = api_keys.create_key(name, role)
    except ConsentError as exc:
        _fail(exc)
    click.echo(
        f"Created {doc['role']} key {doc['name']!r}. The token is shown only once:", err=True
    )
    click.echo(token)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(as_json: bool) -> None:
    """List keys (never their tokens)."""
    docs = api_keys.list_keys()
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    for d in docs:
        state = f"revoked {d['revoked_at']}" if d["revoked_at"] else "active"
        click.echo(f"{d['name']:<30} {d['role']:<9} created {d['created_at']}  {state}")


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key; once this returns, every worker refuses it."""
    try:
        doc = api_keys.revoke_key(name)
    except ConsentError as exc:
        _fail(exc)
    # A worker trusts its key cache for at most the index's max lag, then asks the database
    # again; waiting that long (plus a margin) means no worker anywhere still accepts the key.
    wait = float(current_app.config["CONSENT_INDEX_MAX_LAG_SECONDS"]) + 0.1
    time.sleep(wait)
    click.echo(
        f"Revoked key {doc['name']!r} at {doc['revoked_at']}; every worker refuses it "
        f"(waited {wait:.1f} s for their key caches)."
    )


@cli.group("db")
def db_group() -> None:
    """Database schema migrations."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the schema up to REVISION (default: head)."""
    alembic_upgrade(directory=str(MIGRATIONS_DIR), revision=revision)


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the schema down to REVISION ('base' removes everything)."""
    alembic_downgrade(directory=str(MIGRATIONS_DIR), revision=revision)


def _parse_defaults(pairs: tuple[str, ...]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for pair in pairs:
        selector, sep, state = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected SELECTOR=STATE, e.g. EEA=denied")
        defaults[selector.strip()] = state.strip()
    return defaults


@cli.group("purposes")
def purposes_group() -> None:
    """Create and list purposes."""


@purposes_group.command("create")
@click.argument("key")
@click.option("--title", required=True)
@click.option("--description", default="")
@click.option(
    "--default",
    "defaults",
    multiple=True,
    metavar="SELECTOR=STATE",
    help="Default state by country code, region group (EEA) or '*'; repeatable.",
)
@click.option("--unknown-subject", type=click.Choice(["granted", "denied"]), default="denied")
def purposes_create(
    key: str, title: str, description: str, defaults: tuple[str, ...], unknown_subject: str
) -> None:
    """Create purpose KEY with its default policy."""
    try:
        doc = purposes.create(
            api_keys.CLI_ACTOR, key, title, description, _parse_defaults(defaults), unknown_subject
        )
    except ConsentError as exc:
        _fail(exc)
    click.echo(json.dumps(doc, indent=2))


@purposes_group.command("list")
def purposes_list() -> None:
    """List purposes and their default policies."""
    for key, policy in policies().items():
        click.echo(
            f"{key}: defaults={json.dumps(dict(policy.defaults))} "
            f"unknown_subject={policy.unknown_subject}"
        )


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the `consent` console script."""
    return cli.main(args=argv, prog_name="consent")


@cli.group("overrides")
def overrides_group() -> None:
    """Override maintenance."""


@overrides_group.command("expire")
def overrides_expire() -> None:
    """Record every override whose expiry has passed (the server also does this on a timer)."""
    from service.ledger import overrides

    click.echo(f"Recorded {overrides.expire_due()} override expiries.")


@cli.group("idempotency")
def idempotency_group() -> None:
    """Idempotency-record maintenance."""


@idempotency_group.command("prune")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Records deleted per transaction.",
)
def idempotency_prune(batch_size: int) -> None:
    """Delete the idempotency records older than the TTL (the server also does this on a timer)."""
    from service.ledger import idempotency

    deleted = idempotency.prune(batch_size=batch_size)
    hours = current_app.config["CONSENT_IDEMPOTENCY_TTL_HOURS"]
    click.echo(f"Pruned {deleted} idempotency records older than {hours:g} hours.")


# ------------------------------------------------------------------ the pipeline side

# Exit codes of `consent filter` and `consent snapshot` (documented in README).
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


def _client(url: str, key_env: str) -> Any:
    from consent_client import ConsentClient

    token = os.environ.get(key_env, "").strip()
    if not token:
        click.echo(f"error: set {key_env} to a pipeline API key", err=True)
        sys.exit(2)
    return ConsentClient(url, token)


def _run_pipeline_command(action: Any) -> Any:
    """Run a client action; map its failures to the documented exit codes."""
    from consent_client import ConsentRefused, ConsentUnavailable
    from consent_client.datasets import DatasetError

    try:
        return action()
    except DatasetError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    except ConsentRefused as exc:
        click.echo(f"error: the service refused: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
    except ConsentUnavailable as exc:
        click.echo(f"error: {exc}; nothing was written", err=True)
        sys.exit(EXIT_UNAVAILABLE)


@cli.command("filter", with_appcontext=False)
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
    from tqdm import tqdm

    from consent_client.datasets import count_rows, filter_file, format_of

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

        summary = _run_pipeline_command(run)
    click.echo(f"{summary.line()}; manifest {summary.manifest}", err=True)


@cli.command("snapshot", with_appcontext=False)
@click.option("--purpose", required=True)
@click.option("--set", "which", type=click.Choice(["allowed", "denied"]), default="allowed")
@as_of_option
@key_env_option
@url_option
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
def snapshot_command(
    purpose: str, which: str, as_of: int | None, key_env: str, url: str, dst: Path
) -> None:
    """Download every known subject in a set to DST (.parquet, .csv or .ndjson), as of one seq.

    Exit codes as for `consent filter`.
    """
    with _client(url, key_env) as client:
        result = _run_pipeline_command(lambda: client.snapshot(purpose, dst, which, as_of=as_of))
    click.echo(f"{result.bytes:,} bytes to {result.path}, as_of {result.as_of}", err=True)
