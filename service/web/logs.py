"""Structured logs: one JSON object per line, each carrying the request id it belongs to, and an
access log that records what was asked and answered — never keys, cookies or bodies."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from gunicorn.glogging import Logger as GunicornLogger
from pythonjsonlogger.json import JsonFormatter

access_log = logging.getLogger("consent.access")

# Fields of every line; `request_id` is filled in by RequestIdFilter.
FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s %(request_id)s"


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being served (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id") if has_request_context() else None
        return True


class ServiceLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger without its access log: the app writes its own access line.

    With a logconfig_dict, gunicorn builds its access-log atoms for every request even when
    no access log is configured; skipping that is measurable on the single lookup.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Write nothing (see the class docstring)."""


class ClientTimeoutFilter(logging.Filter):
    """Turn gunicorn's traceback for a client that stalled past its deadline into one line.

    A stalled client is the client's failure, dropped on purpose (service/workers.py); a
    traceback per dropped connection would bury real errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TimeoutError):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "client connection stalled past its deadline; dropped", ()
        return True


def json_formatter() -> JsonFormatter:
    """The formatter gunicorn's logconfig_dict builds for every handler."""
    return JsonFormatter(
        FORMAT, rename_fields={"levelname": "level", "asctime": "time", "process": "pid"}
    )


def logconfig(access: bool) -> dict[str, Any]:
    """logging.config dict for the service under gunicorn: JSON lines, request ids.

    Errors and the service's own lines go to stderr, the access log (when `access`) to stdout.
    """
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "service.web.logs.RequestIdFilter"},
            "client_timeout": {"()": "service.web.logs.ClientTimeoutFilter"},
        },
        "formatters": {"json": {"()": "service.web.logs.json_formatter"}},
        "handlers": {
            "stdout": {**handler, "stream": "ext://sys.stdout"},
            "stderr": {**handler, "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {
                "level": "INFO",
                "handlers": ["stderr"],
                "filters": ["client_timeout"],
                "propagate": False,
            },
            "consent.access": {
                "level": "INFO" if access else "WARNING",
                "handlers": ["stdout"],
                "propagate": False,
            },
        },
    }


def _log_access(response: Response) -> Response:
    if access_log.isEnabledFor(logging.INFO):
        started = g.get("request_started")
        actor = g.get("actor")
        rule = request.url_rule
        access_log.info(
            "request",
            extra={
                "method": request.method,
                # The path only: a query string may carry free text (a lift's reason).
                "path": request.path,
                "route": rule.rule if rule is not None else None,
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 3) if started else None,
                "key": actor.name if actor is not None else None,
                "remote": request.remote_addr,
            },
        )
    return response


def init_app(app: Flask) -> None:
    """Write the access log line of every request (when the consent.access logger is on)."""
    app.after_request(_log_access)
