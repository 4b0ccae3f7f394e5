"""The ledger's signatures: canonical JSON, compact EdDSA JWS, and checking them offline.

Pure (no Flask, no database): the server signs with it, `consent verify` checks with it, and a
pipeline holding this client can check a record or a snapshot signature against a saved JWKS.

- A signed document's payload is its RFC 8785 (JCS) canonical JSON, so a verifier rebuilds the
  exact signed bytes from the JSON alone.
- The JWS is compact, `alg` EdDSA (Ed25519) only, its header `{"alg", "kid", "typ"}`; the `kid`
  is the key's RFC 7638 JWK thumbprint, the `typ` says what was signed (RECORD_TYPE,
  SNAPSHOT_TYPE), so one kind of signed document never passes for another.
- A signed record is the record's JSON with one more member, `proof`, whose `jws` carries the
  canonical JSON of the record without `proof` as its (attached) payload. Attached rather than
  detached: a changed record then reads as tampered (the signature is good, the document is not
  what was signed) rather than as a mere bad signature.
- A snapshot signature signs `{purpose, set, format, as_of, sha256, rows, bytes}` of the exact
  bytes GET /v1/snapshots/{purpose} answers with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, Final

import httpx
import jwt
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from consent_client.wire import SNAPSHOT_FORMATS

ALGORITHM: Final = "EdDSA"
RECORD_TYPE: Final = "consent-record+jws"
SNAPSHOT_TYPE: Final = "snapshot-digest+jws"
PROOF: Final = "proof"
PROOF_TYPE: Final = "JsonWebSignature"
CANONICALIZATION: Final = "RFC8785"
SNAPSHOT_CLAIMS: Final = ("purpose", "set", "format", "as_of", "sha256", "rows", "bytes")
# The public members of an Ed25519 JWK; nothing else (above all never `d`) is ever published.
PUBLIC_MEMBERS: Final = ("kty", "crv", "x")
JWKS_PATH: Final = "/.well-known/jwks.json"
CHUNK: Final = 1 << 20

_JWS = jwt.PyJWS(options={"verify_signature": True})


class Outcome(IntEnum):
    """What checking a signed file found; the value is `consent verify`'s exit code."""

    VALID = 0
    BAD_SIGNATURE = 1
    CANNOT_CHECK = 2
    UNKNOWN_KEY = 3
    TAMPERED = 4
    DIGEST_MISMATCH = 5


class SignatureProblem(Exception):
    """A signed document or snapshot that does not check out; says why, and the outcome."""

    outcome: ClassVar[Outcome] = Outcome.CANNOT_CHECK

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreadable(SignatureProblem):
    """Not a signed record or snapshot signature, or a JWKS that cannot be read: nothing checked."""


class BadSignature(SignatureProblem):
    """The signature is not one the named key made (or not an EdDSA signature at all)."""

    outcome = Outcome.BAD_SIGNATURE


class UnknownKey(SignatureProblem):
    """The JWS names no key the JWKS holds."""

    outcome = Outcome.UNKNOWN_KEY


class Tampered(SignatureProblem):
    """The signature is good, but the document beside it is not what was signed."""

    outcome = Outcome.TAMPERED


class DigestMismatch(SignatureProblem):
    """The snapshot file is not the snapshot whose digest was signed."""

    outcome = Outcome.DIGEST_MISMATCH


@dataclass(frozen=True, slots=True)
class Digest:
    """A snapshot's SHA-256 (hex), its size in bytes and its number of rows."""

    sha256: str
    bytes: int
    rows: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """A signed file that checked out: what it is, the key that signed it and what was signed."""

    kind: str
    kid: str
    payload: dict[str, Any]
    message: str


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(document: Any) -> bytes:
    """The RFC 8785 (JCS) canonical JSON of a document: the bytes that are signed."""
    return rfc8785.dumps(document)


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK (RFC 8037) of an Ed25519 key: kty, crv and x."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256, base64url): its `kid`."""
    required = {name: jwk[name] for name in PUBLIC_MEMBERS}
    return b64url(hashlib.sha256(canonical(required)).digest())


