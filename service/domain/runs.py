"""Training runs' own rules: how a run may be named, and what a remediation may declare."""

from __future__ import annotations

import re

RUN_NAME_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
RUN_NAME_RE = re.compile(RUN_NAME_PATTERN)
RUN_NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ : -"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# retrained: a new model without the affected members; excluded_from_next: they stay out of
# the next run; unlearned: removed from this model; retained: kept, with the reason on record.
REMEDIATION_ACTIONS = ("retrained", "excluded_from_next", "unlearned", "retained")
STREAM_FORMATS = ("text", "ndjson", "parquet")
