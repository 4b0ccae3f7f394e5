"""User tokens: short-lived JWTs the product's backend mints for one user, checked with PyJWT
against the keys this ledger is configured with (a JWKS file or URL, or an HS256 secret).

Only these keys are ever used: a token's own header never supplies one (jku, jwk, x5u and x5c are
not read), a JWKS key verifies only its own algorithm (ES256, EdDSA or RS256), and HS256 is
checked only with the configured secret, never with a public key's bytes. Tokens and their
claims are never logged; a refusal says what is wrong without repeating what the token holds.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import Flask, current_app

from service.domain import validation
from service.domain.errors import ConsentError, Unauthorized, Unavailable
from service.web.console.sessions import persisted_secret

log = logging.getLogger(__name__)

JWKS_ALGORITHMS = ("ES256", "EdDSA", "RS256")
SECRET_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "aud", "iat", "exp", "jti")
MAX_LIFETIME = timedelta(minutes=15)
# Far beyond any token of these claims; a longer header is refused before anything parses it.
MAX_TOKEN_CHARS = 8192
MAX_JTI_CHARS = 255  # used_tokens.jti
# HS256 needs a key at least as long as its hash (RFC 7518 section 3.2).
MIN_SECRET_BYTES = 32
DEV_SECRET_FILE = "user-token-dev-secret"
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
JWKS_LIFESPAN_SECONDS = 300.0
PUBLIC_KEY_TYPES = (
    ec.EllipticCurvePublicKey,
    rsa.RSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
EXTENSION = "consent_user_tokens"


class UserTokenRefused(Unauthorized):
    """A user token that is malformed, not signed by a trusted key, or whose claims fail."""

    slug = "invalid-user-token"
    title = "Invalid user token"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        # RFC 6750 section 3.1: the client may mint a fresh token and retry.
        self.headers["WWW-Authenticate"] = 'Bearer realm="consent-ledger", error="invalid_token"'


class UserTokensOff(Unauthorized):
    """This ledger is configured with no key to check user tokens with."""

    slug = "user-tokens-off"
    title = "User tokens are off"


@dataclass(frozen=True, slots=True)
class UserToken:
    """What a verified user token says: whose it is, its id, and when it was issued and ends."""

    user_id: str
    jti: str
    issued_at: datetime
    expires_at: datetime


def looks_like_user_token(token: str) -> bool:
    """Whether a bearer token is a JWT (three dot-separated parts); API keys hold no dot."""
    return token.count(".") == 2


def _usable(key: jwt.PyJWK) -> bool:
    """A JWKS key may check user tokens: a public key of an accepted algorithm, for signing."""
    return (
        key.algorithm_name in JWKS_ALGORITHMS
        and isinstance(key.key, PUBLIC_KEY_TYPES)
        and key.public_key_use in (None, "sig")
    )


class JwksFile:
    """The keys of a JWKS file, read again whenever the file changes (checked per token)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.stamp: tuple[int, int, int] | None = None
        self.keys: dict[str, jwt.PyJWK] = {}
        self._reload(strict=True)

    def _stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload(self, *, strict: bool) -> None:
        """Read the file again; at start-up a bad file stops the start, later it keeps the last
        good keys (a half-written file must not lock every user out)."""
        try:
            stamp = self._stamp()
            keys = {
                k.key_id: k
                for k in jwt.PyJWKSet.from_json(self.path.read_text()).keys
                if k.key_id and _usable(k)
            }
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            if strict:
                raise ValueError(
                    f"CONSENT_USER_TOKEN_JWKS: {self.path} is not a readable JWKS "
                    f"({type(exc).__name__})."
                ) from None
            log.warning("user-token JWKS file unreadable, keeping its last keys: %s", self.path)
            return
        if strict and not keys:
            raise ValueError(
                f"CONSENT_USER_TOKEN_JWKS: {self.path} holds no key with a kid for "
                f"{', '.join(JWKS_ALGORITHMS)}."
            )
        self.stamp, self.keys = stamp, keys

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this kid, after reading the file again if it changed."""
        with self.lock:
            try:
                changed = self._stamp() != self.stamp
            except OSError:
                changed = False  # gone for a moment (replaced by a rename): keep the last keys
            if changed:
                self._reload(strict=False)
            return self.keys.get(kid)


class JwksUrl:
    """The keys at a JWKS URL: cached, refetched when their lifespan ends, and on an unknown kid
    at most once per cooldown, so a flood of made-up kids cannot hammer the URL."""

    def __init__(self, url: str, cooldown: float) -> None:
        self.client = jwt.PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=JWKS_LIFESPAN_SECONDS,
            timeout=JWKS_FETCH_TIMEOUT_SECONDS,
            cooldown_duration=cooldown,
        )

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this kid, fetched if need be; 503 when the URL cannot be read."""
        try:
            return self.client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise Unavailable(
                "The keys that user tokens are checked with cannot be fetched; retry later.",
                retry_after=5,
            ) from None
        except (jwt.PyJWKSetError, jwt.InvalidKeyError):
            log.warning("the user-token JWKS URL answered no usable key set")
            raise Unavailable(
                "The keys that user tokens are checked with are unusable; retry later.",
                retry_after=30,
            ) from None
        except jwt.PyJWKClientError:
            return None  # no such kid, even after a refetch (or within the cooldown)


