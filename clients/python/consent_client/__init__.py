"""The Consent Ledger pipeline client: ask before training, fail closed, prove what was asked."""

from consent_client.client import (
    AffectedStream,
    ConsentClient,
    ConsentClientError,
    ConsentRefused,
    ConsentUnavailable,
    FilterStream,
    LookupResult,
    RetryPolicy,
    SnapshotResult,
)
from consent_client.datasets import DatasetError, FilterSummary, TimeColumn, filter_file
from consent_client.times import ContentTimeError

__all__ = [
    "AffectedStream",
    "ConsentClient",
    "ConsentClientError",
    "ConsentRefused",
    "ConsentUnavailable",
    "ContentTimeError",
    "DatasetError",
    "FilterStream",
    "FilterSummary",
    "LookupResult",
    "RetryPolicy",
    "SnapshotResult",
    "TimeColumn",
    "filter_file",
]
