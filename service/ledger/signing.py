"""The ledger's signing: its Ed25519 keys (rotation, the first made on first use) and what it signs.

One key signs at a time: the newest unretired one. Rotating retires it (it stops signing and
its private key is wiped) and keeps it published for checking until its expiry, the configured
retention after retirement. Each rotation, the first key's making included, is an event in the
audit feed. The private key never leaves its row but to sign: no answer, event or log holds it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from flask import current_app

from consent_client import signatures
from service.domain.errors import Unavailable
from service.domain.events import SigningKeyRotated
from service.ledger.transaction import Actor, LedgerWrite
from service.reads import decisions, snapshots
from service.reads.consistent import read_transaction
from service.reads.signing_keys import key_document
from service.runtime.extensions import db
from service.runtime.models import SigningKey

log = logging.getLogger(__name__)

CLI_ACTOR = Actor("cli", "admin")
# The key made when something must be signed and none exists yet (so `make run` needs no set-up).
FIRST_USE_ACTOR = Actor("system:signing", "system")


class StoredKey:
    """How a private key is kept in its row: one tag byte, then the key.

    PLAIN: the 32-byte Ed25519 seed. SEALED (with CONSENT_SIGNING_KEY_PASSPHRASE): a scrypt salt,
    an AES-256-GCM nonce and the sealed seed, its kid bound in as associated data, so a sealed
    key moved to another row does not open.
    """

    PLAIN = b"\x00"
    SEALED = b"\x01"
    SALT = 16
    NONCE = 12
    # scrypt at N=2^15, r=8 (32 MiB, about 0.1 s): paid once per key per process (keys are cached).
    SCRYPT_N = 2**15

    @classmethod
    def _kek(cls, passphrase: str, salt: bytes) -> AESGCM:
        kdf = Scrypt(salt=salt, length=32, n=cls.SCRYPT_N, r=8, p=1)
        return AESGCM(kdf.derive(passphrase.encode()))

    @classmethod
    def dump(cls, key: Ed25519PrivateKey, kid: str, passphrase: str | None) -> bytes:
        """The stored form of a key: sealed when a passphrase is set."""
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        if passphrase is None:
            return cls.PLAIN + seed
        salt, nonce = os.urandom(cls.SALT), os.urandom(cls.NONCE)
        sealed = cls._kek(passphrase, salt).encrypt(nonce, seed, kid.encode())
        return cls.SEALED + salt + nonce + sealed

    @classmethod
    def load(cls, blob: bytes, kid: str, passphrase: str | None) -> Ed25519PrivateKey:
        """The key from its stored form; ValueError says why it cannot be read."""
        tag, body = blob[:1], blob[1:]
        if tag == cls.PLAIN:
            return Ed25519PrivateKey.from_private_bytes(body)
        if tag != cls.SEALED:
            raise ValueError("its stored form is not one this version reads")
        if passphrase is None:
            raise ValueError("it is sealed and CONSENT_SIGNING_KEY_PASSPHRASE is not set")
        salt, nonce = body[: cls.SALT], body[cls.SALT : cls.SALT + cls.NONCE]
        try:
            seed = cls._kek(passphrase, salt).decrypt(
                nonce, body[cls.SALT + cls.NONCE :], kid.encode()
            )
        except InvalidTag:
            raise ValueError("CONSENT_SIGNING_KEY_PASSPHRASE does not open it") from None
        return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True, slots=True)
class Signer:
    """The key that signs now, and its kid."""

    kid: str
    key: Ed25519PrivateKey


class LoadedKeys:
    """Private keys already read (and opened) by this app, by kid: a kid names one key for good,
    so a key never needs reading (or its passphrase's scrypt paying) twice."""

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._lock = threading.Lock()

    def get(self, kid: str, blob: bytes, passphrase: str | None) -> Ed25519PrivateKey:
        """The key named kid, read from its stored form the first time."""
        with self._lock:
            key = self._keys.get(kid)
            if key is None:
                key = StoredKey.load(blob, kid, passphrase)
                # Only the signing key is ever needed; an older one is dropped.
                self._keys = {kid: key}
            return key


def _loaded() -> LoadedKeys:
    keys: LoadedKeys = current_app.extensions.setdefault("consent_signing_keys", LoadedKeys())
    return keys


def _passphrase() -> str | None:
    value = current_app.config.get("CONSENT_SIGNING_KEY_PASSPHRASE")
    return str(value) if value else None


def _retention() -> timedelta:
    return timedelta(days=float(current_app.config["CONSENT_SIGNING_KEY_RETENTION_DAYS"]))


def _signing_row() -> sa.Row[str, bytes | None] | None:
    """The kid and stored private key of the key that signs now, if there is one."""
    return db.session.execute(
        sa.select(SigningKey.kid, SigningKey.private_key)
        .where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc(), SigningKey.kid)
        .limit(1)
    ).one_or_none()


