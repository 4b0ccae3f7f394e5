"""The ledger's signing keys on a real database: rotation, first use under concurrency, sealing."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from flask import Flask

import service.reads.signing_keys
from consent_client import signatures as sig
from service import create_app
from service.domain.errors import Unavailable
from service.ledger import signing
from service.reads import changes
from service.runtime.extensions import db
from service.runtime.models import Event, SigningKey
from tests.conftest import app_config

RECORD = {"@type": "dpv:ConsentRecord", "subject": "u1", "status": "granted"}
RACERS = 8


def stored_keys(app: Flask) -> list[SigningKey]:
    """Every signing-key row, oldest first."""
    with app.app_context():
        rows = list(
            db.session.execute(sa.select(SigningKey).order_by(SigningKey.created_at))
            .scalars()
            .all()
        )
        db.session.expunge_all()
        db.session.rollback()
    return rows


def rotations(app: Flask) -> list[dict[str, Any]]:
    """The data of every signing_key_rotated event, in order."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(Event.data).where(Event.kind == "signing_key_rotated").order_by(Event.seq)
        ).all()
        db.session.rollback()
    return [dict(r.data) for r in rows]


@pytest.fixture
def sealed_app(database_url: str) -> Iterator[Flask]:
    """The app with a signing-key passphrase."""
    app = create_app({**app_config(database_url), "CONSENT_SIGNING_KEY_PASSPHRASE": "correct"})
    yield app
    with app.app_context():
        db.engine.dispose()


def test_rotating_makes_a_new_signing_key_and_what_the_old_one_signed_still_checks_out(
    app: Flask,
) -> None:
    with app.app_context():
        old = signing.sign_record(RECORD)
        docs = signing.rotate()
        new = signing.sign_record(RECORD)
        published = service.reads.signing_keys.jwks()
    old_kid, new_kid = old["proof"]["kid"], new["proof"]["kid"]
    assert docs["signing"]["kid"] == new_kid != old_kid
    assert [d["kid"] for d in docs["retired"]] == [old_kid]
    assert [k["kid"] for k in published["keys"]] == [new_kid, old_kid]
    assert sig.check_record(old, published) == RECORD
    assert sig.check_record(new, published) == RECORD
    retired, current = stored_keys(app)
    assert retired.private_key is None
    assert retired.retired_at is not None
    assert retired.expires_at == retired.retired_at + timedelta(days=400)
    assert current.retired_at is None
    assert current.private_key is not None
    assert rotations(app)[-1] == {
        "kid": new_kid,
        "previous_kid": old_kid,
        "previous_expires_at": docs["retired"][0]["expires_at"],
    }


