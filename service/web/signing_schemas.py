"""Marshmallow schemas of the signing API: the JWKS and snapshot signatures (api/signing.py)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from consent_client.wire import SNAPSHOT_FORMATS, SNAPSHOT_SETS


class JwkSchema(ma.Schema):
    """One public Ed25519 key (RFC 8037): never a private member."""

    kty = fields.String(metadata={"example": "OKP"})
    crv = fields.String(metadata={"example": "Ed25519"})
    x = fields.String(metadata={"description": "The public key, base64url"})
    kid = fields.String(metadata={"description": "The key's RFC 7638 JWK thumbprint"})
    alg = fields.String(metadata={"example": "EdDSA"})
    use = fields.String(metadata={"example": "sig"})


class JwksSchema(ma.Schema):
    """Every key still valid for checking the ledger's signatures, the signing one first."""

    keys = fields.List(fields.Nested(JwkSchema))


class SnapshotSignatureSchema(ma.Schema):
    """A snapshot's digest, and the JWS (typ snapshot-digest+jws) over its claims."""

    purpose = fields.String()
    set = fields.String(metadata={"enum": list(SNAPSHOT_SETS)})
    format = fields.String(metadata={"enum": list(SNAPSHOT_FORMATS)})
    as_of = fields.Integer(metadata={"description": "The seq the snapshot is as of"})
    sha256 = fields.String(metadata={"description": "SHA-256 (hex) of the snapshot's bytes"})
    rows = fields.Integer(metadata={"description": "Subjects in the snapshot"})
    bytes = fields.Integer(metadata={"description": "Size of the snapshot's bytes"})
    jws = fields.String(
        metadata={
            "description": "Compact JWS (EdDSA) over the RFC 8785 canonical JSON of "
            "{purpose, set, format, as_of, sha256, rows, bytes}"
        }
    )
    kid = fields.String(metadata={"description": "The key that signed, in the JWKS"})