def _add_key(w: LedgerWrite) -> SigningKey:
    """A new key, stored in this write's transaction."""
    private = Ed25519PrivateKey.generate()
    jwk = signatures.public_jwk(private.public_key())
    kid = signatures.thumbprint(jwk)
    row = SigningKey(
        kid=kid,
        algorithm=signatures.ALGORITHM,
        public_jwk=jwk,
        private_key=StoredKey.dump(private, kid, _passphrase()),
        created_at=w.at,
    )
    db.session.add(row)
    return row


def rotate(actor: Actor = CLI_ACTOR) -> dict[str, Any]:
    """Make a new signing key; the one before it stops signing (its private key wiped) and stays
    published until the retention after now. Returns the new key's and the retired keys' facts."""
    with LedgerWrite(actor) as w:
        retiring = list(
            db.session.execute(
                sa.select(SigningKey).where(SigningKey.retired_at.is_(None))
            ).scalars()
        )
        expires = w.at + _retention()
        for old in retiring:
            old.retired_at, old.expires_at, old.private_key = w.at, expires, None
        new = _add_key(w)
        db.session.flush()
        previous = max(retiring, key=lambda k: k.created_at, default=None)
        w.append(
            SigningKeyRotated(
                kid=new.kid,
                previous_kid=previous.kid if previous else None,
                previous_expires_at=expires if previous else None,
            )
        )
        docs = {
            "signing": key_document(new, w.at),
            "retired": [key_document(k, w.at) for k in retiring],
        }
    return docs


def _first_key() -> tuple[str, bytes | None]:
    """The signing key, made now if there is none; under the ledger's head lock, so workers
    racing to make the first key make one between them."""
    with LedgerWrite(FIRST_USE_ACTOR) as w:
        row = _signing_row()
        if row is not None:
            return row.kid, row.private_key
        new = _add_key(w)
        w.append(SigningKeyRotated(kid=new.kid))
        made = new.kid, new.private_key
    log.info("made the ledger's first signing key %s", made[0])
    return made


def signer() -> Signer:
    """The key that signs now (made on first use), ready to sign."""
    with read_transaction(consistent=False):
        row = _signing_row()
        kid, blob = (row.kid, row.private_key) if row is not None else (None, None)
    if kid is None:
        kid, blob = _first_key()
    try:
        if blob is None:
            raise ValueError("its private key is gone though it was never retired")
        return Signer(kid, _loaded().get(kid, blob, _passphrase()))
    except ValueError as exc:
        log.error("signing key %s cannot be read: %s", kid, exc)
        raise Unavailable(
            "The ledger cannot sign right now: its signing key cannot be read "
            "(the server log says why).",
            retry_after=60,
        ) from None


def sign_document(payload: dict[str, Any], typ: str = signatures.RECORD_TYPE) -> str:
    """A compact JWS (EdDSA, header {alg, kid, typ}) over the payload's RFC 8785 canonical JSON."""
    s = signer()
    return signatures.sign(payload, s.key, s.kid, typ)


def sign_record(record: dict[str, Any]) -> dict[str, Any]:
    """The signed record: `record` plus its `proof` member, whose `jws` (typ
    consent-record+jws) signs the record's canonical JSON; `consent verify` checks it."""
    s = signer()
    return signatures.seal(
        record, signatures.sign(record, s.key, s.kid, signatures.RECORD_TYPE), s.kid
    )


def sign_snapshot(purpose: str, as_of: str | None, set_name: str, fmt: str) -> dict[str, Any]:
    """The signed digest of the snapshot GET /v1/snapshots/{purpose} answers for the same
    parameters as of the same seq: {purpose, set, format, as_of, sha256, rows, bytes, jws, kid}."""
    seq = decisions.seq_checked(purpose, as_of)
    digest = snapshots.digest(purpose, seq, set_name, fmt)
    claims = {
        "purpose": purpose,
        "set": set_name,
        "format": fmt,
        "as_of": seq,
        "sha256": digest.sha256,
        "rows": digest.rows,
        "bytes": digest.bytes,
    }
    s = signer()
    return {
        **claims,
        "jws": signatures.sign(claims, s.key, s.kid, signatures.SNAPSHOT_TYPE),
        "kid": s.kid,
    }
