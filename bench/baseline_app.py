"""The baseline: a bare Flask app answering a constant small JSON, served like the real one.

Run it with the service's own gunicorn settings:
`gunicorn --config python:service.runtime.gunicorn_conf bench.baseline_app:app`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from service.web import logs

CONSTANT_DECISION = {
    "user_id": "0",
    "purpose": "model_training",
    "allowed": False,
    "state": "denied",
    "basis": "unknown",
    "as_of": 0,
}

app = Flask(__name__)
# The server set-up includes its access log: the baseline writes the same line per request
# (gunicorn's own access log, which both used to write, is off in the shared settings).
logs.init_app(app)


# The same URL shape as the single lookup, so one wrk script drives both servers.
@app.get("/v1/lookup/<string:purpose>/<string:user_id>")
def constant_lookup(purpose: str, user_id: str) -> dict[str, Any]:
    """Answer the same small JSON whatever is asked."""
    return CONSTANT_DECISION


@app.get("/readyz")
def ready() -> dict[str, str]:
    """Ready as soon as it is up."""
    return {"status": "ok"}
