"""The `consent` command against a real database: keys, purposes, migrations, expiry."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from service.runtime.cli import cli
from tests.factories import bearer


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI on this test's database, as an operator would."""
    monkeypatch.setenv("CONSENT_DATABASE_URL", database_url)
    monkeypatch.setenv("CONSENT_EXPIRY_SWEEP_SECONDS", "0")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_keys_create_prints_the_token_alone_on_its_last_line(
    run: Any, app: Flask, client: Any
) -> None:
    result = run("keys", "create", "--role", "admin", "--name", "ops")
    assert result.exit_code == 0
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("cl_")
    assert " " not in token
    assert client.get("/v1/purposes", headers=bearer(token)).status_code == 200


def test_keys_list_shows_names_and_roles_but_never_tokens(run: Any) -> None:
    token = run("keys", "create", "--role", "pipeline", "--name", "trainer").stdout.split()[-1]
    listed = run("keys", "list").stdout
    assert "trainer" in listed
    assert "pipeline" in listed
    assert token not in listed
    assert '"name": "trainer"' in run("keys", "list", "--json").stdout


def test_a_revoked_key_is_refused_on_the_next_request(run: Any, client: Any) -> None:
    token = run("keys", "create", "--role", "app", "--name", "product").stdout.split()[-1]
    assert client.get("/v1/purposes", headers=bearer(token)).status_code == 200
    assert run("keys", "revoke", "product").exit_code == 0
    refused = client.get("/v1/purposes", headers=bearer(token))
    assert refused.status_code == 401
    assert "revoked" in run("keys", "list").stdout


def test_bad_key_input_is_a_clear_error(run: Any) -> None:
    run("keys", "create", "--role", "app", "--name", "dup")
    dup = run("keys", "create", "--role", "app", "--name", "dup")
    assert dup.exit_code == 2
    assert "exists already" in dup.stderr
    assert run("keys", "create", "--role", "root", "--name", "x").exit_code == 2
    assert run("keys", "revoke", "nobody").exit_code == 2


def test_purposes_create_takes_defaults_as_selector_state_pairs(run: Any) -> None:
    result = run(
        "purposes",
        "create",
        "model_training",
        "--title",
        "Model training",
        "--default",
        "EEA=denied",
        "--default",
        "*=granted",
        "--unknown-subject",
        "denied",
    )
    assert result.exit_code == 0, result.output
    assert '"EEA": "denied"' in result.stdout
    listed = run("purposes", "list").stdout
    assert "model_training" in listed
    assert "unknown_subject=denied" in listed
    bad = run("purposes", "create", "other_purpose", "--title", "x", "--default", "XX=granted")
    assert bad.exit_code == 2
    assert "defaults.XX" in bad.stderr


def test_purposes_create_takes_legal_bases_as_selector_basis_pairs(run: Any) -> None:
    result = run(
        "purposes",
        "create",
        "model_training",
        "--title",
        "Model training",
        "--default",
        "*=granted",
        "--legal-basis",
        "EEA=not_offered",
        "--legal-basis",
        "*=legitimate_interest",
    )
    assert result.exit_code == 0, result.output
    assert '"EEA": "not_offered"' in result.stdout
    listed = run("purposes", "list").stdout
    assert 'legal_bases={"EEA": "not_offered", "*": "legitimate_interest"}' in listed
    bad = run("purposes", "create", "other", "--title", "x", "--legal-basis", "DE=maybe")
    assert bad.exit_code == 2
    assert "legal_bases.DE" in bad.stderr
    unpaired = run("purposes", "create", "other", "--title", "x", "--legal-basis", "DE")
    assert unpaired.exit_code == 2
    assert "EEA=not_offered" in unpaired.stderr


def test_db_upgrade_on_a_database_at_head_is_a_no_op(run: Any) -> None:
    assert run("db", "upgrade").exit_code == 0


def test_overrides_expire_reports_how_many_it_recorded(run: Any) -> None:
    result = run("overrides", "expire")
    assert result.exit_code == 0
    assert "Recorded 0" in result.stdout