def published_jwk(jwk: Mapping[str, Any], kid: str) -> dict[str, str]:
    """A key as /.well-known/jwks.json lists it: its public members only, kid, alg and use."""
    return {
        **{name: str(jwk[name]) for name in PUBLIC_MEMBERS},
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def sign(payload: Mapping[str, Any], key: Ed25519PrivateKey, kid: str, typ: str) -> str:
    """A compact JWS over the payload's canonical JSON, header {"alg": "EdDSA", kid, typ}."""
    return _JWS.encode(
        canonical(payload), key, algorithm=ALGORITHM, headers={"kid": kid, "typ": typ}
    )


def seal(record: Mapping[str, Any], jws: str, kid: str) -> dict[str, Any]:
    """The signed record: the record plus its `proof` (the JWS over it, and how to check it)."""
    if PROOF in record:
        raise ValueError(f"a record to sign must not carry a {PROOF!r} member already")
    return {
        **record,
        PROOF: {
            "type": PROOF_TYPE,
            "alg": ALGORITHM,
            "kid": kid,
            "canonicalization": CANONICALIZATION,
            "jwks": JWKS_PATH,
            "jws": jws,
        },
    }


def keys_by_kid(jwks: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The keys of a JWKS document by kid (keys without a kid are left out)."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise Unreadable('The JWKS is not a JSON object with a "keys" list.')
    return {k["kid"]: k for k in keys if isinstance(k, Mapping) and isinstance(k.get("kid"), str)}


def _public_key(jwk: Mapping[str, Any], kid: str) -> Ed25519PublicKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise BadSignature(f"Key {kid} in the JWKS is not an Ed25519 key (kty OKP, crv Ed25519).")
    if jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise BadSignature(f"Key {kid} in the JWKS is for alg {jwk.get('alg')!r}, not EdDSA.")
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"]))
    except (ValueError, binascii.Error):
        raise BadSignature(f"Key {kid} in the JWKS has no valid Ed25519 public key.") from None


def verify(jws: str, jwks: Mapping[str, Any], typ: str | None = None) -> dict[str, Any]:
    """The payload of a compact JWS the ledger signed with a key of the JWKS, or raise why not.

    Only EdDSA is accepted, whatever the header asks (alg `none`, HS256 with a public key's
    bytes as the secret and the like are refused before any key is touched), and only a JWS with
    nothing critical (`crit`, `b64`) in its header. With `typ`, the header must name it.
    """
    header = _header(jws)
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise BadSignature(f"alg {alg!r} is refused: the ledger signs with EdDSA (Ed25519) only.")
    if "crit" in header or "b64" in header:
        raise BadSignature("The JWS header has critical parameters; the ledger never sets any.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("The JWS names no key (no kid in its header).")
    jwk = keys_by_kid(jwks).get(kid)
    if jwk is None:
        raise UnknownKey(f"Key {kid} is not in the JWKS: not a key of this ledger, or expired.")
    try:
        decoded = _JWS.decode_complete(jws, _public_key(jwk, kid), algorithms=[ALGORITHM])
    except jwt.InvalidSignatureError:
        raise BadSignature(f"The signature does not verify with key {kid}.") from None
    except jwt.PyJWTError as exc:
        raise BadSignature(f"The JWS cannot be checked: {exc}.") from None
    if typ is not None and header.get("typ") != typ:
        raise Tampered(
            f"The signature is good but over a {header.get('typ')!r} document, not a {typ!r}."
        )
    try:
        payload = json.loads(decoded["payload"])
    except (ValueError, UnicodeDecodeError):
        raise BadSignature("The signed payload is not JSON.") from None
    if not isinstance(payload, dict):
        raise BadSignature("The signed payload is not a JSON object.")
    return payload


def _header(jws: str) -> dict[str, Any]:
    if not isinstance(jws, str) or jws.count(".") != 2:
        raise BadSignature("The signature is not a compact JWS (three dot-separated parts).")
    try:
        header = jwt.get_unverified_header(jws)
    except jwt.PyJWTError as exc:
        raise BadSignature(f"The JWS header cannot be read: {exc}.") from None
    return header


def check_record(document: Mapping[str, Any], jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The signed content of a signed record, once its proof checks out against the JWKS."""
    proof = document.get(PROOF)
    if not isinstance(proof, Mapping) or not isinstance(proof.get("jws"), str):
        raise Unreadable(f'Not a signed record: no "{PROOF}" member with a "jws".')
    signed = verify(proof["jws"], jwks, typ=RECORD_TYPE)
    content = {name: value for name, value in document.items() if name != PROOF}
    try:
        same = canonical(content) == canonical(signed)
    except rfc8785.CanonicalizationError as exc:
        raise Tampered(f"The record holds a value JSON cannot sign exactly: {exc}.") from None
    if not same:
        changed = sorted(
            name
            for name in content.keys() | signed.keys()
            if name not in content or name not in signed or content[name] != signed[name]
        )
        raise Tampered(
            "The signature is good but the record is not what was signed; changed: "
            + (", ".join(changed) or "number formatting")
            + "."
        )
    return signed


def check_snapshot_signature(
    signature: str | Mapping[str, Any], jwks: Mapping[str, Any]
) -> dict[str, Any]:
    """The signed claims of a snapshot signature (the bare JWS, or the JSON answer of
    GET /v1/snapshots/{purpose}/signature, whose stated claims must be the signed ones)."""
    stated: Mapping[str, Any] = {}
    if isinstance(signature, Mapping):
        stated = signature
        jws = signature.get("jws")
        if not isinstance(jws, str):
            raise Unreadable('Not a snapshot signature: no "jws" member.')
    else:
        jws = signature
    claims = verify(jws, jwks, typ=SNAPSHOT_TYPE)
    missing = [name for name in SNAPSHOT_CLAIMS if name not in claims]
    if missing or claims["format"] not in SNAPSHOT_FORMATS:
        raise BadSignature(f"The signed claims are not a snapshot digest (missing {missing}).")
    changed = [n for n in SNAPSHOT_CLAIMS if n in stated and stated[n] != claims[n]]
    if changed:
        raise Tampered(
            "The signature is good but the answer beside it is not what was signed; changed: "
            + ", ".join(changed)
            + "."
        )
    return claims


def file_digest(path: Path) -> Digest:
    """SHA-256 and size of a file, with its number of lines as rows (see `snapshot_rows`)."""
    hasher = hashlib.sha256()
    size = lines = 0
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            hasher.update(block)
            size += len(block)
            lines += block.count(b"\n")
    return Digest(hasher.hexdigest(), size, lines)


def snapshot_rows(path: Path, fmt: str, lines: int) -> int:
    """The rows of a snapshot file of `lines` lines: CSV's header line is no row, user IDs never
    hold a comma, quote or newline, so every other line is one; Parquet says in its footer."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    return lines - 1 if fmt == "csv" else lines


def check_snapshot_file(claims: Mapping[str, Any], path: Path) -> Digest:
    """The digest of a snapshot file, once it equals the signed one."""
    try:
        digest = file_digest(path)
    except OSError as exc:
        raise Unreadable(f"The snapshot file cannot be read: {exc}.") from None
    if digest.sha256 != claims["sha256"] or digest.bytes != claims["bytes"]:
        raise DigestMismatch(
            f"{path.name} is not the signed snapshot: its SHA-256 is {digest.sha256} "
            f"({digest.bytes} bytes), the signature says {claims['sha256']} "
            f"({claims['bytes']} bytes)."
        )
    rows = snapshot_rows(path, str(claims["format"]), digest.rows)
    if rows != claims["rows"]:
        raise DigestMismatch(
            f"{path.name} has the signed bytes but {rows} rows; the signature says "
            f"{claims['rows']}."
        )
    return Digest(digest.sha256, digest.bytes, rows)


def load_json(source: str) -> Any:
    """JSON from a file, or from an http(s) URL (a JWKS from the ledger, say)."""
    try:
        if source.startswith(("http://", "https://")):
            response = httpx.get(source, timeout=10.0, follow_redirects=True)
            response.raise_for_status()
            return response.json()
        return json.loads(Path(source).read_bytes())
    except ValueError as exc:
        raise Unreadable(f"{source} is not JSON: {exc}.") from None
    except (OSError, httpx.HTTPError) as exc:
        raise Unreadable(f"{source} cannot be read: {exc}.") from None


def check_file(path: Path, jwks: Mapping[str, Any], snapshot: Path | None = None) -> Verdict:
    """Check a signed record, or a snapshot signature (and the snapshot file, if given).

    The file is a signed record (JSON with a `proof`), the JSON answer of the snapshot
    signature endpoint, or a bare compact JWS of a snapshot signature.
    """
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{path} cannot be read: {exc}.") from None
    document: Any = text
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise Unreadable(f"{path} is not JSON: {exc}.") from None
    if isinstance(document, dict) and PROOF in document:
        if snapshot is not None:
            raise Unreadable(f"{path} is a signed record; --snapshot is for snapshot signatures.")
        record = check_record(document, jwks)
        kid = _header(document[PROOF]["jws"])["kid"]
        return Verdict("record", kid, record, f"valid: consent record signed by key {kid}")
    if not (isinstance(document, str) or (isinstance(document, dict) and "jws" in document)):
        raise Unreadable(
            f'{path} is neither a signed record (no "{PROOF}" member) nor a snapshot signature '
            '(no "jws" member, nor a bare JWS).'
        )
    claims = check_snapshot_signature(document, jwks)
    kid = _header(document if isinstance(document, str) else document["jws"])["kid"]
    what = (
        f"snapshot signature of {claims['purpose']} {claims['set']} {claims['format']} "
        f"as of seq {claims['as_of']} ({claims['rows']} rows, sha256 {claims['sha256']}) "
        f"signed by key {kid}"
    )
    if snapshot is None:
        return Verdict("snapshot", kid, claims, f"valid: {what}; no snapshot file compared")
    check_snapshot_file(claims, snapshot)
    return Verdict("snapshot", kid, claims, f"valid: {what}; {snapshot.name} matches it")
