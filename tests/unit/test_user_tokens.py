"""User tokens: what is verified, what is refused, and where their keys come from."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from service.domain.errors import Unavailable
from service.web import usertokens
from service.web.usertokens import JwksFile, JwksUrl, UserTokenRefused, UserTokens

AUDIENCE = "consent-ledger"
SECRET = b"s" * 32


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for user alice, issued now for five minutes; None drops a claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS put together by hand, as an attacker would."""
    parts = [json.dumps(header).encode(), json.dumps(payload).encode()]
    return ".".join([*(b64(p) for p in parts), b64(signature)])


class Keys:
    """One private key per accepted JWKS algorithm, and the JWK of each public half."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {
            "ES256": ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate(),
            "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        }

    def jwk(self, alg: str, kid: str | None = None, *, key: Any = None) -> dict[str, Any]:
        public = (key or self.private[alg]).public_key()
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
        jwk.update(kid=kid or alg.lower(), alg=alg, use="sig")
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk(alg) for alg in self.private]}

    def token(self, alg: str, kid: str | None = None, **changes: Any) -> str:
        return jwt.encode(
            claims(**changes), self.private[alg], algorithm=alg, headers={"kid": kid or alg.lower()}
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    return path


@pytest.fixture
def by_jwks(jwks_file: Path) -> UserTokens:
    return UserTokens(audience=AUDIENCE, jwks=JwksFile(jwks_file))


@pytest.fixture
def by_secret() -> UserTokens:
    return UserTokens(audience=AUDIENCE, secret=SECRET)


def refused(checker: UserTokens, token: str, phrase: str) -> None:
    with pytest.raises(UserTokenRefused) as caught:
        checker.verify(token)
    assert phrase in caught.value.detail
    assert caught.value.status == 401
    assert token not in caught.value.detail


# --- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_a_token_signed_by_a_jwks_key_of_each_accepted_algorithm_names_its_user(
    by_jwks: UserTokens, keys: Keys, alg: str
) -> None:
    user = by_jwks.verify(keys.token(alg, sub="user-7"))
    assert user.user_id == "user-7"
    assert user.expires_at > user.issued_at


def test_an_hs256_token_signed_with_the_secret_names_its_user(by_secret: UserTokens) -> None:
    token = jwt.encode(claims(sub="42"), SECRET, algorithm="HS256")
    user = by_secret.verify(token)
    assert (user.user_id, len(user.jti)) == ("42", 32)


def test_a_token_minted_by_the_ledger_itself_verifies(by_secret: UserTokens) -> None:
    token = usertokens.mint("bob", SECRET, minutes=15)
    assert by_secret.verify(token).user_id == "bob"


def test_a_few_seconds_of_clock_skew_are_allowed_and_no_more(by_secret: UserTokens) -> None:
    now = int(time.time())
    just = jwt.encode(claims(iat=now - 300, exp=now - 3), SECRET, algorithm="HS256")
    assert by_secret.verify(just).user_id == "alice"
    early = jwt.encode(claims(iat=now + 3, exp=now + 300), SECRET, algorithm="HS256")
    assert by_secret.verify(early).user_id == "alice"
    late = jwt.encode(claims(iat=now - 300, exp=now - 10), SECRET, algorithm="HS256")
    refused(by_secret, late, "expired")
    future = jwt.encode(claims(iat=now + 30, exp=now + 300), SECRET, algorithm="HS256")
    refused(by_secret, future, "not valid yet")


# --- refused: algorithms and keys ----------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused_whatever_the_configuration(
    by_jwks: UserTokens, by_secret: UserTokens, alg: str
) -> None:
    token = unsigned({"alg": alg, "typ": "JWT"}, claims())
    refused(by_secret, token, "algorithm is not accepted")
    refused(by_jwks, token, "algorithm is not accepted")
    both = UserTokens(audience=AUDIENCE, secret=SECRET, jwks=by_jwks.jwks)
    refused(both, token, "algorithm is not accepted")


def test_an_hs256_token_signed_with_a_public_keys_bytes_is_refused(
    by_jwks: UserTokens, keys: Keys
) -> None:
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
    public = keys.private["RS256"].public_key()
    for encoding, fmt in [
        (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]:
        key_bytes = public.public_bytes(encoding, fmt)
        # PyJWT itself refuses to HMAC with an asymmetric key, so sign by hand.
        header = {"alg": "HS256", "typ": "JWT", "kid": "rs256"}
        signing_input = ".".join(
            b64(json.dumps(part).encode()) for part in (header, claims())
        ).encode()
        signature = hmac.new(key_bytes, signing_input, hashlib.sha256).digest()
        token = signing_input.decode() + "." + b64(signature)
        refused(by_jwks, token, "HS256 user tokens are not accepted here")
        both = UserTokens(audience=AUDIENCE, secret=SECRET, jwks=by_jwks.jwks)
        refused(both, token, "signature does not verify")


def test_a_jwks_key_of_an_algorithm_not_accepted_verifies_nothing(tmp_path: Path) -> None:
    es384 = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.get_algorithm_by_name("ES384").to_jwk(es384.public_key()))
    oct_key = {"kty": "oct", "k": b64(b"k" * 32), "kid": "shared", "alg": "HS256"}
    path = tmp_path / "jwks.json"
    accepted = Keys()
    path.write_text(
        json.dumps(
            {"keys": [{**jwk, "kid": "p384", "alg": "ES384"}, oct_key, accepted.jwk("ES256")]}
        )
    )
    checker = UserTokens(audience=AUDIENCE, jwks=JwksFile(path))
    p384 = jwt.encode(claims(), es384, algorithm="ES384", headers={"kid": "p384"})
    refused(checker, p384, "algorithm is not accepted")
    hs = jwt.encode(claims(), b"k" * 32, algorithm="HS256", headers={"kid": "shared"})
    refused(checker, hs, "HS256 user tokens are not accepted here")
    # Nor is it found when a token claims it is an ES256 key.
    refused(checker, unsigned({"alg": "ES256", "kid": "p384"}, claims(), b"sig"), "lacks")


def test_a_jwks_file_of_no_accepted_key_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": b64(b"k" * 32), "kid": "x"}]}))
    with pytest.raises(ValueError, match="holds no key with a kid"):
        JwksFile(path)
    path.write_text("not json")
    with pytest.raises(ValueError, match="not a readable JWKS"):
        JwksFile(path)
    with pytest.raises(ValueError, match="not a readable JWKS"):
        JwksFile(tmp_path / "missing.json")


def test_a_token_whose_alg_is_not_its_keys_algorithm_is_refused(
    by_jwks: UserTokens, keys: Keys
) -> None:
    # Signed by the ES256 key but naming the RS256 key's kid.
    token = keys.token("ES256", kid="rs256")
    refused(by_jwks, token, "not the algorithm of its key")


def test_a_key_carried_in_the_tokens_own_header_is_never_used(
    by_jwks: UserTokens, keys: Keys
) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    own_jwk = keys.jwk("ES256", "es256", key=attacker)
    header = {"kid": "es256", "jwk": own_jwk, "jku": "https://attacker.example/jwks.json"}
    token = jwt.encode(claims(), attacker, algorithm="ES256", headers=header)
    refused(by_jwks, token, "signature does not verify")
    header = {"kid": "attacker", "jwk": own_jwk, "x5u": "https://attacker.example/cert.pem"}
    token = jwt.encode(claims(), attacker, algorithm="ES256", headers=header)
    refused(by_jwks, token, "names a key (kid) this ledger lacks")


def test_a_jwks_token_must_name_a_known_key(by_jwks: UserTokens, keys: Keys) -> None:
    no_kid = jwt.encode(claims(), keys.private["ES256"], algorithm="ES256")
    refused(by_jwks, no_kid, "must name its key")
    refused(by_jwks, keys.token("ES256", kid="nope"), "names a key (kid) this ledger lacks")


def test_an_asymmetric_token_is_refused_where_only_a_secret_is_configured(
    by_secret: UserTokens, keys: Keys
) -> None:
    refused(by_secret, keys.token("RS256"), "RS256 user tokens are not accepted here")


def test_a_token_signed_with_another_secret_is_refused(by_secret: UserTokens) -> None:
    token = jwt.encode(claims(), b"t" * 32, algorithm="HS256")
    refused(by_secret, token, "signature does not verify")


def test_a_secret_shorter_than_its_hash_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        UserTokens(audience=AUDIENCE, secret=b"short")


def test_a_critical_header_extension_is_refused(by_secret: UserTokens) -> None:
    token = jwt.encode(
        claims(), SECRET, algorithm="HS256", headers={"crit": ["exp-ext"], "exp-ext": 1}
    )
    refused(by_secret, token, "not a well-formed JWT")


@pytest.mark.parametrize(
    "token",
    ["", "a.b.c", "not-a-token", "x" * 9000, "eyJhbGciOiJIUzI1NiJ9.e30", "...."],
    ids=["empty", "three dots of junk", "no dots", "too long", "two parts", "four dots"],
)
def test_malformed_tokens_are_refused_with_a_401(by_secret: UserTokens, token: str) -> None:
    with pytest.raises(UserTokenRefused):
        by_secret.verify(token)


# --- refused: claims -----------------------------------------------------------------------------


def hs(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def test_a_token_for_another_audience_is_refused(by_secret: UserTokens) -> None:
    refused(by_secret, hs(aud="another-service"), "not for this ledger")
    refused(by_secret, hs(aud=["another-service", "a-third"]), "not for this ledger")
    assert by_secret.verify(hs(aud=["another-service", AUDIENCE])).user_id == "alice"


def test_an_expired_token_is_refused(by_secret: UserTokens) -> None:
    now = int(time.time())
    refused(by_secret, hs(iat=now - 900, exp=now - 60), "expired")


def test_a_token_living_longer_than_15_minutes_is_refused(by_secret: UserTokens) -> None:
    now = int(time.time())
    refused(by_secret, hs(iat=now, exp=now + 15 * 60 + 1), "lives too long")
    assert by_secret.verify(hs(iat=now, exp=now + 15 * 60)).user_id == "alice"
    refused(by_secret, hs(iat=now - 10, exp=now - 20 + 3600), "lives too long")


@pytest.mark.parametrize("claim", ["sub", "aud", "iat", "exp", "jti"])
def test_a_token_without_a_required_claim_is_refused(by_secret: UserTokens, claim: str) -> None:
    refused(by_secret, hs(**{claim: None}), f"lacks the '{claim}' claim")


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"sub": "not a user id!"}, "sub is not a valid user ID"),
        ({"sub": "x" * 65}, "sub is not a valid user ID"),
        ({"sub": 42}, "not valid"),
        ({"jti": 7}, "not valid"),
        ({"jti": ""}, "jti must be"),
        ({"jti": "j" * 256}, "jti must be"),
        ({"iat": "1700000000"}, "'iat' claim must be a number"),
        ({"iat": True}, "'iat' claim must be a number"),
        ({"exp": "soon"}, "not valid"),
    ],
    ids=[
        "bad sub",
        "long sub",
        "numeric sub",
        "numeric jti",
        "empty jti",
        "long jti",
        "text iat",
        "boolean iat",
        "text exp",
    ],
)
def test_a_token_whose_claims_are_malformed_is_refused(
    by_secret: UserTokens, changes: dict[str, Any], phrase: str
) -> None:
    refused(by_secret, hs(**changes), phrase)


# --- where the keys come from --------------------------------------------------------------------


def test_a_jwks_file_is_read_again_when_it_changes(jwks_file: Path, keys: Keys) -> None:
    checker = UserTokens(audience=AUDIENCE, jwks=JwksFile(jwks_file))
    rotated = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), rotated, algorithm="ES256", headers={"kid": "rotated"})
    refused(checker, token, "lacks")
    document = keys.jwks()
    document["keys"].append(keys.jwk("ES256", "rotated", key=rotated))
    jwks_file.write_text(json.dumps(document))
    os.utime(jwks_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert checker.verify(token).user_id == "alice"
    # A broken rewrite keeps the keys last read, rather than locking every user out.
    jwks_file.write_text("{ half written")
    assert checker.verify(token).user_id == "alice"


class JwksServer:
    """A local HTTP server answering a JWKS, counting how often it is fetched."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        self.failing = False
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.fetches += 1
                if served.failing:
                    self.send_error(503)
                    return
                body = json.dumps(served.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    with JwksServer(keys.jwks()) as server:
        yield server


def test_a_jwks_url_is_fetched_once_and_then_served_from_its_cache(
    jwks_server: JwksServer, keys: Keys
) -> None:
    checker = UserTokens(audience=AUDIENCE, jwks=JwksUrl(jwks_server.url, cooldown=30))
    for alg in ("ES256", "EdDSA", "RS256", "ES256"):
        assert checker.verify(keys.token(alg)).user_id == "alice"
    assert jwks_server.fetches == 1


def test_an_unknown_kid_refetches_the_jwks_url_and_finds_a_rotated_key(
    jwks_server: JwksServer, keys: Keys
) -> None:
    checker = UserTokens(audience=AUDIENCE, jwks=JwksUrl(jwks_server.url, cooldown=0.2))
    assert checker.verify(keys.token("ES256")).user_id == "alice"
    rotated = ed25519.Ed25519PrivateKey.generate()
    jwks_server.document = {"keys": [*keys.jwks()["keys"], keys.jwk("EdDSA", "new", key=rotated)]}
    time.sleep(0.3)  # past the cooldown that the first fetch started
    token = jwt.encode(claims(), rotated, algorithm="EdDSA", headers={"kid": "new"})
    assert checker.verify(token).user_id == "alice"
    assert jwks_server.fetches == 2


def test_a_flood_of_made_up_kids_fetches_the_jwks_url_at_most_once_per_cooldown(
    jwks_server: JwksServer, keys: Keys
) -> None:
    checker = UserTokens(audience=AUDIENCE, jwks=JwksUrl(jwks_server.url, cooldown=30))
    assert checker.verify(keys.token("ES256")).user_id == "alice"
    for n in range(200):
        refused(checker, keys.token("ES256", kid=f"random-{n}"), "lacks")
    assert jwks_server.fetches == 1


def test_an_unreachable_jwks_url_is_a_503_not_an_allowed_token(keys: Keys) -> None:
    with JwksServer(keys.jwks()) as server:
        server.failing = True
        checker = UserTokens(audience=AUDIENCE, jwks=JwksUrl(server.url, cooldown=30))
        with pytest.raises(Unavailable):
            checker.verify(keys.token("ES256"))


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://example.com/jwks.json"])
def test_a_jwks_location_that_is_neither_a_path_nor_an_http_url_stops_the_start(
    location: str,
) -> None:
    with pytest.raises(ValueError, match="file path or an http"):
        usertokens.jwks_source(location, 30)


def test_a_minted_token_lives_at_most_15_minutes() -> None:
    with pytest.raises(ValueError, match="at most 15 minutes"):
        usertokens.mint("alice", SECRET, minutes=16)
    token = usertokens.mint("alice", SECRET, minutes=15, now=1_000_000)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == 900
    assert set(payload) == {"sub", "aud", "iat", "exp", "jti"}
