"""The attacks issue 14 lists, each tried on both of the user's doors (/v1/me and the /me page):
alg none, a wrong aud, HS256 signed with a public key's bytes, a token reused after sign-out, a
forged CSRF token, and a request from an origin not configured. Each is refused, writes nothing
(the ledger's every table counted before and after), and leaves no log line holding the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.runtime.extensions import db
from service.runtime.models import UsedToken
from tests.api.test_me_page import csrf, open_page
from tests.conftest import USER_TOKEN_SECRET, app_config
from tests.factories import Api, assert_problem, bearer, ledger_state, user_token
from tests.unit.test_user_tokens import Keys, b64, claims, unsigned

PUT_ME = "/v1/me/consents/model_training"
EVIL = "https://evil.example"
ALLOWED_ORIGIN = "https://app.example.com"


@pytest.fixture
def world(api: Api) -> Api:
    """Model training, off by default in the EEA; alice in Germany."""
    api.purpose()
    api.user("alice", jurisdiction="DE")
    return api


def spent_tokens(app: Flask) -> int:
    """How many user tokens the page has spent (their jti kept until they expire)."""
    with app.app_context():
        return int(
            db.session.execute(sa.select(sa.func.count()).select_from(UsedToken)).scalar_one()
        )


@contextmanager
def refused_quietly(app: Flask, caplog: pytest.LogCaptureFixture, *secrets: str) -> Iterator[None]:
    """Around the attack: the ledger (and the page's spent tokens) are unchanged after it, and
    no log record holds a secret (a whole token, any of its parts, or a claim such as its jti)."""
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    before = (ledger_state(app), spent_tokens(app))
    yield
    assert (ledger_state(app), spent_tokens(app)) == before
    access = [r for r in caplog.records if r.name == "consent.access"]
    assert access, "the attack's requests were logged (so the check below reads something)"
    logged = caplog.text + json.dumps([vars(r) for r in caplog.records], default=str)
    for secret in secrets:
        for part in filter(None, secret.split(".")):
            assert part not in logged


def try_both_doors(client: FlaskClient, token: str) -> None:
    """Write through /v1/me with the token, and open the page with it: both refused."""
    problem = assert_problem(
        client.put(PUT_ME, json={"state": "granted"}, headers=bearer(token)), 401
    )
    assert token not in problem["detail"]
    page = client.get(f"/me?token={token}")
    assert page.status_code == 401
    assert "This link does not work" in page.get_data(as_text=True)
    assert "consent_me=" not in page.headers.get("Set-Cookie", "")
    assert client.get("/me").status_code == 401


def test_alg_none_is_refused_writes_nothing_and_is_never_logged(
    world: Api, caplog: pytest.LogCaptureFixture
) -> None:
    body = claims(jti="jti-of-alg-none")
    tokens = [unsigned({"alg": alg, "typ": "JWT"}, body) for alg in ("none", "None", "NONE")]
    # The same, with a real HS256 signature kept on: the header still says none.
    signed = jwt.encode(body, USER_TOKEN_SECRET, algorithm="HS256").split(".")
    tokens.append(".".join([b64(b'{"alg":"none"}'), signed[1], signed[2]]))
    with refused_quietly(world.app, caplog, *tokens, "jti-of-alg-none"):
        for token in tokens:
            try_both_doors(world.client, token)


def test_a_token_for_another_audience_is_refused_writes_nothing_and_is_never_logged(
    world: Api, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = [
        jwt.encode(claims(aud=aud, jti="jti-of-wrong-aud"), USER_TOKEN_SECRET, algorithm="HS256")
        for aud in ("another-service", ["another-service", "a-third"], "")
    ]
    with refused_quietly(world.app, caplog, *tokens, "jti-of-wrong-aud"):
        for token in tokens:
            try_both_doors(world.client, token)


@pytest.fixture
def jwks_world(database_url: str, tmp_path: Path) -> Iterator[tuple[Api, Keys]]:
    """A ledger that trusts only a JWKS (ES256, EdDSA and RS256 public keys), no secret."""
    keys = Keys()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    config = {
        **app_config(database_url),
        "CONSENT_USER_TOKEN_SECRET": None,
        "CONSENT_USER_TOKEN_JWKS": str(path),
    }
    app = create_app(config)
    api = Api(app, app.test_client())
    api.purpose()
    api.user("alice", jurisdiction="DE")
    yield api, keys
    with app.app_context():
        db.engine.dispose()


def test_hs256_signed_with_a_public_keys_bytes_is_refused_writes_nothing_and_is_never_logged(
    jwks_world: tuple[Api, Keys], caplog: pytest.LogCaptureFixture
) -> None:
    """Algorithm confusion: the attacker HMACs with the published key as if it were a secret."""
    world, keys = jwks_world
    public = keys.private["RS256"].public_key()
    tokens = []
    for encoding, fmt in [
        (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]:
        key_bytes = public.public_bytes(encoding, fmt)
        header = {"alg": "HS256", "typ": "JWT", "kid": "rs256"}
        signing_input = ".".join(
            b64(json.dumps(part).encode()) for part in (header, claims(jti="jti-of-confusion"))
        )
        signature = hmac.new(key_bytes, signing_input.encode(), hashlib.sha256).digest()
        tokens.append(f"{signing_input}.{b64(signature)}")
    with refused_quietly(world.app, caplog, *tokens, "jti-of-confusion"):
        for token in tokens:
            try_both_doors(world.client, token)
    # The door is open to the key's own algorithm: the refusal was the confusion's.
    genuine = keys.token("RS256")
    assert (
        world.client.put(PUT_ME, json={"state": "granted"}, headers=bearer(genuine)).status_code
        == 200
    )


def test_a_token_reused_after_sign_out_opens_nothing_writes_nothing_and_is_never_logged(
    world: Api, caplog: pytest.LogCaptureFixture
) -> None:
    client = world.app.test_client()
    token = user_token("alice")
    assert client.get(f"/me?token={token}").status_code == 303
    page = client.get("/me")
    spent_csrf = csrf(page)
    assert client.post("/me/sign-out", data={"csrf_token": spent_csrf}).status_code == 200
    with refused_quietly(world.app, caplog, token):
        again = client.get(f"/me?token={token}")
        assert again.status_code == 401
        assert "Link already used" in again.get_data(as_text=True)
        assert "consent_me=" not in again.headers.get("Set-Cookie", "")
        assert client.get("/me").status_code == 401
        # Nor does the signed-out session's form still write.
        late = client.post(
            "/me/consents/model_training", data={"csrf_token": spent_csrf, "state": "granted"}
        )
        assert late.status_code in (400, 401)


def test_a_forged_csrf_token_is_refused_and_writes_nothing(
    world: Api, caplog: pytest.LogCaptureFixture
) -> None:
    alice = world.app.test_client()
    open_page(alice)
    mallory = world.app.test_client()
    world.user("mallory", jurisdiction="DE")
    # A token valid for another session (mallory's own) is as forged as a made-up one.
    mallorys = csrf(open_page(mallory, "mallory"))
    with refused_quietly(world.app, caplog):
        for forged in ("forged", mallorys, "", mallorys[:-2] + "xx"):
            resp = alice.post(
                "/me/consents/model_training", data={"csrf_token": forged, "state": "granted"}
            )
            assert resp.status_code == 400
            assert "Form expired or forged" in resp.get_data(as_text=True)
        assert (
            alice.post("/me/consents/model_training", data={"state": "granted"}).status_code == 400
        )
        assert alice.post("/me/sign-out", data={"csrf_token": "forged"}).status_code == 400
    assert alice.get("/me").status_code == 200  # the refused sign-out left the session open


@pytest.fixture
def cors_world(database_url: str) -> Iterator[Api]:
    """A ledger serving one browser origin on /v1/me."""
    app = create_app({**app_config(database_url), "CONSENT_CORS_ORIGINS": (ALLOWED_ORIGIN,)})
    api = Api(app, app.test_client())
    api.purpose()
    api.user("alice", jurisdiction="DE")
    yield api
    with app.app_context():
        db.engine.dispose()


def test_a_request_from_an_origin_not_configured_is_refused_without_cors_and_writes_nothing(
    cors_world: Api, caplog: pytest.LogCaptureFixture
) -> None:
    world = cors_world
    token = user_token("alice")
    page_client = world.app.test_client()
    page = open_page(page_client)
    with refused_quietly(world.app, caplog, token):
        preflight = world.client.options(
            PUT_ME, headers={"Origin": EVIL, "Access-Control-Request-Method": "PUT"}
        )
        write = world.client.put(
            PUT_ME, json={"state": "granted"}, headers=bearer(token, Origin=EVIL)
        )
        # The page's form posted from the other site: its cookie would be withheld (Strict);
        # even sent, the other site cannot know the form's CSRF token.
        form = page_client.post(
            "/me/consents/model_training",
            data={"state": "granted"},
            headers={"Origin": EVIL, "Referer": f"{EVIL}/", "Sec-Fetch-Site": "cross-site"},
        )
        for resp in (preflight, write):
            assert assert_problem(resp, 403)["type"].endswith(":origin-not-allowed")
        assert form.status_code == 400
        for resp in (preflight, write, form):
            assert not [h for h, _ in resp.headers if h.startswith("Access-Control-")]
    assert csrf(page)  # the page itself was served, and still is, to its own origin
