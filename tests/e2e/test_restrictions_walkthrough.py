"""A regulator's order as a new user would meet it, over a live server: place the 2024-style
restriction (EEA, content processed between two dates), watch lookups with and without content
times, filter a file with a time column and take a snapshot; lift it; ask again as of the
earlier seq and get the earlier answers."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import PURPOSE, settle
from tests.live import LiveServer

CONSENT = Path(sys.executable).parent / "consent"
EEA_OPTED_IN = ["ie-1", "ie-2", "fr-1"]  # EEA users who chose to allow training
US_USER = "us-1"
INSIDE, OUTSIDE = "2024-06-20T09:00:00Z", "2024-09-01T00:00:00Z"
ORDER = {
    "authority": "Data Protection Commission (IE)",
    "instrument": "High Court undertaking, 2024-08-06",
    "purposes": [PURPOSE],
    "jurisdictions": ["EEA"],
    "window": {
        "from": "2024-05-16T00:00:00Z",
        "to": "2024-08-01T00:00:00Z",
        "time_basis": "processed",
    },
    "reason": "Stop using EU/EEA users' posts processed in the window.",
    "ticket": "LEGAL-2024-17",
}


def consent(live: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`consent ARGS` as a pipeline would run it, with a pipeline key in the environment."""
    env = {**os.environ, "CONSENT_API_KEY": live.tokens["pipeline"], "CONSENT_URL": live.base_url}
    return subprocess.run(
        [str(CONSENT), *args], capture_output=True, text=True, env=env, timeout=120
    )


class Api:
    """Requests by role against the live server."""

    def __init__(self, live: LiveServer, http: httpx.Client) -> None:
        self.live = live
        self.http = http

    def __call__(self, method: str, path: str, role: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.live.tokens[role]}"}
        return self.http.request(method, path, headers=headers, **kwargs)

    def lookup(self, user: str, **params: str) -> dict[str, Any]:
        r = self("GET", f"/v1/lookup/{PURPOSE}/{user}", "pipeline", params=params)
        assert r.status_code == 200, r.text
        return dict(r.json())


def answers(api: Api, as_of: str | None = None) -> dict[tuple[str, str | None], str]:
    """Basis (or 'allowed') of each probe user, without a time, inside and outside the window."""
    out: dict[tuple[str, str | None], str] = {}
    for user in [*EEA_OPTED_IN, US_USER]:
        for when in (None, INSIDE, OUTSIDE):
            params = {} if as_of is None else {"as_of": as_of}
            if when is not None:
                params["content_time"] = when
            d = api.lookup(user, **params)
            out[user, when] = "allowed" if d["allowed"] else d["basis"]
    return out


def kept_by_filter(live: LiveServer, tmp: Path, as_of: str | None = None) -> list[str]:
    """`consent filter --time-column processed_at` over posts inside and outside the window."""
    src, dst = tmp / "posts.csv", tmp / f"kept-{as_of}.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["post_id", "user_id", "processed_at"])
        for i, user in enumerate([*EEA_OPTED_IN, US_USER]):
            w.writerow([f"p{i}a", user, INSIDE])
            w.writerow([f"p{i}b", user, OUTSIDE])
            w.writerow([f"p{i}c", user, ""])
    args = ["filter", "--purpose", PURPOSE, "--column", "user_id", "--time-column",
            "processed_at", str(src), str(dst)]  # fmt: skip
    if as_of is not None:
        args[1:1] = ["--as-of", as_of]
    done = consent(live, *args)
    assert done.returncode == 0, done.stderr
    with dst.open() as f:
        return [row["post_id"] for row in csv.DictReader(f)]


def snapshot_allowed(live: LiveServer, tmp: Path, as_of: str | None = None) -> set[str]:
    """The users in the allowed snapshot (`consent snapshot`), among the probe users."""
    dst = tmp / f"allowed-{as_of}.csv"
    args = ["snapshot", "--purpose", PURPOSE, "--set", "allowed", str(dst)]
    if as_of is not None:
        args[1:1] = ["--as-of", as_of]
    done = consent(live, *args)
    assert done.returncode == 0, done.stderr
    with dst.open() as f:
        return {r["user_id"] for r in csv.DictReader(f)} & {*EEA_OPTED_IN, US_USER}


def test_the_2024_order_is_placed_answered_with_and_without_times_lifted_and_reproduced(
    server: LiveServer, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        walk_through(Api(server, http), server, tmp_path)


def walk_through(api: Api, server: LiveServer, tmp_path: Path) -> None:
    """The walk-through itself, on one HTTP connection pool."""
    for user, country in [("ie-1", "IE"), ("ie-2", "IE"), ("fr-1", "FR"), (US_USER, "US")]:
        assert api("PUT", f"/v1/users/{user}", "app", json={"jurisdiction": country}).is_success
        r = api("PUT", f"/v1/users/{user}/consents/{PURPOSE}", "app", json={"state": "granted"})
        assert r.status_code == 200, r.text
    settle(server)
    before = str(api("GET", "/v1/changes?limit=1", "pipeline").json()["head"])
    everyone_allowed = {(u, t): "allowed" for (u, t) in answers(api)}
    assert answers(api) == everyone_allowed

    placed = api("POST", "/v1/restrictions", "admin", json=ORDER)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["window"] == ORDER["window"]
    assert order["lifted_seq"] is None
    settle(server)
    during = str(api("GET", "/v1/changes?limit=1", "pipeline").json()["head"])

    # Without a time nothing shows the post is outside the window: denied (fail closed).
    restricted: dict[tuple[str, str | None], str] = {
        **everyone_allowed,
        **{(u, None): "restriction" for u in EEA_OPTED_IN},
        **{(u, INSIDE): "restriction" for u in EEA_OPTED_IN},
    }
    assert answers(api) == restricted
    decision = api.lookup("ie-1", content_time=INSIDE)
    assert decision["restriction_id"] == order["id"]
    assert decision["legal_basis"] == "consent"

    # The feed says how many answers the order changed: the three EEA users who had opted in.
    feed = api("GET", f"/v1/changes?after={before}&purpose={PURPOSE}", "pipeline").json()
    assert [(e["kind"], e["data"]["changed"]) for e in feed["events"]] == [
        ("restriction_placed", 3)
    ]

    # A pipeline filters posts by their processing time; the snapshot has no times.
    kept_during = kept_by_filter(server, tmp_path)
    assert kept_during == ["p0b", "p1b", "p2b", "p3a", "p3b", "p3c"]
    assert snapshot_allowed(server, tmp_path) == {US_USER}

    lifted = api("DELETE", f"/v1/restrictions/{order['id']}", "admin",
                 params={"reason": "Undertaking ended"})  # fmt: skip
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["lifted_seq"] is not None
    settle(server)
    assert answers(api) == everyone_allowed
    assert len(kept_by_filter(server, tmp_path)) == 12
    assert snapshot_allowed(server, tmp_path) == {*EEA_OPTED_IN, US_USER}

    # The same questions as of the seqs before and during the order get the answers of then.
    assert answers(api, as_of=during) == restricted
    assert answers(api, as_of=before) == everyone_allowed
    assert kept_by_filter(server, tmp_path, as_of=during) == kept_during
    assert snapshot_allowed(server, tmp_path, as_of=during) == {US_USER}
    listed = api("GET", "/v1/restrictions", "support").json()
    assert [(r["id"], r["lifted_seq"]) for r in listed] == [
        (order["id"], lifted.json()["lifted_seq"])
    ]
