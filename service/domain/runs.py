"""Training runs' own rules: how a run may be named, and what a remediation may declare."""

from __future__ import annotations

import re

from consent_client.wire import REMEDIATION_ACTIONS, RUN_NAME_PATTERN

__all__ = ["REMEDIATION_ACTIONS", "RUN_NAME_PATTERN", "RUN_NAME_RE", "RUN_NAME_RULE"]

RUN_NAME_RE = re.compile(RUN_NAME_PATTERN)
RUN_NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ : -"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# REMEDIATION_ACTIONS (from the wire module both sides share): retrained, a new model without
# the affected members; excluded_from_next, they stay out of the next run; unlearned, removed
# from this model; retained, kept, with the reason on record.
STREAM_FORMATS = ("text", "ndjson", "parquet")
