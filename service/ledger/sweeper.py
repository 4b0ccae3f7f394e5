"""A background thread per worker that records override expiries as they fall due."""

from __future__ import annotations

import logging
import threading

from flask import Flask

log = logging.getLogger(__name__)


def start(app: Flask, interval: float) -> threading.Thread:
    """Run overrides.expire_due every `interval` seconds in a daemon thread."""
    from service.ledger import overrides

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                with app.app_context():
                    count = overrides.expire_due()
                if count:
                    log.info("recorded %d override expiries", count)
            except Exception:  # keep sweeping; an outage is logged and retried next tick
                log.exception("override expiry sweep failed")

    thread = threading.Thread(target=loop, name="consent-expiry-sweeper", daemon=True)
    thread.start()
    return thread
