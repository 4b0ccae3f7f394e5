"""GET /v1/me/record: the user's consent record (JSON-LD, DPV terms), signed, checked offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consent_client import signatures as sig
from service.domain import consent_record
from service.runtime.cli import cli
from tests.factories import Api, assert_problem, bearer, ledger_state, user_token


@pytest.fixture
def world(api: Api) -> Api:
    """Model training (consent, off by default in the EEA), ads on legitimate interest, alice in
    Germany who granted and then withdrew model training."""
    api.purpose()
    resp = api.call(
        "POST",
        "/v1/purposes",
        json={
            "key": "ads",
            "title": "Personalised ads",
            "description": "Ads chosen from what you post.",
            "defaults": {"*": "granted"},
            "legal_bases": {"*": "legitimate_interest"},
        },
    )
    assert resp.status_code == 201, resp.get_json()
    api.user("alice", jurisdiction="DE")
    for state in ("granted", "denied"):
        put = own(api, "PUT", "/v1/me/consents/model_training", json={"state": state})
        assert put.status_code == 200, put.get_json()
    return api


def own(api: Api, method: str, path: str, user: str = "alice", **kwargs: Any) -> Any:
    """A request as the user, with a fresh token for them."""
    headers = bearer(user_token(user), **kwargs.pop("headers", {}))
    return api.client.open(path, method=method, headers=headers, **kwargs)


def entry(record: dict[str, Any], purpose: str) -> dict[str, Any]:
    [found] = [c for c in record["consents"] if c["purpose"]["key"] == purpose]
    return dict(found)


def test_the_record_is_a_dpv_consent_record_of_the_user_as_of_one_seq(world: Api) -> None:
    resp = own(world, "GET", "/v1/me/record")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "application/ld+json"
    assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
    record = json.loads(resp.get_data(as_text=True))
    assert record["@context"]["dpv"] == "https://w3id.org/dpv#"
    assert record["@type"] == "dpv:ConsentRecord"
    assert record["subject"] == {
        "@type": "dpv:DataSubject",
        "user_id": "alice",
        "jurisdiction": "DE",
        "erased": False,
    }
    assert record["as_of"] == own(world, "GET", "/v1/me").get_json()["as_of"]
    assert record["issued"].endswith("Z")


def test_each_purpose_carries_its_status_legal_basis_reason_and_events(world: Api) -> None:
    record = json.loads(own(world, "GET", "/v1/me/record").get_data(as_text=True))
    training = entry(record, "model_training")
    assert training["legal_basis"] == "dpv:Consent"
    assert training["status"] == "dpv:ConsentWithdrawn"
    assert training["explanation"]["text"] == "Off — you turned it off"
    assert [
        (e["before"], e["after"], e["actor"])
        for e in training["events"]
        if e["actor"] == "user:alice"
    ] == [
        ("denied", "granted", "user:alice"),
        ("granted", "denied", "user:alice"),
    ]
    ads = entry(record, "ads")
    assert (ads["legal_basis"], ads["objection"], ads["basis"]) == (
        "dpv:LegitimateInterest",
        "cl:NoObjection",
        "default",
    )
    assert "status" not in ads
    assert [e["kind"] for e in ads["events"]] == ["subject_registered"]


def test_a_refusal_never_preceded_by_a_grant_is_refused_not_withdrawn(api: Api) -> None:
    api.purpose()
    own(api, "PUT", "/v1/me/consents/model_training", user="carol", json={"state": "denied"})
    record = json.loads(own(api, "GET", "/v1/me/record", user="carol").get_data(as_text=True))
    assert entry(record, "model_training")["status"] == "dpv:ConsentRefused"


def test_a_user_never_seen_gets_a_record_of_unknown_consent_and_nothing_is_written(
    api: Api,
) -> None:
    api.purpose()
    own(api, "GET", "/v1/me/record", user="nobody")  # the first signature makes the key
    before = ledger_state(api.app)
    record = json.loads(own(api, "GET", "/v1/me/record", user="nobody").get_data(as_text=True))
    assert entry(record, "model_training")["status"] == consent_record.UNKNOWN
    assert ledger_state(api.app) == before


def test_the_record_checks_against_the_published_jwks(world: Api) -> None:
    record = json.loads(own(world, "GET", "/v1/me/record").get_data(as_text=True))
    jwks = world.client.get(sig.JWKS_PATH).get_json()
    checked = sig.check_record(record, jwks)
    assert checked["subject"]["user_id"] == "alice"
    assert record["proof"]["kid"] in {k["kid"] for k in jwks["keys"]}


def verify(record: Path, jwks: Path) -> Any:
    return CliRunner().invoke(cli, ["verify", str(record), "--jwks", str(jwks)])


def test_consent_verify_accepts_the_download_and_refuses_a_tampered_copy(
    world: Api, tmp_path: Path
) -> None:
    body = own(world, "GET", "/v1/me/record").get_data(as_text=True)
    saved, keys = tmp_path / "record.jsonld", tmp_path / "jwks.json"
    saved.write_text(body)
    keys.write_text(world.client.get(sig.JWKS_PATH).get_data(as_text=True))
    accepted = verify(saved, keys)
    assert accepted.exit_code == 0, accepted.output

    tampered = json.loads(body)
    for consent in tampered["consents"]:
        consent["status"] = "dpv:ConsentGiven"
    forged = tmp_path / "forged.jsonld"
    forged.write_text(json.dumps(tampered))
    refused = verify(forged, keys)
    assert refused.exit_code == sig.Outcome.TAMPERED.value, refused.output


def test_the_record_needs_a_user_token_and_an_api_key_is_refused(world: Api) -> None:
    assert_problem(world.client.get("/v1/me/record"), 401)
    resp = world.call("GET", "/v1/me/record", role="app")
    assert resp.status_code in (401, 403)


def test_gpc_on_the_record_is_honoured_and_the_record_shows_it(api: Api) -> None:
    created = api.call(
        "POST",
        "/v1/purposes",
        json={
            "key": "model_training",
            "title": "Model training",
            "defaults": {"*": "granted"},
            "honours_gpc": True,
        },
    )
    assert created.status_code == 201, created.get_json()
    resp = own(api, "GET", "/v1/me/record", headers={"Sec-GPC": "1"})
    assert resp.status_code == 200
    record = json.loads(resp.get_data(as_text=True))
    training = entry(record, "model_training")
    assert (training["allowed"], training["status"]) == (False, "dpv:ConsentRefused")
    assert resp.headers["Consent-GPC-Recorded"] == "model_training"
