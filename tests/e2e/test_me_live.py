"""/v1/me over a real gunicorn: a user token minted by `consent tokens mint` works on a server
started as `make run` starts it, and no log line holds a token or anything it says."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt

from tests.conftest import USER_TOKEN_SECRET
from tests.e2e.test_operability import call, log_lines
from tests.live import live_server

REPO = Path(__file__).resolve().parents[2]
CONSENT = Path(sys.executable).parent / "consent"


def test_a_token_minted_by_the_cli_opens_v1_me_on_a_server_started_as_make_run_starts_it(
    tmp_path: Path,
) -> None:
    instance = tmp_path / "instance"
    # No key configured: make run's development secret, made in the instance folder.
    with live_server(
        tmp_path, CONSENT_USER_TOKEN_SECRET="", CONSENT_INSTANCE_PATH=str(instance)
    ) as live:
        env = {
            **os.environ,
            "CONSENT_DATABASE_URL": live.database_url,
            "CONSENT_INSTANCE_PATH": str(instance),
        }
        env.pop("CONSENT_USER_TOKEN_DEV_SECRET", None)
        env.pop("CONSENT_USER_TOKEN_SECRET", None)
        minted = subprocess.run(
            [str(CONSENT), "tokens", "mint", "--user", "alice"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip().splitlines()[-1]
        status, _, body = call(live, "GET", "/v1/me", token=token)
        assert status == 200, body
        assert json.loads(body)["user_id"] == "alice"
        # A token signed with another secret (the tests') is refused by this server.
        status, _, _ = call(live, "GET", "/v1/me", token=live.user_token("alice"))
        assert status == 401
        warnings = [r for r in log_lines(live) if "DEVELOPMENT SECRET" in str(r.get("message"))]
        assert len(warnings) >= 2, "each worker says loudly that it trusts a development secret"


def test_no_log_line_holds_a_user_token_or_its_claims(tmp_path: Path) -> None:
    with live_server(tmp_path, CONSENT_ACCESS_LOG="-") as live:
        now = int(time.time())
        jti = "JTI-never-logged-0001"
        valid = jwt.encode(
            {"sub": "alice", "aud": "consent-ledger", "iat": now, "exp": now + 300, "jti": jti},
            USER_TOKEN_SECRET,
            algorithm="HS256",
        )
        wrong_aud = jwt.encode(
            {"sub": "alice", "aud": "elsewhere", "iat": now, "exp": now + 300, "jti": jti},
            USER_TOKEN_SECRET,
            algorithm="HS256",
        )
        header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        alg_none = header + "." + valid.split(".")[1] + "."
        tokens = [valid, wrong_aud, alg_none, valid[:-3] + "abc"]
        for token in tokens:
            call(live, "GET", "/v1/me", token=token, headers={"Sec-GPC": "1"})
            call(
                live,
                "PUT",
                "/v1/me/consents/model_training",
                token=token,
                body={"state": "granted"},
            )
            call(live, "GET", "/v1/users/alice", token=token)
            call(live, "GET", "/v1/me/events", token=token)
        access = [r for r in log_lines(live) if r["name"] == "consent.access"]
        assert len(access) >= 4 * len(tokens)
        assert {r["key"] for r in access if r["route"] == "/v1/me"} >= {"user:alice", None}
        text = live.log()
        for token in tokens:
            for part in filter(None, token.split(".")):
                assert part not in text
        assert jti not in text
