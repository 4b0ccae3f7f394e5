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
# Per-ID content times for windowed restrictions: an Arrow timezone-aware timestamp column of
# this name beside the IDs, or text lines `user_id<TAB>RFC 3339 time`.
CONTENT_TIME_COLUMN: Final = "content_time"
TIME_SEPARATOR: Final = "\t"

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