def test_a_retired_key_leaves_the_jwks_once_its_retention_has_passed(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        old = signing.sign_record(RECORD)
        signing.rotate()
        expires = stored_keys(app)[0].expires_at
        assert expires is not None
        monkeypatch.setattr(service.reads.signing_keys, "utcnow", lambda: expires)
        published = service.reads.signing_keys.jwks()
        states = {d["kid"]: d["state"] for d in service.reads.signing_keys.list_keys()}
    assert old["proof"]["kid"] not in {k["kid"] for k in published["keys"]}
    assert states[old["proof"]["kid"]] == "expired"
    assert list(states.values()).count("signing") == 1
    with pytest.raises(sig.UnknownKey):
        sig.check_record(old, published)


def test_the_retention_comes_from_the_configuration(database_url: str) -> None:
    app = create_app({**app_config(database_url), "CONSENT_SIGNING_KEY_RETENTION_DAYS": 30.0})
    with app.app_context():
        signing.rotate()
        signing.rotate()
    retired = stored_keys(app)[0]
    with app.app_context():
        db.engine.dispose()
    assert retired.retired_at is not None
    assert retired.expires_at == retired.retired_at + timedelta(days=30)


def test_workers_racing_to_sign_first_make_one_key_between_them(database_url: str) -> None:
    # One app per racer, like gunicorn workers: each its own engine, pool and key cache.
    apps = [create_app(app_config(database_url)) for _ in range(RACERS)]
    start = threading.Barrier(RACERS)

    def sign_first(app: Flask) -> str:
        with app.app_context():
            start.wait()
            return signing.signer().kid

    try:
        with ThreadPoolExecutor(max_workers=RACERS) as pool:
            kids = list(pool.map(sign_first, apps))
        stored, rotated = stored_keys(apps[0]), rotations(apps[0])
    finally:
        for app in apps:
            with app.app_context():
                db.engine.dispose()
    assert len(set(kids)) == 1
    assert [k.kid for k in stored] == kids[:1]
    assert rotated == [{"kid": kids[0], "previous_kid": None, "previous_expires_at": None}]


def test_a_rotation_is_in_the_audit_feed_only(app: Flask) -> None:
    with app.app_context():
        signing.rotate()
        signing.rotate()
        audit = changes.audit(0, 100)["events"]
        feed = changes.changes(0, None, 100)["events"]
    assert [e["kind"] for e in audit] == ["signing_key_rotated", "signing_key_rotated"]
    assert [(e["actor"], e["role"]) for e in audit] == [("cli", "admin")] * 2
    assert feed == []


def test_with_a_passphrase_the_private_key_is_stored_sealed_and_opens_only_with_it(
    sealed_app: Flask, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with sealed_app.app_context():
        signed = signing.sign_record(RECORD)
        published = service.reads.signing_keys.jwks()
    assert sig.check_record(signed, published) == RECORD
    (row,) = stored_keys(sealed_app)
    assert row.private_key is not None
    assert row.private_key[:1] == signing.StoredKey.SEALED
    for passphrase in (None, "wrong"):
        other = create_app(
            {**app_config(database_url), "CONSENT_SIGNING_KEY_PASSPHRASE": passphrase}
        )
        with other.app_context(), caplog.at_level(logging.ERROR):
            with pytest.raises(Unavailable, match="cannot sign right now"):
                signing.sign_document(RECORD)
            db.engine.dispose()
    assert "CONSENT_SIGNING_KEY_PASSPHRASE is not set" in caplog.text
    assert "CONSENT_SIGNING_KEY_PASSPHRASE does not open it" in caplog.text


def test_a_sealed_key_moved_to_another_row_does_not_open(sealed_app: Flask) -> None:
    with sealed_app.app_context():
        signing.rotate()
        (row,) = stored_keys(sealed_app)
        assert row.private_key is not None
        with pytest.raises(ValueError, match="does not open it"):
            signing.StoredKey.load(row.private_key, "another-kid", "correct")
        key = signing.StoredKey.load(row.private_key, row.kid, "correct")
    assert sig.thumbprint(sig.public_jwk(key.public_key())) == row.kid


def test_the_private_key_is_in_no_answer_event_or_log_line(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with app.app_context(), caplog.at_level(logging.DEBUG):
        signing.sign_record(RECORD)
        (row,) = stored_keys(app)
        assert row.private_key is not None
        seed = row.private_key[1:]
        said = [
            signing.rotate(),
            service.reads.signing_keys.jwks(),
            service.reads.signing_keys.list_keys(),
            changes.audit(0, 100),
        ]
    text = json.dumps(said) + caplog.text
    assert len(seed) == 32
    for form in (sig.b64url(seed), seed.hex(), seed.hex().upper()):
        assert form not in text
    assert '"d"' not in text


def test_signing_after_rotation_uses_the_new_key_in_every_worker(database_url: str) -> None:
    first, second = (create_app(app_config(database_url)) for _ in range(2))
    try:
        with first.app_context():
            before = signing.signer().kid
        with second.app_context():
            assert signing.signer().kid == before
            after = signing.rotate()["signing"]["kid"]
            listed = service.reads.signing_keys.list_keys()
        with first.app_context():
            assert signing.signer().kid == after
            token = signing.sign_document({"n": 1})
    finally:
        for app in (first, second):
            with app.app_context():
                db.engine.dispose()
    assert sig.verify(token, {"keys": [k["jwk"] for k in listed]}) == {"n": 1}
    assert jwt_kid(token) == after


def jwt_kid(token: str) -> str:
    """The kid in a JWS header."""
    return str(jwt.get_unverified_header(token)["kid"])
