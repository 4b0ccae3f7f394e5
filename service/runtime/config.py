"""Configuration: the one module that reads os.environ."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

DEFAULT_SQLITE_NAME = "consent.db"
WRITE_PATHS = ("grouped", "serial")


def instance_path() -> str | None:
    """The instance folder from CONSENT_INSTANCE_PATH, or None for Flask's default for the package.

    Never the working directory: `consent` run from anywhere must open the server's database.
    """
    value = os.environ.get("CONSENT_INSTANCE_PATH", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(f"CONSENT_INSTANCE_PATH must be an absolute path, not {value!r}")
    return str(path)


def default_database_url(instance_path: str) -> str:
    """Return the embedded SQLite URL used when CONSENT_DATABASE_URL is unset."""
    return f"sqlite:///{Path(instance_path) / DEFAULT_SQLITE_NAME}"


def normalise_database_url(url: str) -> str:
    """Make plain postgres URLs use psycopg 3, the only PostgreSQL driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_url(instance_path: str) -> str:
    """Return the database URL from CONSENT_DATABASE_URL, or the SQLite default."""
    url = os.environ.get("CONSENT_DATABASE_URL", "").strip()
    return normalise_database_url(url) if url else default_database_url(instance_path)


def from_environ(instance_path: str) -> dict[str, Any]:
    """Build the Flask configuration from the environment, for an app with this instance folder."""
    return {
        "SQLALCHEMY_DATABASE_URI": database_url(instance_path),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "CONSENT_DB_TIMEOUT_SECONDS": float(os.environ.get("CONSENT_DB_TIMEOUT_SECONDS", "5")),
        "CONSENT_EXPIRY_SWEEP_SECONDS": float(os.environ.get("CONSENT_EXPIRY_SWEEP_SECONDS", "5")),
        # grouped: choice writes read what they can before the head lock and commit together
        # with the worker's other concurrent writes; serial: each alone, all under the lock.
        "CONSENT_WRITE_PATH": _one_of(
            "CONSENT_WRITE_PATH", os.environ.get("CONSENT_WRITE_PATH", "grouped"), WRITE_PATHS
        ),
        # A retry with the same Idempotency-Key replays the first answer for this long; after
        # it the key is free again, and the sweeper prunes the record.
        "CONSENT_IDEMPOTENCY_TTL_HOURS": _positive(
            "CONSENT_IDEMPOTENCY_TTL_HOURS", os.environ.get("CONSENT_IDEMPOTENCY_TTL_HOURS", "24")
        ),
        # poll: each worker's index follows the ledger from a background thread;
        # sync: it catches up before every read (tests); off: every read asks the database.
        "CONSENT_INDEX": os.environ.get("CONSENT_INDEX", "poll"),
        "CONSENT_INDEX_POLL_SECONDS": float(os.environ.get("CONSENT_INDEX_POLL_SECONDS", "0.2")),
        # A head read never answers from an index last caught up longer ago than this: the
        # request catches up itself, or fails closed with a 503 when the database is away.
        "CONSENT_INDEX_MAX_LAG_SECONDS": float(
            os.environ.get("CONSENT_INDEX_MAX_LAG_SECONDS", "1.0")
        ),
        # An index further behind the head than this many events (a bulk import landed) is
        # built anew beside the old one rather than caught up event by event.
        "CONSENT_INDEX_REBUILD_LAG": _count(
            "CONSENT_INDEX_REBUILD_LAG", os.environ.get("CONSENT_INDEX_REBUILD_LAG", "100000")
        ),
        # Per API key (per address without one), per worker unless the storage is shared
        # (e.g. redis://127.0.0.1:6379); "off" turns limiting off. flask-limiter syntax.
        "CONSENT_RATE_LIMIT": _rate_limit(os.environ.get("CONSENT_RATE_LIMIT", "3000/second")),
        "CONSENT_RATE_LIMIT_STORAGE": os.environ.get("CONSENT_RATE_LIMIT_STORAGE", "memory://"),
        # Set by gunicorn_conf for its workers: /metrics then adds up every worker's files.
        "CONSENT_METRICS_MULTIPROCESS": bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
        "MAX_CONTENT_LENGTH": int(os.environ.get("CONSENT_MAX_BODY_BYTES", str(1024 * 1024))),
        # Signs the console's session cookie; unset, a random key is made once and kept in the
        # instance folder so every gunicorn worker signs with the same one.
        "CONSENT_SECRET_KEY": os.environ.get("CONSENT_SECRET_KEY") or None,
        # A console sign-in lasts this long however active it is (an absolute limit).
        "CONSENT_CONSOLE_SESSION_HOURS": float(
            os.environ.get("CONSENT_CONSOLE_SESSION_HOURS", "8")
        ),
        # A retired signing key stays in /.well-known/jwks.json this long, so that what it
        # signed can still be checked against the live JWKS (a saved JWKS checks it for good).
        "CONSENT_SIGNING_KEY_RETENTION_DAYS": _positive(
            "CONSENT_SIGNING_KEY_RETENTION_DAYS",
            os.environ.get("CONSENT_SIGNING_KEY_RETENTION_DAYS", "400"),
        ),
        # Set, signing keys made from now on are stored encrypted with it (scrypt, AES-256-GCM);
        # unset, they are stored as they are, protected like the rest of the database.
        "CONSENT_SIGNING_KEY_PASSPHRASE": os.environ.get("CONSENT_SIGNING_KEY_PASSPHRASE") or None,
        # User tokens for /v1/me: short-lived JWTs the product's backend mints for one user,
        # checked against a JWKS (a file, re-read when it changes, or an http(s) URL, cached and
        # refetched on an unknown kid at most once per cooldown) or an HS256 secret. Neither set:
        # user tokens are off. The development secret (make run) is made and kept in the
        # instance folder and trusted only when neither is set.
        "CONSENT_USER_TOKEN_JWKS": os.environ.get("CONSENT_USER_TOKEN_JWKS", "").strip() or None,
        "CONSENT_USER_TOKEN_SECRET": os.environ.get("CONSENT_USER_TOKEN_SECRET") or None,
        "CONSENT_USER_TOKEN_DEV_SECRET": os.environ.get("CONSENT_USER_TOKEN_DEV_SECRET", "")
        .strip()
        .lower()
        in ("1", "true", "yes"),
        "CONSENT_USER_TOKEN_AUDIENCE": os.environ.get(
            "CONSENT_USER_TOKEN_AUDIENCE", "consent-ledger"
        ).strip(),
        # Clock skew allowed between the product's backend and the ledger.
        "CONSENT_USER_TOKEN_LEEWAY_SECONDS": _at_most(
            "CONSENT_USER_TOKEN_LEEWAY_SECONDS",
            os.environ.get("CONSENT_USER_TOKEN_LEEWAY_SECONDS", "5"),
            60,
        ),
        "CONSENT_USER_TOKEN_JWKS_COOLDOWN_SECONDS": _at_most(
            "CONSENT_USER_TOKEN_JWKS_COOLDOWN_SECONDS",
            os.environ.get("CONSENT_USER_TOKEN_JWKS_COOLDOWN_SECONDS", "30"),
            3600,
        ),
        # Browser apps allowed to call /v1/me (exact origins, comma- or space-separated).
        "CONSENT_CORS_ORIGINS": _origins(os.environ.get("CONSENT_CORS_ORIGINS", "")),
        # Per user (a user token's sub) on /v1/me, beside CONSENT_RATE_LIMIT per token.
        "CONSENT_USER_RATE_LIMIT": _rate_limit(
            os.environ.get("CONSENT_USER_RATE_LIMIT", "10/second;300/minute")
        ),
        "API_TITLE": "Consent Ledger",
        "API_VERSION": "1.0.0",
        "OPENAPI_VERSION": "3.0.3",
    }


