"""Shared by the end-to-end tests: one live server per module with a known population, and a
fault proxy in front of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http_faults import FaultProxy, fault_proxy
from tests.live import LiveServer, live_server

PURPOSE = "model_training"
US = [str(1000 + i) for i in range(60)]  # granted by default, except those who chose denied
DE = [str(2000 + i) for i in range(20)]  # EEA: denied by default
CHOSE_DENIED = set(US[::7])
ALLOWED = [u for u in US if u not in CHOSE_DENIED] + ["alice"]


def arrange(live: LiveServer) -> None:
    """A purpose denied in the EEA, granted elsewhere, and a population through the API."""
    with httpx.Client(base_url=live.base_url, timeout=30) as http:

        def send(method: str, path: str, role: str, body: Any) -> None:
            headers = {"Authorization": f"Bearer {live.tokens[role]}"}
            r = http.request(method, path, json=body, headers=headers)
            assert r.status_code in (200, 201), r.text

        send("POST", "/v1/purposes", "admin", {
            "key": PURPOSE, "title": "Model training",
            "defaults": {"EEA": "denied", "*": "granted"}, "unknown_subject": "denied",
        })  # fmt: skip
        for uid in US + ["alice"]:
            send("PUT", f"/v1/users/{uid}", "app", {"jurisdiction": "US"})
        for uid in DE + ["bob"]:
            send("PUT", f"/v1/users/{uid}", "app", {"jurisdiction": "DE"})
        for uid in CHOSE_DENIED:
            send("PUT", f"/v1/users/{uid}/consents/{PURPOSE}", "app", {"state": "denied"})
    settle(live)


def settle(live: LiveServer) -> None:
    """Wait until both workers' read indexes have caught up with the ledger's head.

    Reads without as_of answer as of the index's seq, which follows the head within a poll.
    """
    token = {"Authorization": f"Bearer {live.tokens['pipeline']}"}
    head = httpx.get(f"{live.base_url}/v1/changes?limit=1", headers=token).json()["head"]
    deadline = time.monotonic() + 10
    caught_up = 0
    while caught_up < 10 and time.monotonic() < deadline:
        with httpx.Client(base_url=live.base_url, headers=token) as fresh:
            as_of = fresh.get(f"/v1/lookup/{PURPOSE}/1000").json()["as_of"]
        caught_up = caught_up + 1 if as_of >= head else 0
    assert caught_up == 10, "the workers' indexes did not reach the head"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server with the population, shared by this module's tests (they only read)."""
    with live_server(tmp_path_factory.mktemp("client")) as live:
        arrange(live)
        yield live


@pytest.fixture(scope="module")
def proxy(server: LiveServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the server."""
    with fault_proxy(server.port) as p:
        yield p
