"""The `consent` command against a real database: keys, purposes, migrations, expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flask import Flask

from service import create_app
from service.runtime.cli import cli
from service.runtime.extensions import db
from tests.conftest import USER_TOKEN_SECRET, app_config
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


def test_tokens_mint_prints_a_user_token_the_server_accepts(
    run: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_USER_TOKEN_SECRET", USER_TOKEN_SECRET)
    result = run("tokens", "mint", "--user", "alice", "--minutes", "2")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["exp"] - claims["iat"]) == ("alice", 120)
    assert token not in result.stderr
    resp = client.get("/v1/me", headers=bearer(token))
    assert resp.get_json()["user_id"] == "alice"


def test_tokens_mint_signs_with_a_private_key_whose_kid_the_jwks_names(
    run: Any, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "user-tokens.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    token = run("tokens", "mint", "--user", "u1", "--key", str(pem), "--kid", "k1").stdout.split()[
        -1
    ]
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": "k1", "typ": "JWT"}
    assert jwt.decode(token, key.public_key(), algorithms=["EdDSA"], audience="consent-ledger")
    assert run("tokens", "mint", "--user", "u1", "--key", str(pem)).exit_code == 2


def test_tokens_mint_falls_back_to_the_development_secret_make_run_trusts(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("CONSENT_INSTANCE_PATH", str(tmp_path))
    monkeypatch.delenv("CONSENT_USER_TOKEN_SECRET", raising=False)
    refused = run("tokens", "mint", "--user", "alice")
    assert refused.exit_code == 2
    assert "No key to mint with" in refused.output
    monkeypatch.setenv("CONSENT_USER_TOKEN_DEV_SECRET", "1")
    minted = run("tokens", "mint", "--user", "alice")
    assert minted.exit_code == 0, minted.output
    assert "DEVELOPMENT secret" in minted.stderr
    assert (tmp_path / "user-token-dev-secret").stat().st_mode & 0o077 == 0
    # The server started as make run starts it trusts it; without the flag it does not.
    dev = create_app({**app_config(database_url), "CONSENT_USER_TOKEN_SECRET": None})
    token = minted.stdout.split()[-1]
    assert dev.test_client().get("/v1/me", headers=bearer(token)).status_code == 200
    monkeypatch.delenv("CONSENT_USER_TOKEN_DEV_SECRET")
    # Once made, the file is found by `consent tokens mint` in another shell as well.
    assert run("tokens", "mint", "--user", "bob").exit_code == 0
    prod = create_app({**app_config(database_url), "CONSENT_USER_TOKEN_SECRET": None})
    assert prod.test_client().get("/v1/me", headers=bearer(token)).status_code == 401
    for app in (dev, prod):
        with app.app_context():
            db.engine.dispose()


def test_tokens_mint_refuses_what_no_server_would_accept(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_USER_TOKEN_SECRET", USER_TOKEN_SECRET)
    assert run("tokens", "mint", "--user", "alice", "--minutes", "16").exit_code == 2
    bad = run("tokens", "mint", "--user", "not a user!")
    assert bad.exit_code == 2
    assert "not a valid user ID" in bad.stderr
