"""A training run as an OpenLineage RunEvent, with the consentLedger input-dataset facet."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

from service.domain.clock import isoformat
from service.reads.runs import pinned_run, require_members

OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACET_SCHEMA = "https://consent-ledger.invalid/spec/facets/ConsentLedgerInputFacet.json"
PRODUCER = "https://consent-ledger.invalid/consent-ledger"
RUN_NAMESPACE = uuid.UUID("6f1c3b0e-3f59-4f4e-9a55-2f7f4c6a0d61")


def _dataset_names(uri: str) -> tuple[str, str]:
    """OpenLineage (namespace, name) of a dataset URI: scheme and authority, then the path."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return "file", uri
    namespace = f"{parts.scheme}://{parts.netloc}" if parts.netloc else parts.scheme
    name = parts.path or uri
    if parts.query:
        name += "?" + parts.query
    return namespace, name


def lineage(run_id: int, ledger: str) -> dict[str, Any]:
    """The run as an OpenLineage RunEvent (COMPLETE): its dataset as the input, with a
    consentLedger input facet saying under which answer of this ledger it was used."""
    run, recorded, seq = pinned_run(run_id, None)
    recorded = require_members(run, recorded, seq)
    facet = {
        "_producer": PRODUCER,
        "_schemaURL": FACET_SCHEMA,
        "purpose": run.purpose,
        "as_of": run.as_of,
        "ledger": ledger,
        "run_id": run.id,
        "members": recorded.members,
        "not_allowed": recorded.not_allowed,
        "members_sha256": recorded.sha256,
    }
    if run.dataset_uri is not None:
        namespace, name = _dataset_names(run.dataset_uri)
    else:
        namespace, name = ledger, f"runs/{run.name}/members"
    dataset: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "facets": {},
        "inputFacets": {"consentLedger": facet},
    }
    if run.dataset_sha256:
        dataset["facets"]["version"] = {
            "_producer": PRODUCER,
            "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/"
            "DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
            "datasetVersion": run.dataset_sha256,
        }
    return {
        "eventType": "COMPLETE",
        "eventTime": isoformat(recorded.recorded_at),
        "run": {"runId": str(uuid.uuid5(RUN_NAMESPACE, f"{ledger}/runs/{run.id}")), "facets": {}},
        "job": {"namespace": ledger, "name": run.name, "facets": {}},
        "inputs": [dataset],
        "outputs": [],
        "producer": PRODUCER,
        "schemaURL": OPENLINEAGE_SCHEMA,
    }
