"""Liveness and readiness probes; they need no key."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from service.domain.errors import Unavailable
from service.runtime import readiness
from service.web import metrics
from service.web.api.parsing import Blueprint
from service.web.schemas import HealthSchema

blp = Blueprint("health", __name__, description="Health probes")


@blp.route("/healthz")
class Healthz(MethodView):
    """Liveness."""

    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self) -> Any:
        """Answer 200 while the process is up."""
        return {"status": "ok", "checks": {}}


@blp.route("/readyz")
class Readyz(MethodView):
    """Readiness."""

    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self) -> Any:
        """Answer 200 when the database is reachable and its schema at head, else 503."""
        checks = readiness.check()
        if any(v != "ok" for v in checks.values()):
            raise Unavailable(
                "Not ready: " + "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"),
                retry_after=5,
            )
        return {"status": "ok", "checks": checks}


@blp.route("/metrics")
class Metrics(MethodView):
    """Prometheus metrics."""

    @blp.doc(
        security=[],
        responses={
            "200": {
                "description": "Prometheus text format: requests and latency by route and "
                "status, decisions by basis, ledger head seq, read-index lag.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def get(self) -> Response:
        """Serve every metric, aggregated across the server's workers."""
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)
