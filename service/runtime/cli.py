"""The `consent` command: keys, database migrations and purposes, so operators need no SQL."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo
from flask_migrate import downgrade as alembic_downgrade
from flask_migrate import upgrade as alembic_upgrade
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from consent_client import signatures
from consent_client.cli import cli as pipeline_cli
from service.domain.errors import ConsentError
from service.domain.imports import RowError
from service.ledger import import_progress, import_source, imports, purposes, signing
from service.ledger import keys as api_keys
from service.reads import signing_keys
from service.reads.state import policies
from service.runtime.extensions import db
from service.runtime.models import ROLES
from service.runtime.readiness import MIGRATIONS_DIR
from service.web import usertokens


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


@cli.group()
def tokens() -> None:
    """User tokens, for development and tests (a product's backend mints its own)."""


@tokens.command("mint")
@click.option("--user", "user_id", required=True, help="The user ID the token is for (its sub).")
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True, max=15),
    default=5,
    show_default=True,
    help="How long it is valid (at most 15).",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign with this private key (PEM: EC P-256, Ed25519 or RSA) whose public half is in "
    "CONSENT_USER_TOKEN_JWKS, rather than with the HS256 secret.",
)
@click.option("--kid", help="The key's kid in the JWKS (needed with --key).")
def tokens_mint(user_id: str, minutes: float, key_file: Path | None, kid: str | None) -> None:
    """Mint a user token and print it alone on the last line."""
    key: Any
    if key_file is not None:
        if not kid:
            raise click.UsageError("--key needs --kid: the JWKS finds the key by its kid.")
        try:
            key, algorithm = usertokens.signing_key_from_pem(key_file.read_bytes())
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--key") from None
    else:
        secret, development = usertokens.minting_secret(current_app)
        if secret is None:
            raise click.UsageError(
                "No key to mint with: set CONSENT_USER_TOKEN_SECRET, pass --key and --kid, or "
                "start the server with CONSENT_USER_TOKEN_DEV_SECRET=1 (make run does)."
            )
        if development:
            click.echo(
                "Signed with the DEVELOPMENT secret in the instance folder (development only).",
                err=True,
            )
        key, algorithm = secret, usertokens.SECRET_ALGORITHM
    try:
        token = usertokens.mint(
            user_id,
            key,
            algorithm=algorithm,
            audience=current_app.config["CONSENT_USER_TOKEN_AUDIENCE"],
            minutes=minutes,
            kid=kid,
        )
    except ConsentError as exc:
        _fail(exc)
    click.echo(f"User token for {user_id!r}, valid for {minutes:g} minutes:", err=True)
    click.echo(token)


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


def _parse_defaults(pairs: tuple[str, ...], example: str = "EEA=denied") -> dict[str, str]:
    defaults: dict[str, str] = {}
    for pair in pairs:
        selector, sep, state = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected SELECTOR=VALUE, e.g. {example}")
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
@click.option(
    "--legal-basis",
    "legal_bases",
    multiple=True,
    metavar="SELECTOR=BASIS",
    help="Legal basis (consent, legitimate_interest, not_offered) by selector; repeatable. "
    "Where none matches: consent.",
)
def purposes_create(
    key: str,
    title: str,
    description: str,
    defaults: tuple[str, ...],
    unknown_subject: str,
    legal_bases: tuple[str, ...],
) -> None:
    """Create purpose KEY with its default policy and legal bases."""
    try:
        doc = purposes.create(
            api_keys.CLI_ACTOR,
            key,
            title,
            description,
            _parse_defaults(defaults),
            unknown_subject,
            _parse_defaults(legal_bases, "EEA=not_offered"),
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
            + (f" legal_bases={json.dumps(dict(policy.legal_bases))}" if policy.legal_bases else "")
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


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000_000),
    default=imports.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows per transaction; each batch is written whole or not at all.",
)
@click.option(
    "--progress",
    "progress_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the rows committed so far are recorded, for a rerun to go on after them "
    "(default: FILE.import-progress.json).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(import_source.FORMATS),
    help="The input's format (default: by the file's extension, .parquet or else CSV).",
)
@click.option(
    "--actor",
    help="The name recorded as the events' actor (default: import:<file name>); role admin.",
)
def import_command(
    file: Path, batch_size: int, progress_path: Path | None, fmt: str | None, actor: str | None
) -> None:
    """Import subjects and their choices from FILE (CSV or Parquet): columns user_id,
    jurisdiction and choice:<purpose> (granted, denied or empty) per purpose.

    Subjects the ledger already has are skipped. Stopped or failed part-way, the same command
    goes on after the last batch committed.
    """
    progress_path = progress_path or import_progress.default_path(file)
    actor = (actor or f"import:{file.name}")[:100]
    try:
        source = import_source.Source.open(file, fmt)
    except ConsentError as exc:
        _fail(exc)
    bar = tqdm(
        total=source.total_rows,
        unit=" rows",
        unit_scale=True,
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
    )
    try:
        summary = imports.import_file(
            source,
            progress_path,
            actor,
            batch_size=batch_size,
            on_batch=lambda outcome: bar.update(outcome.rows),
        )
    except RowError as exc:
        bar.close()
        click.echo(f"error: {exc.detail}", err=True)
        if progress_path.exists():
            click.echo(
                f"Nothing of the batch holding row {exc.row} was written; the batches before it "
                f"are imported ({progress_path} says how many rows). Fix the row, move the "
                "progress file away (it belongs to the file as it was) and run the command "
                "again: the subjects imported already are skipped.",
                err=True,
            )
        else:
            click.echo("Nothing was imported. Fix the row and run the command again.", err=True)
        sys.exit(2)
    except ConsentError as exc:
        bar.close()
        _fail(exc)
    bar.close()
    if not summary.totals.rows and summary.resumed_after:
        click.echo(
            f"Nothing to import: the {summary.resumed_after:,} rows of {file.name} were imported "
            f"before ({progress_path})."
        )
        return
    click.echo(import_summary(summary))