def _positive(name: str, value: str) -> float:
    """A setting that must be a number above zero; anything else stops the start-up, naming it."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a number above zero, not {value!r}.")
    return number


def _count(name: str, value: str) -> int:
    """A whole number above zero; anything else stops the start-up, naming it."""
    text = value.strip().replace("_", "")
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"{name} must be a whole number above zero, not {value!r}.")
    return int(text)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """A setting that must be one of a few words; anything else stops the start-up, naming it."""
    word = value.strip()
    if word not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}.")
    return word


def _at_most(name: str, value: str, limit: float) -> float:
    """A number of seconds from 0 to `limit`; anything else stops the start-up, naming it."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and 0 <= number <= limit):
        raise ValueError(f"{name} must be a number from 0 to {limit:g}, not {value!r}.")
    return number


ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?$")


def _origins(value: str) -> tuple[str, ...]:
    """The exact origins of CONSENT_CORS_ORIGINS (scheme://host[:port]); a wildcard, a path or
    anything else that is not one origin stops the start-up, naming it."""
    origins = tuple(o.rstrip("/") for o in value.replace(",", " ").split())
    for origin in origins:
        if not ORIGIN_RE.fullmatch(origin):
            raise ValueError(
                f"CONSENT_CORS_ORIGINS holds {origin!r}, which is not an origin such as "
                "https://app.example.com (no wildcard, no path)."
            )
    return tuple(o.lower() for o in origins)


def _rate_limit(value: str) -> str | None:
    """The limits of CONSENT_RATE_LIMIT (`limits` syntax), or None when it is "off"."""
    value = value.strip()
    return None if value.lower() in ("", "off", "none") else value


def client_timeouts() -> tuple[float, float]:
    """Seconds a client connection may stall: per read of the request head, and per read of
    the body or write of the response (gunicorn's worker, service/workers.py)."""
    return (
        float(os.environ.get("CONSENT_CLIENT_HEADER_TIMEOUT_SECONDS", "10")),
        float(os.environ.get("CONSENT_CLIENT_IO_TIMEOUT_SECONDS", "60")),
    )
