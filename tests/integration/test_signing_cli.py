"""`consent signing-key` and `consent verify`: what operators and checkers see, exit codes too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from consent_client import signatures as sig
from service.ledger import signing
from service.reads import signing_keys
from service.runtime.cli import cli
from tests.unit.test_signatures import Key

RECORD = {"@type": "dpv:ConsentRecord", "subject": "u1", "status": "granted"}


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Invoke the CLI on this test's database, as an operator would."""
    monkeypatch.setenv("CONSENT_DATABASE_URL", database_url)
    monkeypatch.setenv("CONSENT_EXPIRY_SWEEP_SECONDS", "0")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def signed(app: Flask, tmp_path: Path) -> dict[str, Path]:
    """A signed record and this ledger's JWKS, saved as files."""
    with app.app_context():
        record = signing.sign_record(RECORD)
        keys = signing_keys.jwks()
    files = {"record": tmp_path / "record.json", "jwks": tmp_path / "jwks.json"}
    files["record"].write_text(json.dumps(record, indent=2))
    files["jwks"].write_text(json.dumps(keys))
    return files


def test_rotate_names_the_new_key_and_until_when_the_old_one_is_published(run: Any) -> None:
    first = run("signing-key", "rotate")
    assert first.exit_code == 0
    assert first.stdout.startswith("Key ")
    assert "signs from now on" in first.stdout
    second = run("signing-key", "rotate")
    assert "retired; published for checking until" in second.stdout
    listed = run("signing-key", "list").stdout.splitlines()
    assert [line.split()[1] for line in listed] == ["signing", "published"]
    docs = json.loads(run("signing-key", "list", "--json").stdout)
    assert [d["state"] for d in docs] == ["signing", "published"]
    assert all(set(d["jwk"]) == {"kty", "crv", "x", "kid", "alg", "use"} for d in docs)


def test_verify_accepts_a_signed_record_against_a_saved_jwks(
    run: Any, signed: dict[str, Path]
) -> None:
    result = run("verify", str(signed["record"]), "--jwks", str(signed["jwks"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("valid: consent record signed by key ")


def test_verify_needs_no_database_when_given_a_jwks_file(
    signed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(
        cli, ["verify", str(signed["record"]), "--jwks", str(signed["jwks"])]
    )
    assert result.exit_code == 0, result.output


def test_verify_without_jwks_checks_against_the_keys_this_ledger_publishes(
    run: Any, signed: dict[str, Path]
) -> None:
    assert run("verify", str(signed["record"])).exit_code == 0


def test_verify_refuses_a_tampered_record_with_exit_4(run: Any, signed: dict[str, Path]) -> None:
    record = json.loads(signed["record"].read_text())
    record["status"] = "denied"
    signed["record"].write_text(json.dumps(record))
    result = run("verify", str(signed["record"]), "--jwks", str(signed["jwks"]))
    assert result.exit_code == 4
    assert result.stderr.startswith("tampered: ")
    assert "changed: status" in result.stderr


def test_verify_refuses_a_record_of_a_key_the_jwks_lacks_with_exit_3(
    run: Any, signed: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps(Key().jwks()))
    result = run("verify", str(signed["record"]), "--jwks", str(other))
    assert result.exit_code == 3
    assert result.stderr.startswith("unknown key: ")


def test_verify_refuses_a_forged_or_unsigned_record_with_exit_1(
    run: Any, signed: dict[str, Path]
) -> None:
    record = json.loads(signed["record"].read_text())
    kid = record["proof"]["kid"]
    forged = sig.sign(RECORD, Key().private, kid, sig.RECORD_TYPE)
    signed["record"].write_text(json.dumps({**record, "proof": {**record["proof"], "jws": forged}}))
    wrong_key = run("verify", str(signed["record"]), "--jwks", str(signed["jwks"]))
    assert wrong_key.exit_code == 1
    assert wrong_key.stderr == f"bad signature: The signature does not verify with key {kid}.\n"
    header = sig.b64url(json.dumps({"alg": "none", "kid": kid, "typ": sig.RECORD_TYPE}).encode())
    unsigned = f"{header}.{sig.b64url(sig.canonical(RECORD))}."
    signed["record"].write_text(
        json.dumps({**record, "proof": {**record["proof"], "jws": unsigned}})
    )
    alg_none = run("verify", str(signed["record"]), "--jwks", str(signed["jwks"]))
    assert alg_none.exit_code == 1
    assert "alg 'none' is refused" in alg_none.stderr


def test_verify_checks_a_snapshot_signature_and_its_file_and_exits_5_on_a_mismatch(
    run: Any, api: Any, tmp_path: Path
) -> None:
    api.purpose(defaults={"*": "granted"})
    for user_id in ("u1", "u2", "u3"):
        api.user(user_id, jurisdiction="US")
    answer = api.call(
        "GET", "/v1/snapshots/model_training/signature?format=ndjson", role="pipeline"
    ).get_json()
    data = api.call(
        "GET",
        f"/v1/snapshots/model_training?format=ndjson&as_of={answer['as_of']}",
        role="pipeline",
    ).get_data()
    files = {name: tmp_path / name for name in ("sig.json", "snap.ndjson", "jwks.json")}
    files["sig.json"].write_text(json.dumps(answer))
    files["snap.ndjson"].write_bytes(data)
    files["jwks.json"].write_text(json.dumps(api.client.get(sig.JWKS_PATH).get_json()))
    args = [str(files["sig.json"]), "--jwks", str(files["jwks.json"])]
    result = run("verify", *args, "--snapshot", str(files["snap.ndjson"]))
    assert result.exit_code == 0, result.output
    assert "3 rows" in result.stdout
    assert "snap.ndjson matches it" in result.stdout
    files["snap.ndjson"].write_bytes(data.replace(b"u2", b"u9"))
    mismatch = run("verify", *args, "--snapshot", str(files["snap.ndjson"]))
    assert mismatch.exit_code == 5
    assert mismatch.stderr.startswith("digest mismatch: snap.ndjson is not the signed snapshot")


def test_verify_cannot_check_what_it_cannot_read_and_exits_2(
    run: Any, signed: dict[str, Path], tmp_path: Path
) -> None:
    missing = run("verify", str(tmp_path / "nope.json"), "--jwks", str(signed["jwks"]))
    assert missing.exit_code == 2
    assert missing.stderr.startswith("cannot check: ")
    no_jwks = run("verify", str(signed["record"]), "--jwks", str(tmp_path / "nope.json"))
    assert no_jwks.exit_code == 2
    assert "cannot be read" in no_jwks.stderr
    record_with_snapshot = run(
        "verify", str(signed["record"]), "--jwks", str(signed["jwks"]), "--snapshot", "x.csv"
    )
    assert record_with_snapshot.exit_code == 2
