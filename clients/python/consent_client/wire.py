"""The wire constants the service and its clients must agree on, defined once for both sides."""

from __future__ import annotations

from typing import Final

# Every pipeline read that streams (filter, snapshots) says which seq it answers as of here.
AS_OF_HEADER: Final = "Consent-As-Of"

# Bodies of POST /v1/filter/{purpose}: newline-separated IDs, or an Arrow IPC stream of one ID
# column, answered in kind (an Arrow answer has one boolean column, ALLOWED_COLUMN).
TEXT_IDS: Final = "text/plain"
ARROW_STREAM: Final = "application/vnd.apache.arrow.stream"
ALLOWED_COLUMN: Final = "allowed"
# The most IDs one POST /v1/lookup/{purpose} may carry; more go through the filter.
MAX_BATCH: Final = 10_000

# GET /v1/snapshots/{purpose}: which set (the first is the default), and each format (the first
# is the default) with the media type its answer comes as.
SNAPSHOT_SETS: Final = ("allowed", "denied")
SNAPSHOT_MEDIA_TYPES: Final = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
SNAPSHOT_FORMATS: Final = tuple(SNAPSHOT_MEDIA_TYPES)

# Training runs: a run's name (unique), the members upload's Arrow column, and the remediations.
RUN_NAME_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
MEMBER_COLUMN: Final = "user_id"
REMEDIATION_ACTIONS: Final = ("retrained", "excluded_from_next", "unlearned", "retained")
# IDs kept as numbers (canonical digit strings of at most 18 digits); the rest are text.
NUMERIC_ID_PATTERN: Final = r"^(0|[1-9][0-9]{0,17})$"
NUMERIC_LIMIT: Final = 10**18

# Content times: when the content an ID is asked about was made or processed, for windowed
# restrictions (an answer without one is denied by them). Every time on the wire is RFC 3339 with
# an offset or Z (a match of RFC3339_PATTERN, whole), sent as ?CONTENT_TIME_PARAM= on one lookup,
# CONTENT_TIMES_FIELD (aligned with user_ids, null = none) in a batch, `user_id<TIME_SEPARATOR>time`
# lines in a text filter (a line without it: none), or beside the IDs as the Arrow column
# CONTENT_TIME_COLUMN (a timestamp with a time zone, null = none) in an Arrow filter.
RFC3339_PATTERN: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
CONTENT_TIME_PARAM: Final = "content_time"
CONTENT_TIMES_FIELD: Final = "content_times"
CONTENT_TIME_COLUMN: Final = "content_time"
TIME_SEPARATOR: Final = "\t"
