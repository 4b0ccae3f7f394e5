"""A background thread per worker that records override expiries and prunes idempotency records."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from flask import Flask

log = logging.getLogger(__name__)

# Per tick and worker at most this many batches of idempotency records are deleted, so one
# tick never runs long; a larger backlog is worked off over the next ticks.
PRUNE_BATCHES_PER_TICK = 20


def sweep(app: Flask) -> None:
    """One tick: record due override expiries, then prune idempotency records past their TTL.

    Each task is tried on its own: an outage is logged and retried next tick, and a failure of
    one never skips the other.
    """
    from service.ledger import idempotency, overrides

    tasks: tuple[tuple[str, Callable[[], int]], ...] = (
        ("override expiries recorded", overrides.expire_due),
        (
            "idempotency records pruned",
            partial(idempotency.prune, max_batches=PRUNE_BATCHES_PER_TICK),
        ),
    )
    for what, task in tasks:
        try:
            with app.app_context():
                count = task()
            if count:
                log.info("%s: %d", what, count)
        except Exception:  # keep sweeping
            log.exception("sweep failed: %s", what)


def start(app: Flask, interval: float) -> threading.Thread:
    """Run sweep every `interval` seconds in a daemon thread."""

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            sweep(app)

    thread = threading.Thread(target=loop, name="consent-expiry-sweeper", daemon=True)
    thread.start()
    return thread
