"""API keys: creating, listing and revoking them, and checking the bearer key of each request."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import current_app, g

from service.domain.clock import isoformat
from service.domain.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from service.domain.events import KeyCreated, KeyRevoked
from service.ledger.transaction import Actor, LedgerWrite
from service.reads.consistent import read_transaction
from service.runtime.extensions import db
from service.runtime.models import ROLES, ApiKey

TOKEN_PREFIX = "cl_"
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")
CLI_ACTOR = Actor("cli", "admin")


def hash_token(token: str) -> str:
    """SHA-256 of a token: tokens are 256-bit random, so a fast hash is enough to store them."""
    return hashlib.sha256(token.encode()).hexdigest()


def key_document(key: ApiKey) -> dict[str, Any]:
    """A key's public facts; never its token or hash."""
    return {
        "name": key.name,
        "role": key.role,
        "created_at": isoformat(key.created_at),
        "revoked_at": isoformat(key.revoked_at),
    }


def create_key(name: str, role: str, actor: Actor = CLI_ACTOR) -> tuple[dict[str, Any], str]:
    """Create a key; return its document and the token, which is never stored or shown again."""
    if not KEY_NAME_RE.fullmatch(name):
        raise ValidationFailed(
            f"{name[:40]!r} is not a valid key name.",
            errors={"name": ["1-100 characters from A-Z a-z 0-9 . _ @ -"]},
        )
    if role not in ROLES:
        raise ValidationFailed(
            f"{role!r} is not a role.", errors={"role": [f"One of {', '.join(ROLES)}."]}
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with LedgerWrite(actor) as w:
        if db.session.execute(sa.select(ApiKey.id).where(ApiKey.name == name)).first():
            raise Conflict(f"A key named {name!r} exists already.")
        key = ApiKey(name=name, role=role, token_hash=hash_token(token), created_at=w.at)
        db.session.add(key)
        w.append(KeyCreated(name=name, role=role))
        doc = key_document(key)
    return doc, token


def active_keys() -> dict[str, tuple[str, str]]:
    """Every active key's (name, role) by token hash, for the per-worker cache."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ApiKey.token_hash, ApiKey.name, ApiKey.role).where(
                ApiKey.revoked_at.is_(None)
            )
        )
        return {r.token_hash: (r.name, r.role) for r in rows}


class KeyCache:
    """Every active key's (name, role) by token hash, held per worker so that checking a key
    needs no database round trip.

    The read index's poll thread reloads it when it applies a key event and marks it current
    at every poll; a cache not marked current within `max_lag` seconds might still hold a
    revoked key, so it then answers nothing and the database is asked instead.
    """

    def __init__(self, max_lag: float) -> None:
        self.max_lag = max_lag
        self.keys: dict[str, tuple[str, str]] | None = None
        self.checked = 0.0

    def reload(self) -> None:
        """Read every active key again (in an app context)."""
        self.keys = active_keys()

    def mark_current(self, when: float) -> None:
        """Note that the ledger had no key event unseen by this cache at `when` (monotonic)."""
        self.checked = when

    def get(self, token_hash: str) -> tuple[str, str] | None:
        """(name, role) of an active key, if the cache is current and holds it."""
        keys = self.keys
        if keys is None or time.monotonic() - self.checked > self.max_lag:
            return None
        return keys.get(token_hash)


def cached_key(token_hash: str) -> tuple[str, str] | None:
    """(name, role) of an active key from this app's key cache, if it can say."""
    cache: KeyCache | None = current_app.extensions.get("consent_keys")
    return cache.get(token_hash) if cache is not None else None


def list_keys() -> list[dict[str, Any]]:
    """Every key, active and revoked, by name."""
    with read_transaction(consistent=False):
        rows = db.session.execute(sa.select(ApiKey).order_by(ApiKey.name)).scalars()
        return [key_document(k) for k in rows]


def revoke_key(name: str, actor: Actor = CLI_ACTOR) -> dict[str, Any]:
    """Revoke a key; the next request made with it is refused."""
    with LedgerWrite(actor) as w:
        key = db.session.execute(sa.select(ApiKey).where(ApiKey.name == name)).scalar_one_or_none()
        if key is None:
            raise NotFound(f"No key named {name!r}.")
        if key.revoked_at is None:
            key.revoked_at = w.at
            w.append(KeyRevoked(name=name, role=key.role))
        doc = key_document(key)
    return doc


def bearer_token(header: str | None, what: str = "an API key") -> str:
    """The token of an 'Authorization: Bearer <token>' header, or a 401 saying what is wrong."""
    if not header:
        raise Unauthorized(f"Send {what} as 'Authorization: Bearer <token>'.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token


def authenticate(
    header: str | None, cache: Callable[[str], tuple[str, str] | None] | None = None
) -> Actor:
    """Return the actor for an Authorization header, or raise 401.

    `cache` maps a token hash to an active key's (name, role) without a database round trip;
    a miss (a key created a moment ago, or none at all) asks the database.
    """
    digest = hash_token(bearer_token(header))
    cached = cache(digest) if cache is not None else None
    if cached is not None:
        return Actor(cached[0], cached[1], g.get("request_id"))
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.select(ApiKey.name, ApiKey.role, ApiKey.token_hash, ApiKey.revoked_at).where(
                ApiKey.token_hash == digest
            )
        ).one_or_none()
    # The lookup is by hash; compare again in constant time so timing says nothing either way.
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
        raise Unauthorized("The API key is not valid or has been revoked.")
    return Actor(row.name, row.role, g.get("request_id"))
