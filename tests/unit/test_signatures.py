"""The ledger's signatures checked offline: what verifies, and the precise reason what does not."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent_client import signatures as sig

RECORD: dict[str, Any] = {
    "@context": {"dpv": "https://w3id.org/dpv#"},
    "@type": "dpv:ConsentRecord",
    "subject": "u-1",
    "purposes": [{"purpose": "model_training", "status": "denied", "weight": 0.5}],
    "name": "Jürgen",
}


class Key:
    """An Ed25519 key with its public JWK and kid, as the ledger makes them."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.jwk = sig.public_jwk(self.private.public_key())
        self.kid = sig.thumbprint(self.jwk)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [sig.published_jwk(self.jwk, self.kid)]}

    def record(self, record: dict[str, Any] = RECORD) -> dict[str, Any]:
        return sig.seal(record, sig.sign(record, self.private, self.kid, sig.RECORD_TYPE), self.kid)


def segments(token: str) -> list[str]:
    return token.split(".")


def b64json(value: dict[str, Any]) -> str:
    return sig.b64url(json.dumps(value).encode())


def test_a_kid_is_the_rfc_7638_thumbprint_of_the_key_as_in_rfc_8037s_example() -> None:
    # RFC 8037, appendix A.3.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert sig.thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_the_signed_payload_is_the_rfc_8785_canonical_json_and_the_header_names_alg_kid_typ() -> (
    None
):
    key = Key()
    token = sig.sign({"b": [1.0, "é"], "a": 1e21}, key.private, key.kid, sig.RECORD_TYPE)
    header, payload, _ = segments(token)
    padded = payload + "=" * (-len(payload) % 4)
    assert base64.urlsafe_b64decode(padded) == '{"a":1e+21,"b":[1,"é"]}'.encode()
    assert jwt.get_unverified_header(token) == {
        "alg": "EdDSA",
        "kid": key.kid,
        "typ": "consent-record+jws",
    }


def test_a_signed_record_is_the_record_plus_a_proof_that_checks_out() -> None:
    key = Key()
    signed = key.record()
    assert {k: v for k, v in signed.items() if k != "proof"} == RECORD
    assert signed["proof"]["kid"] == key.kid
    assert signed["proof"]["alg"] == "EdDSA"
    assert sig.check_record(signed, key.jwks()) == RECORD


def test_a_record_read_back_from_json_text_still_checks_out() -> None:
    key = Key()
    text = json.dumps(key.record(), indent=4, ensure_ascii=True)
    assert sig.check_record(json.loads(text), key.jwks()) == RECORD


def test_a_record_changed_after_signing_is_tampered_and_the_member_is_named() -> None:
    key = Key()
    signed = key.record()
    signed["purposes"][0]["status"] = "granted"
    with pytest.raises(sig.Tampered, match="changed: purposes"):
        sig.check_record(signed, key.jwks())
    added = {**key.record(), "extra": 1}
    with pytest.raises(sig.Tampered, match="changed: extra"):
        sig.check_record(added, key.jwks())


def test_a_proof_whose_signed_payload_was_swapped_is_a_bad_signature() -> None:
    key = Key()
    signed = key.record()
    header, _, signature = segments(signed["proof"]["jws"])
    forged = {**RECORD, "purposes": []}
    signed = {
        **forged,
        "proof": {**signed["proof"], "jws": f"{header}.{b64json(forged)}.{signature}"},
    }
    with pytest.raises(sig.BadSignature, match="does not verify with key"):
        sig.check_record(signed, key.jwks())


def test_a_record_signed_by_a_key_the_jwks_does_not_hold_is_an_unknown_key() -> None:
    with pytest.raises(sig.UnknownKey, match="is not in the JWKS"):
        sig.check_record(Key().record(), Key().jwks())


def test_a_record_signed_by_another_key_under_a_known_kid_is_a_bad_signature() -> None:
    ledger, forger = Key(), Key()
    token = sig.sign(RECORD, forger.private, ledger.kid, sig.RECORD_TYPE)
    with pytest.raises(sig.BadSignature, match=f"does not verify with key {ledger.kid}"):
        sig.check_record(sig.seal(RECORD, token, ledger.kid), ledger.jwks())


def test_alg_none_is_refused() -> None:
    key = Key()
    header = b64json({"alg": "none", "kid": key.kid, "typ": sig.RECORD_TYPE})
    token = f"{header}.{sig.b64url(sig.canonical(RECORD))}."
    with pytest.raises(sig.BadSignature, match="alg 'none' is refused"):
        sig.check_record(sig.seal(RECORD, token, key.kid), key.jwks())


def test_an_hs256_signature_keyed_with_the_public_keys_bytes_is_refused() -> None:
    key = Key()
    secret = base64.urlsafe_b64decode(key.jwk["x"] + "=")
    token = jwt.PyJWS().encode(
        sig.canonical(RECORD),
        secret,
        algorithm="HS256",
        headers={"kid": key.kid, "typ": sig.RECORD_TYPE},
    )
    with pytest.raises(sig.BadSignature, match="alg 'HS256' is refused"):
        sig.check_record(sig.seal(RECORD, token, key.kid), key.jwks())


