"""gunicorn settings shared by `make run` and the benchmarks, overridable from the environment."""

from __future__ import annotations

import os

bind = os.environ.get("CONSENT_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONSENT_WORKERS", "2"))
# Threads let one worker stream a long filter while it still answers short lookups.
worker_class = "gthread"
threads = int(os.environ.get("CONSENT_THREADS", "4"))
keepalive = 5
# Streams of millions of IDs take minutes; the timeout is for stuck workers, not slow clients.
timeout = int(os.environ.get("CONSENT_WORKER_TIMEOUT", "300"))
graceful_timeout = 30
accesslog = os.environ.get("CONSENT_ACCESS_LOG") or None
wsgi_app = "service:create_app()"