def jwks_source(location: str, cooldown: float) -> JwksFile | JwksUrl:
    """A JWKS from an http(s) URL, or else from a file path."""
    if location.startswith(("https://", "http://")):
        return JwksUrl(location, cooldown)
    if location.startswith(("file:", "ftp:", "data:")):
        raise ValueError("CONSENT_USER_TOKEN_JWKS must be a file path or an http(s) URL.")
    return JwksFile(Path(location).expanduser())


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserTokenRefused(f"The user token's {name!r} claim must be a number of seconds.")
    return float(value)


class UserTokens:
    """Checks user tokens against this ledger's keys: its JWKS, its HS256 secret, or both."""

    def __init__(
        self,
        *,
        audience: str,
        secret: bytes | None = None,
        jwks: JwksFile | JwksUrl | None = None,
        leeway: float = 5.0,
    ) -> None:
        if secret is not None and len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"CONSENT_USER_TOKEN_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                "(HS256 needs a key as long as its hash)."
            )
        self.audience = audience
        self.secret = secret
        self.jwks = jwks
        self.leeway = leeway

    def _key(self, header: dict[str, Any]) -> tuple[jwt.PyJWK | bytes, str]:
        """The one key and algorithm this token may be checked with, by its header's alg."""
        alg = header.get("alg")
        if alg == SECRET_ALGORITHM:
            if self.secret is None:
                raise UserTokenRefused(
                    "HS256 user tokens are not accepted here: this ledger checks user tokens "
                    f"with public keys ({', '.join(JWKS_ALGORITHMS)})."
                )
            return self.secret, SECRET_ALGORITHM
        if alg in JWKS_ALGORITHMS:
            if self.jwks is None:
                raise UserTokenRefused(
                    f"{alg} user tokens are not accepted here: this ledger checks user tokens "
                    "with its HS256 secret."
                )
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise UserTokenRefused("The user token must name its key in the header (kid).")
            key = self.jwks.key(kid)
            if key is None:
                raise UserTokenRefused("The user token names a key (kid) this ledger lacks.")
            if key.algorithm_name != alg:
                raise UserTokenRefused("The user token's alg is not the algorithm of its key.")
            return key, alg
        accepted = ([SECRET_ALGORITHM] if self.secret is not None else []) + (
            list(JWKS_ALGORITHMS) if self.jwks is not None else []
        )
        raise UserTokenRefused(
            f"The user token's algorithm is not accepted; accepted: {', '.join(accepted)}."
        )

    def verify(self, token: str) -> UserToken:
        """The verified token, or a 401 that says what is wrong with it."""
        if len(token) > MAX_TOKEN_CHARS:
            raise UserTokenRefused("The user token is too long.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UserTokenRefused("The user token is not a well-formed JWT.") from None
        key, alg = self._key(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise UserTokenRefused("The user token has expired; mint a new one.") from None
        except jwt.InvalidAudienceError:
            raise UserTokenRefused(
                f"The user token is not for this ledger: its aud must be {self.audience!r}."
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise UserTokenRefused(f"The user token lacks the {exc.claim!r} claim.") from None
        except jwt.ImmatureSignatureError:
            raise UserTokenRefused("The user token is not valid yet (iat or nbf).") from None
        except jwt.InvalidSignatureError:
            raise UserTokenRefused("The user token's signature does not verify.") from None
        except jwt.PyJWTError:
            raise UserTokenRefused("The user token is not valid.") from None
        return self._claims(claims)

    def _claims(self, claims: dict[str, Any]) -> UserToken:
        issued, expires = _number(claims, "iat"), _number(claims, "exp")
        if expires - issued > MAX_LIFETIME.total_seconds():
            raise UserTokenRefused(
                "The user token lives too long: exp may be at most 15 minutes after iat."
            )
        if expires <= issued:
            raise UserTokenRefused("The user token's exp must come after its iat.")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise UserTokenRefused(f"The user token's jti must be 1-{MAX_JTI_CHARS} characters.")
        try:
            user_id = validation.user_id(claims["sub"], field="sub")
        except ConsentError:
            raise UserTokenRefused("The user token's sub is not a valid user ID.") from None
        return UserToken(
            user_id=user_id,
            jti=jti,
            issued_at=datetime.fromtimestamp(issued, UTC),
            expires_at=datetime.fromtimestamp(expires, UTC),
        )


def dev_secret(instance_path: str) -> str:
    """The development secret kept in the instance folder (made once, mode 0600)."""
    return persisted_secret(instance_path, DEV_SECRET_FILE)


def configured_secret(app: Flask) -> tuple[bytes | None, bool]:
    """The HS256 secret user tokens are checked and minted with, and whether it is the
    development one (trusted only with CONSENT_USER_TOKEN_DEV_SECRET and no key configured)."""
    secret = app.config.get("CONSENT_USER_TOKEN_SECRET")
    if secret:
        return str(secret).encode(), False
    if app.config.get("CONSENT_USER_TOKEN_JWKS") or not app.config.get(
        "CONSENT_USER_TOKEN_DEV_SECRET"
    ):
        return None, False
    return dev_secret(app.instance_path).encode(), True


def minting_secret(app: Flask) -> tuple[bytes | None, bool]:
    """The HS256 secret `consent tokens mint` signs with, and whether it is the development
    one: the configured secret, else the development secret a `make run` server trusts."""
    secret, development = configured_secret(app)
    if secret is not None or app.config.get("CONSENT_USER_TOKEN_JWKS"):
        return secret, development
    if (Path(app.instance_path) / DEV_SECRET_FILE).exists():
        return dev_secret(app.instance_path).encode(), True
    return None, False


def from_config(app: Flask) -> UserTokens | None:
    """The checker the configuration asks for, or None when user tokens are off."""
    secret, development = configured_secret(app)
    location = app.config.get("CONSENT_USER_TOKEN_JWKS")
    if secret is None and not location:
        return None
    if development:
        log.warning(
            "USER TOKENS ARE CHECKED WITH A DEVELOPMENT SECRET kept in %s "
            "(CONSENT_USER_TOKEN_DEV_SECRET, as make run sets it). Never in production: "
            "set CONSENT_USER_TOKEN_JWKS or CONSENT_USER_TOKEN_SECRET there.",
            Path(app.instance_path) / DEV_SECRET_FILE,
        )
    jwks = (
        jwks_source(location, float(app.config["CONSENT_USER_TOKEN_JWKS_COOLDOWN_SECONDS"]))
        if location
        else None
    )
    return UserTokens(
        audience=app.config["CONSENT_USER_TOKEN_AUDIENCE"],
        secret=secret,
        jwks=jwks,
        leeway=float(app.config["CONSENT_USER_TOKEN_LEEWAY_SECONDS"]),
    )


def verify(token: str) -> UserToken:
    """Check a user token with this app's keys: the one call /v1/me and /me authenticate with."""
    checker: UserTokens | None = current_app.extensions.get(EXTENSION)
    if checker is None:
        raise UserTokensOff(
            "User tokens are off on this ledger: it is configured with no key to check them "
            "(CONSENT_USER_TOKEN_JWKS or CONSENT_USER_TOKEN_SECRET)."
        )
    return checker.verify(token)


def init_app(app: Flask) -> None:
    """Build this app's checker from its configuration (a bad JWKS file stops the start-up)."""
    checker = from_config(app)
    if checker is not None:
        app.extensions[EXTENSION] = checker


def signing_key_from_pem(data: bytes) -> tuple[Any, str]:
    """A private key (PEM) and the algorithm it signs user tokens with, for development."""
    key = load_pem_private_key(data, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key, "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    raise ValueError("The key must be an EC P-256, Ed25519 or RSA private key.")


def mint(
    user_id: str,
    key: Any,
    *,
    algorithm: str = SECRET_ALGORITHM,
    audience: str = "consent-ledger",
    minutes: float = 5,
    kid: str | None = None,
    now: float | None = None,
) -> str:
    """A user token for one user, as a product's backend would mint it (for development and
    tests: `consent tokens mint`)."""
    if not 0 < minutes <= MAX_LIFETIME.total_seconds() / 60:
        raise ValueError("A user token lives at most 15 minutes.")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": validation.user_id(user_id, field="user"),
        "aud": audience,
        "iat": issued,
        "exp": issued + int(minutes * 60),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