def test_a_header_with_critical_parameters_is_refused() -> None:
    key = Key()
    token = jwt.PyJWS().encode(
        sig.canonical(RECORD),
        key.private,
        algorithm="EdDSA",
        headers={"kid": key.kid, "typ": sig.RECORD_TYPE, "crit": ["exp"], "exp": 1},
    )
    with pytest.raises(sig.BadSignature, match="critical"):
        sig.verify(token, key.jwks())


def test_a_snapshot_signature_does_not_pass_for_a_record() -> None:
    key = Key()
    token = sig.sign(RECORD, key.private, key.kid, sig.SNAPSHOT_TYPE)
    with pytest.raises(sig.Tampered, match="'snapshot-digest\\+jws' document"):
        sig.check_record(sig.seal(RECORD, token, key.kid), key.jwks())


def test_a_jwks_entry_that_is_not_an_ed25519_key_checks_nothing() -> None:
    key = Key()
    rsa_like = {"keys": [{"kty": "RSA", "kid": key.kid, "n": "AQAB", "e": "AQAB"}]}
    with pytest.raises(sig.BadSignature, match="not an Ed25519 key"):
        sig.check_record(key.record(), rsa_like)
    with pytest.raises(sig.Unreadable, match='"keys" list'):
        sig.check_record(key.record(), {"kid": key.kid})


def test_a_published_key_carries_its_public_members_only() -> None:
    key = Key()
    private_jwk = {**key.jwk, "d": "secret", "p": "x"}
    assert sig.published_jwk(private_jwk, key.kid) == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": key.jwk["x"],
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def snapshot_signature(key: Key, data: bytes, fmt: str, rows: int) -> dict[str, Any]:
    claims = {
        "purpose": "model_training",
        "set": "denied",
        "format": fmt,
        "as_of": 41,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": rows,
        "bytes": len(data),
    }
    return {**claims, "jws": sig.sign(claims, key.private, key.kid, sig.SNAPSHOT_TYPE)}


CSV = b"user_id,basis\r\nu1,default\r\nu2,choice\r\n"


def test_a_snapshot_signature_and_its_snapshot_file_check_out(tmp_path: Path) -> None:
    key = Key()
    (tmp_path / "s.csv").write_bytes(CSV)
    (tmp_path / "sig.json").write_text(json.dumps(snapshot_signature(key, CSV, "csv", 2)))
    verdict = sig.check_file(tmp_path / "sig.json", key.jwks(), tmp_path / "s.csv")
    assert verdict.kind == "snapshot"
    assert verdict.payload["rows"] == 2
    assert "s.csv matches it" in verdict.message
    # The bare JWS is a snapshot signature too.
    (tmp_path / "sig.jws").write_text(snapshot_signature(key, CSV, "csv", 2)["jws"] + "\n")
    assert sig.check_file(tmp_path / "sig.jws", key.jwks(), tmp_path / "s.csv").kid == key.kid


def test_a_snapshot_file_that_is_not_the_signed_one_is_a_digest_mismatch(tmp_path: Path) -> None:
    key = Key()
    (tmp_path / "s.csv").write_bytes(CSV.replace(b"u2", b"u3"))
    (tmp_path / "sig.json").write_text(json.dumps(snapshot_signature(key, CSV, "csv", 2)))
    with pytest.raises(sig.DigestMismatch, match="s.csv is not the signed snapshot"):
        sig.check_file(tmp_path / "sig.json", key.jwks(), tmp_path / "s.csv")


def test_signed_bytes_with_other_rows_than_signed_are_a_digest_mismatch(tmp_path: Path) -> None:
    key = Key()
    (tmp_path / "s.csv").write_bytes(CSV)
    (tmp_path / "sig.json").write_text(json.dumps(snapshot_signature(key, CSV, "csv", 3)))
    with pytest.raises(sig.DigestMismatch, match="2 rows; the signature says 3"):
        sig.check_file(tmp_path / "sig.json", key.jwks(), tmp_path / "s.csv")


def test_an_answer_whose_stated_digest_differs_from_the_signed_one_is_tampered(
    tmp_path: Path,
) -> None:
    key = Key()
    answer = {**snapshot_signature(key, CSV, "csv", 2), "sha256": "0" * 64}
    (tmp_path / "sig.json").write_text(json.dumps(answer))
    with pytest.raises(sig.Tampered, match="changed: sha256"):
        sig.check_file(tmp_path / "sig.json", key.jwks())


def test_a_file_that_is_neither_a_record_nor_a_signature_cannot_be_checked(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(sig.Unreadable, match="neither a signed record"):
        sig.check_file(tmp_path / "x.json", Key().jwks())
    with pytest.raises(sig.Unreadable, match="cannot be read"):
        sig.check_file(tmp_path / "missing.json", Key().jwks())


def test_each_outcome_has_its_own_exit_code() -> None:
    problems = (sig.Unreadable, sig.BadSignature, sig.UnknownKey, sig.Tampered)
    codes = [p.outcome for p in (*problems, sig.DigestMismatch)]
    assert sorted(codes) == [1, 2, 3, 4, 5]
    assert int(sig.Outcome.VALID) == 0
