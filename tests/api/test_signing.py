"""Signatures over HTTP: the JWKS anyone may read, and snapshot digests signed for pipelines."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from consent_client import signatures as sig
from service import create_app
from service.reads import snapshots
from service.runtime.extensions import db
from tests.conftest import app_config
from tests.factories import assert_problem

PURPOSE = "model_training"
FORMATS = ("csv", "ndjson", "parquet")
SETS = ("allowed", "denied")


@pytest.fixture
def world(api: Any) -> None:
    """Subjects in both sets, with choices and an override."""
    api.purpose(defaults={"EEA": "denied", "*": "granted"}, unknown_subject="denied")
    for user_id, jurisdiction in (("B", "US"), ("a", "DE"), ("_", "DE"), ("1", "US"), ("z", "FR")):
        api.user(user_id, jurisdiction=jurisdiction)
    api.choose("_", "granted")
    api.choose("z", "denied")
    assert api.override("1", "denied").status_code == 201


def signature(api: Any, **query: Any) -> dict[str, Any]:
    """A snapshot signature as the pipeline."""
    resp = api.call(
        "GET", f"/v1/snapshots/{PURPOSE}/signature", role="pipeline", query_string=query
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Consent-As-Of"] == str(resp.get_json()["as_of"])
    return dict(resp.get_json())


def snapshot_bytes(api: Any, **query: Any) -> bytes:
    """The bytes of a snapshot as the pipeline downloads them."""
    resp = api.call("GET", f"/v1/snapshots/{PURPOSE}", role="pipeline", query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return bytes(resp.get_data())


def jwks(client: Any) -> dict[str, Any]:
    """The published JWKS, fetched with no key at all."""
    resp = client.get(sig.JWKS_PATH)
    assert resp.status_code == 200
    return dict(resp.get_json())


def head(api: Any) -> int:
    """The ledger head, from the audit feed (which every event reaches)."""
    return int(api.call("GET", "/v1/audit?limit=1").get_json()["head"])


@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_snapshot_signature_signs_the_sha256_and_rows_of_exactly_the_snapshot_bytes(
    api: Any, world: None, client: Any, tmp_path: Path, fmt: str, set_name: str
) -> None:
    signed = signature(api, set=set_name, format=fmt)
    data = snapshot_bytes(api, set=set_name, format=fmt, as_of=signed["as_of"])
    assert signed["sha256"] == hashlib.sha256(data).hexdigest()
    assert signed["bytes"] == len(data)
    assert (signed["purpose"], signed["set"], signed["format"]) == (PURPOSE, set_name, fmt)
    path = tmp_path / f"snapshot.{fmt}"
    path.write_bytes(data)
    claims = sig.check_snapshot_signature(signed, jwks(client))
    assert sig.check_snapshot_file(claims, path).rows == signed["rows"] == claims["rows"]
    assert signed["rows"] == (2 if set_name == "allowed" else 3)


def test_without_as_of_the_signature_is_of_the_head_and_says_which_seq(
    api: Any, world: None
) -> None:
    before = head(api)
    signed = signature(api)
    assert signed["as_of"] == before
    # Made on first use, the signing key's event comes after the seq the snapshot is of.
    assert head(api) == before + 1
    assert snapshot_bytes(api) == snapshot_bytes(api, as_of=before)
    assert signature(api)["as_of"] == before + 1


def test_a_signature_as_of_an_earlier_seq_is_of_that_snapshot_whatever_came_after(
    api: Any, world: None
) -> None:
    pinned = head(api)
    old = snapshot_bytes(api, set="denied", as_of=pinned)
    api.choose("a", "granted")
    api.choose("B", "denied")
    signed = signature(api, set="denied", as_of=pinned)
    assert signed["as_of"] == pinned
    assert signed["sha256"] == hashlib.sha256(old).hexdigest()
    assert signature(api, set="denied")["sha256"] != signed["sha256"]


def test_the_same_snapshot_signed_twice_gives_the_same_jws(api: Any, world: None) -> None:
    first = signature(api, format="parquet")
    assert signature(api, format="parquet", as_of=first["as_of"])["jws"] == first["jws"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"set": "everyone"}, 422),
        ({"format": "xlsx"}, 422),
        ({"as_of": "yesterday"}, 422),
        ({"as_of": "999999"}, 422),
        ({"limit": "3"}, 422),
        # Before the purpose existed.
        ({"as_of": "0"}, 404),
        ({"as_of": "1970-01-01T00:00:00Z"}, 404),
    ],
)
def test_bad_parameters_are_the_snapshots_own_precise_problems(
    api: Any, world: None, query: dict[str, str], status: int
) -> None:
    plain = api.call("GET", f"/v1/snapshots/{PURPOSE}", role="pipeline", query_string=query)
    signed = api.call(
        "GET", f"/v1/snapshots/{PURPOSE}/signature", role="pipeline", query_string=query
    )
    expected = assert_problem(plain, status)
    body = assert_problem(signed, status)
    assert (body["detail"], body.get("errors")) == (expected["detail"], expected.get("errors"))


def test_an_unknown_or_malformed_purpose_is_the_snapshots_own_answer(api: Any, world: None) -> None:
    for purpose, status in (("nothing_here", 404), ("Not-A-Key", 422)):
        plain = api.call("GET", f"/v1/snapshots/{purpose}", role="pipeline")
        signed = api.call("GET", f"/v1/snapshots/{purpose}/signature", role="pipeline")
        assert assert_problem(signed, status)["detail"] == assert_problem(plain, status)["detail"]


def test_only_pipeline_and_admin_keys_may_ask_for_a_signature(
    api: Any, world: None, client: Any
) -> None:
    path = f"/v1/snapshots/{PURPOSE}/signature"
    assert_problem(client.get(path), 401)
    for role in ("app", "support"):
        assert_problem(api.call("GET", path, role=role), 403)
    assert api.call("GET", path, role="admin").status_code == 200


def test_the_jwks_needs_no_key_and_is_empty_until_something_is_signed(client: Any) -> None:
    assert jwks(client) == {"keys": []}


def test_the_jwks_holds_public_parts_only_and_names_the_key_that_signed(
    api: Any, world: None, client: Any
) -> None:
    signed = signature(api)
    keys = jwks(client)["keys"]
    assert [k["kid"] for k in keys] == [signed["kid"]]
    (key,) = keys
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert sig.thumbprint(key) == key["kid"]


def test_the_jwks_is_cacheable_briefly_and_answers_304_to_its_etag(
    api: Any, world: None, client: Any
) -> None:
    signature(api)
    first = client.get(sig.JWKS_PATH)
    assert first.headers["Cache-Control"] == "public, max-age=300"
    etag = first.headers["ETag"]
    again = client.get(sig.JWKS_PATH, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    with api.app.app_context():
        from service.ledger import signing

        signing.rotate()
    changed = client.get(sig.JWKS_PATH, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert len(changed.get_json()["keys"]) == 2


def test_the_first_key_is_an_event_in_the_audit_feed_and_never_in_the_change_feed(
    api: Any, world: None
) -> None:
    signed = signature(api)
    audit = api.call("GET", "/v1/audit?limit=10000").get_json()["events"]
    rotations = [e for e in audit if e["kind"] == "signing_key_rotated"]
    assert len(rotations) == 1
    assert rotations[0]["data"] == {
        "kid": signed["kid"],
        "previous_kid": None,
        "previous_expires_at": None,
    }
    assert (rotations[0]["actor"], rotations[0]["role"]) == ("system:signing", "system")
    feed = api.call("GET", "/v1/changes?limit=10000", role="pipeline").get_json()
    assert "signing_key_rotated" not in {e["kind"] for e in feed["events"]}
    assert feed["head"] == rotations[0]["seq"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_snapshot_is_the_same_bytes_whether_the_index_or_the_database_answers(
    app: Flask, api: Any, world: None, database_url: str, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    # Tiny pages and row groups, so that both paths cut the rows at different places.
    monkeypatch.setattr(snapshots, "PAGE", 2)
    monkeypatch.setattr(snapshots, "ROW_GROUP", 3)
    for n in range(12):
        api.user(f"extra{n}", jurisdiction="US")
    seq = head(api)
    from_index = snapshot_bytes(api, format=fmt, as_of=seq)
    database_only = create_app({**app_config(database_url), "CONSENT_INDEX": "off"})
    try:
        with database_only.app_context():
            from_database = b"".join(snapshots.stream(PURPOSE, seq, "allowed", fmt))
            digest = snapshots.digest(PURPOSE, seq, "allowed", fmt)
    finally:
        with database_only.app_context():
            db.engine.dispose()
    assert from_database == from_index
    assert digest.sha256 == hashlib.sha256(from_index).hexdigest()
    assert digest.rows == 14
