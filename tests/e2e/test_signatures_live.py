"""Signatures against a live server started as `make run` starts it: the key made on first use
by whichever worker signs first, a snapshot downloaded with `consent snapshot` and checked with
`consent verify` against the server's JWKS URL."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from consent_client import signatures as sig
from tests.e2e.conftest import PURPOSE, arrange
from tests.e2e.test_consent_filter import consent
from tests.live import LiveServer

RACERS = 6


def test_racing_first_signatures_make_one_key_and_consent_verify_checks_the_snapshot(
    live: LiveServer, tmp_path: Path
) -> None:
    arrange(live)
    headers = {"Authorization": f"Bearer {live.tokens['pipeline']}"}
    start = threading.Barrier(RACERS)

    def ask(_: int) -> dict[str, object]:
        # A fresh connection each, so that both gunicorn workers take a share.
        with httpx.Client(base_url=live.base_url, headers=headers, timeout=60) as http:
            start.wait()
            r = http.get(f"/v1/snapshots/{PURPOSE}/signature?set=denied&format=parquet")
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        answers = list(pool.map(ask, range(RACERS)))
    assert len({a["kid"] for a in answers}) == 1
    jwks_url = live.base_url + sig.JWKS_PATH
    assert [k["kid"] for k in httpx.get(jwks_url).json()["keys"]] == [answers[0]["kid"]]

    signed = answers[0]
    (tmp_path / "sig.json").write_text(json.dumps(signed))
    snapshot = tmp_path / "denied.parquet"
    done = consent(
        live, "snapshot", "--purpose", PURPOSE, "--set", "denied", "--as-of", str(signed["as_of"]),
        str(snapshot),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checked = consent(
        live, "verify", str(tmp_path / "sig.json"), "--jwks", jwks_url, "--snapshot", str(snapshot)
    )
    assert checked.returncode == 0, checked.stderr
    assert "denied.parquet matches it" in checked.stdout

    snapshot.write_bytes(snapshot.read_bytes()[:-1] + b"!")
    refused = consent(
        live, "verify", str(tmp_path / "sig.json"), "--jwks", jwks_url, "--snapshot", str(snapshot)
    )
    assert refused.returncode == 5, refused.stderr
    assert "not the signed snapshot" in refused.stderr