def import_summary(summary: imports.ImportSummary) -> str:
    """The import's one-line summary."""
    t = summary.totals
    resumed = (
        f" after the {summary.resumed_after:,} rows committed before"
        if (summary.resumed_after)
        else ""
    )
    return (
        f"Imported {t.imported:,} subjects ({t.skipped:,} skipped: in the ledger already), "
        f"{t.choices:,} choices, {t.events:,} events from {t.rows:,} rows{resumed} in "
        f"{summary.seconds:.1f} s ({t.rows / max(summary.seconds, 1e-9):,.0f} rows/s)"
        + (f"; ledger head {summary.head}." if summary.head is not None else ".")
    )


@cli.group("signing-key")
def signing_key_group() -> None:
    """Rotate and list the ledger's signing keys (Ed25519; public at /.well-known/jwks.json)."""


@signing_key_group.command("rotate")
def signing_key_rotate() -> None:
    """Make a new signing key; the one before it stops signing and stays published until its
    expiry (CONSENT_SIGNING_KEY_RETENTION_DAYS after now)."""
    try:
        docs = signing.rotate()
    except ConsentError as exc:
        _fail(exc)
    click.echo(f"Key {docs['signing']['kid']} signs from now on.")
    for old in docs["retired"]:
        click.echo(f"Key {old['kid']} retired; published for checking until {old['expires_at']}.")


@signing_key_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def signing_key_list(as_json: bool) -> None:
    """List the signing keys, newest first (public facts only)."""
    docs = signing_keys.list_keys()
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    for d in docs:
        until = f"  until {d['expires_at']}" if d["expires_at"] else ""
        click.echo(f"{d['kid']}  {d['state']:<9}  created {d['created_at']}{until}")


@cli.command("verify", with_appcontext=False)
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--jwks",
    "jwks_source",
    metavar="URL_OR_FILE",
    help="The JWKS to check against: a saved file, or the ledger's "
    f"{signatures.JWKS_PATH} URL. Default: the keys this ledger's database publishes.",
)
@click.option(
    "--snapshot",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With a snapshot signature: the snapshot file, whose SHA-256, size and rows must match.",
)
def verify(file: Path, jwks_source: str | None, snapshot: Path | None) -> None:
    """Check a signed consent record, or a snapshot signature, offline.

    Exit codes: 0 valid, 1 bad signature, 2 cannot check (unreadable file or JWKS),
    3 unknown key, 4 tampered (a good signature over something else), 5 snapshot digest mismatch.
    """
    try:
        jwks = _jwks(jwks_source)
        verdict = signatures.check_file(file, jwks, snapshot)
    except signatures.SignatureProblem as problem:
        label = problem.outcome.name.lower().replace("_", " ")
        click.echo(f"{label}: {problem.message}", err=True)
        sys.exit(problem.outcome.value)
    click.echo(verdict.message)


def _jwks(source: str | None) -> Any:
    """The JWKS from a file or URL, or from this ledger's own database."""
    if source is not None:
        return signatures.load_json(source)
    app = click.get_current_context().ensure_object(ScriptInfo).load_app()
    try:
        with app.app_context():
            return signing_keys.jwks()
    except SQLAlchemyError as exc:
        raise signatures.Unreadable(
            f"This ledger's database cannot be read ({type(exc).__name__}); pass --jwks."
        ) from None


# The pipeline commands belong to the client distribution (consent_client), which pipelines
# install alone; `consent filter` and `consent snapshot` are the very same commands.
for command in pipeline_cli.commands.values():
    cli.add_command(command)
