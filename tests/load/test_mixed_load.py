"""A mixed load on a live server: writers (choices with If-Match or Idempotency-Key, overrides
placed and lifted), lookups, a filter and a change-feed consumer at once. Zero errors, one
event per accepted write, every event seen once by the consumer, and a final state that equals
a replay of the events. Bounded in `make test`; `make soak` runs it for longer."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PURPOSE, arrange
from tests.live import LiveServer, live_server

SECONDS = float(os.environ.get("CONSENT_SOAK_SECONDS", "12"))
WRITERS = 3
USERS_PER_WRITER = 5


class Tally:
    """What the clients did and saw, shared between their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()  # event kind -> accepted writes
        self.errors: list[str] = []
        self.requests = 0

    def saw(self, what: str, response: httpx.Response, ok: tuple[int, ...]) -> bool:
        with self.lock:
            self.requests += 1
            if response.status_code not in ok:
                self.errors.append(f"{what}: {response.status_code} {response.text[:200]}")
                return False
            return True


def writer(live: LiveServer, n: int, tally: Tally, stop: threading.Event) -> None:
    """Flip its own users' choices (If-Match or Idempotency-Key), place and lift overrides."""
    users = [f"load-{n}-{i}" for i in range(USERS_PER_WRITER)]
    app = {"Authorization": f"Bearer {live.tokens['app']}"}
    support = {"Authorization": f"Bearer {live.tokens['support']}"}
    etags: dict[str, str] = {}
    step = 0
    with httpx.Client(base_url=live.base_url, timeout=30) as http:
        while not stop.is_set():
            uid = users[step % len(users)]
            state = "denied" if (step // len(users)) % 2 else "granted"
            if step % 2 and uid in etags:
                headers = {**app, "If-Match": etags[uid]}
            else:
                headers = {**app, "Idempotency-Key": uuid.uuid4().hex}
            r = http.put(f"/v1/users/{uid}/consents/{PURPOSE}", json={"state": state},
                         headers=headers)  # fmt: skip
            if tally.saw("choice", r, (200,)):
                etags[uid] = r.headers["ETag"]
                with tally.lock:
                    tally.accepted["choice_set"] += 1
            if step % 5 == 4:
                r = http.post(f"/v1/users/{uid}/overrides", headers=support, json={
                    "purpose": PURPOSE, "state": "denied", "reason": "load test", "ticket": "L-1",
                })  # fmt: skip
                if tally.saw("override", r, (201,)):
                    with tally.lock:
                        tally.accepted["override_placed"] += 1
                    r = http.delete(f"/v1/users/{uid}/overrides/{r.json()['id']}?reason=done",
                                    headers=support)  # fmt: skip
                    if tally.saw("lift", r, (200,)):
                        with tally.lock:
                            tally.accepted["override_lifted"] += 1
            step += 1


def reader(live: LiveServer, tally: Tally, stop: threading.Event) -> None:
    """Lookups and filters of the users being written, and of some never seen."""
    pipeline = {"Authorization": f"Bearer {live.tokens['pipeline']}"}
    ids = [f"load-{n}-{i}" for n in range(WRITERS) for i in range(USERS_PER_WRITER)]
    with httpx.Client(base_url=live.base_url, timeout=30, headers=pipeline) as http:
        while not stop.is_set():
            tally.saw("lookup", http.get(f"/v1/lookup/{PURPOSE}/{ids[tally.requests % 15]}"),
                      (200,))  # fmt: skip
            tally.saw("batch", http.post(f"/v1/lookup/{PURPOSE}", json={"user_ids": ids}), (200,))
            body = "".join(f"{u}\n" for u in [*ids, "never-seen"]).encode()
            text = {"Content-Type": "text/plain"}
            r = http.post(f"/v1/filter/{PURPOSE}", content=body, headers=text)
            tally.saw("filter", r, (200,))


def consumer(live: LiveServer, seen: list[int], tally: Tally, stop: threading.Event) -> None:
    """Follow the change feed from the start, as a pipeline would, until told to stop and
    caught up with the head."""
    pipeline = {"Authorization": f"Bearer {live.tokens['pipeline']}"}
    cursor = 0
    with httpx.Client(base_url=live.base_url, timeout=30, headers=pipeline) as http:
        while True:
            # Whether the writers had finished is read before the page: a page read before
            # they finished may end short of their last event, even if they finish just after.
            writers_done = stop.is_set()
            r = http.get("/v1/changes", params={"after": cursor, "limit": 50})
            if not tally.saw("changes", r, (200,)):
                return
            page = r.json()
            seen.extend(e["seq"] for e in page["events"])
            cursor = page["next_after"]
            if not page["has_more"]:
                if writers_done and cursor >= page["head"]:
                    return
                time.sleep(0.05)


@pytest.fixture
def loaded(tmp_path: Path) -> Any:
    with live_server(tmp_path) as live:
        arrange(live)
        yield live


def test_a_mixed_load_loses_nothing_and_ends_in_the_state_a_replay_gives(
    loaded: LiveServer,
) -> None:
    live, tally, stop = loaded, Tally(), threading.Event()
    seen: list[int] = []
    threads = [threading.Thread(target=writer, args=(live, n, tally, stop)) for n in range(WRITERS)]
    threads += [threading.Thread(target=reader, args=(live, tally, stop)) for _ in range(2)]
    # The consumer stops only once every writer has finished and it has reached the head.
    writers_done = threading.Event()
    follower = threading.Thread(target=consumer, args=(live, seen, tally, writers_done))
    began = time.monotonic()
    for t in [*threads, follower]:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    writers_done.set()
    follower.join(60)
    elapsed = time.monotonic() - began
    assert not follower.is_alive(), "the feed consumer did not reach the head within 60 s"

    assert not tally.errors, tally.errors[:5]
    admin = {"Authorization": f"Bearer {live.tokens['admin']}"}
    with httpx.Client(base_url=live.base_url, timeout=30, headers=admin) as http:
        events: list[dict[str, Any]] = []
        cursor, more = 0, True
        while more:
            page = http.get("/v1/changes", params={"after": cursor, "limit": 10_000}).json()
            events += page["events"]
            cursor, more = page["next_after"], page["has_more"]
        kinds = Counter(e["kind"] for e in events if str(e["user_id"]).startswith("load-"))
        assert {k: kinds[k] for k in tally.accepted} == dict(tally.accepted)
        # The consumer saw every event exactly once, in seq order.
        assert seen == [e["seq"] for e in events]
        # Replay: each user's effective state is the `after` of their last event.
        replayed: dict[str, str] = {}
        for e in events:
            if e["purpose"] == PURPOSE and str(e["user_id"]).startswith("load-"):
                replayed[e["user_id"]] = e["after"]
        for uid, state in replayed.items():
            doc = http.get(f"/v1/users/{uid}/consents/{PURPOSE}").json()
            assert doc["state"] == state, (uid, doc, state)
        snapshot = http.get(
            f"/v1/snapshots/{PURPOSE}", params={"format": "csv", "as_of": cursor}
        ).text.splitlines()[1:]
        allowed = {line.split(",")[0] for line in snapshot}
        assert {u for u, s in replayed.items() if s == "granted"} == {
            u for u in allowed if u.startswith("load-")
        }
    print(
        f"\n{elapsed:.0f} s: {tally.requests} requests, 0 errors, "
        f"{sum(tally.accepted.values())} writes = {sum(kinds[k] for k in tally.accepted)} "
        f"events, consumer saw {len(seen)} events once each"
    )
