"""A snapshot's signed digest: its time beside downloading the same snapshot, and that it is the
digest of exactly the bytes downloaded (and checks out against the server's JWKS)."""

from __future__ import annotations

import hashlib
import http.client
import json
import time

import numpy as np

from bench import clients
from bench.population import PURPOSE
from bench.report import Figure
from bench.workloads.session import Session
from bench.workloads.streams import READ_BLOCK
from consent_client import signatures

QUERY = "set=allowed&format=parquet"


def _get(s: Session, path: str) -> tuple[int, bytes, float]:
    """Status, body and seconds of one GET as the pipeline, on a fresh connection."""
    conn = clients.connect(s.server.port, timeout=s.profile.snapshot_time_limit + 60)
    body = bytearray()
    try:
        started = time.monotonic()
        conn.request("GET", path, headers={"Authorization": f"Bearer {s.pipeline_token}"})
        response = conn.getresponse()
        while block := response.read1(READ_BLOCK):
            body += block
        return response.status, bytes(body), time.monotonic() - started
    finally:
        conn.close()


def snapshot_signature(s: Session) -> None:
    """Sign the allowed set's Parquet snapshot, then download it as of the signed seq."""
    label = "snapshot signature"
    try:
        status, answer, signing_seconds = _get(s, f"/v1/snapshots/{PURPOSE}/signature?{QUERY}")
    except (OSError, http.client.HTTPException) as exc:
        s.result.check(f"{label}: answered 200", False, repr(exc))
        return
    if not s.result.check(f"{label}: answered 200", status == 200, answer[:300].decode()):
        return
    signed = json.loads(answer)
    status, data, download_seconds = _get(
        s, f"/v1/snapshots/{PURPOSE}?{QUERY}&as_of={signed['as_of']}"
    )
    s.result.check(
        f"{label}: the SHA-256 and rows of exactly the snapshot downloaded",
        status == 200
        and signed["sha256"] == hashlib.sha256(data).hexdigest()
        and signed["bytes"] == len(data)
        and signed["rows"] == int(np.count_nonzero(s.population.allowed)),
        f"{signed['rows']:,} rows, {signed['bytes']:,} bytes signed; {len(data):,} downloaded",
    )
    _, jwks = clients.once_json(s.server.port, "GET", signatures.JWKS_PATH)
    try:
        signatures.check_snapshot_signature(signed, jwks)
        checks_out, why = True, ""
    except signatures.SignatureProblem as problem:
        checks_out, why = False, problem.message
    s.result.check(f"{label}: checks out against the server's JWKS", checks_out, why)
    s.add(
        Figure(
            "snapshot.signature",
            "snapshot signature (Parquet, allowed set), s",
            signing_seconds,
            "s",
            baseline=download_seconds,
            baseline_what="(downloading that snapshot)",
            ratio=signing_seconds / download_seconds if download_seconds else None,
            target="≤ 1.5 × the download",
            met=signing_seconds <= 1.5 * download_seconds,
        )
    )
