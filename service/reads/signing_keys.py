"""The ledger's signing keys as readers see them: the JWKS verifiers check with, and their list.

Only public columns are ever selected here; the private key stays in its row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from consent_client.signatures import published_jwk
from service.domain.clock import isoformat, utcnow
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import SigningKey

PUBLIC_COLUMNS = (
    SigningKey.kid,
    SigningKey.algorithm,
    SigningKey.public_jwk,
    SigningKey.created_at,
    SigningKey.retired_at,
    SigningKey.expires_at,
)


def key_state(retired_at: datetime | None, expires_at: datetime | None, now: datetime) -> str:
    """`signing` (the key that signs), `published` (retired, still in the JWKS) or `expired`."""
    if retired_at is None:
        return "signing"
    if expires_at is None or expires_at > now:
        return "published"
    return "expired"


def key_document(row: Any, now: datetime) -> dict[str, Any]:
    """A key's public facts and state; never its private part."""
    return {
        "kid": row.kid,
        "algorithm": row.algorithm,
        "state": key_state(row.retired_at, row.expires_at, now),
        "created_at": isoformat(row.created_at),
        "retired_at": isoformat(row.retired_at),
        "expires_at": isoformat(row.expires_at),
        "jwk": published_jwk(row.public_jwk, row.kid),
    }


def _rows() -> list[Any]:
    with read_transaction(consistent=False):
        return list(
            db.session.execute(
                sa.select(*PUBLIC_COLUMNS).order_by(SigningKey.created_at.desc(), SigningKey.kid)
            )
        )


def list_keys() -> list[dict[str, Any]]:
    """Every signing key the ledger ever had, newest first, expired ones included."""
    now = utcnow()
    return [key_document(row, now) for row in _rows()]


def jwks() -> dict[str, Any]:
    """The JWK Set of every key still valid for checking (the signing one first): public
    members only, kid, alg EdDSA and use sig."""
    now = utcnow()
    return {
        "keys": [
            published_jwk(row.public_jwk, row.kid)
            for row in _rows()
            if key_state(row.retired_at, row.expires_at, now) != "expired"
        ]
    }
