"""Fuzzing against the contract: schemathesis sends generated requests for every operation of
openapi.yaml to a live server, and every answer must pass every check schemathesis has."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from requests.structures import CaseInsensitiveDict
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free
from schemathesis.transport.prepare import get_exclude_headers

from tests.e2e.conftest import arrange
from tests.live import LiveServer, live_server

SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"
# A bounded run in `make test`; `make fuzz` raises it.
EXAMPLES = int(os.environ.get("CONSENT_FUZZ_EXAMPLES", "8"))
# The admin key reaches every operation; `make fuzz` also runs the other roles' keys (their 403s
# are one code path, which tests/api/test_auth.py covers role by role).
ROLES = os.environ.get("CONSENT_FUZZ_ROLES", "admin").split(",")
# The stateful test: chains of calls (a chain costs about what one operation's example does),
# and calls per chain.
CHAINS = int(os.environ.get("CONSENT_FUZZ_CHAINS", str(5 * EXAMPLES)))
STEPS = int(os.environ.get("CONSENT_FUZZ_STEPS", "6"))

CONFIG = SchemathesisConfig.from_str(
    """
# Every check is on (the default). What counts as refusing invalid data: schemathesis's
# statuses, and 413 (a batch over maxItems, pointed at the streamed filter), 414 and 431
# (gunicorn's limits on a request line and on headers, reached by generated values far beyond
# the documented lengths); a 5xx never does.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422",
                     "428", "429", "431"]
"""
)
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)

# Refusals of schema-valid input that depend on the ledger's state or on the clock, which no
# static contract can state: (the field the 422 names, a phrase of its message) -> what it is.
# Each is named in docs/RELIABILITY.md; only the "valid data is accepted" check is waived for
# them, and only for an answer that is exactly this refusal.
STATEFUL_REFUSALS = {
    ("after", "Must be at most"): "an `after` cursor beyond the ledger head",
    ("through_seq", "Must be at most"): "a remediation's `through_seq` beyond the ledger head",
    ("through_seq", "Must be at least"): "a remediation's `through_seq` before its run's as_of",
    ("as_of", "is beyond the ledger head"): "an `as_of` seq beyond the ledger head",
    ("as_of", "Must not be in the future"): "an `as_of` time not yet past",
    ("expires_at", "Must be later than now"): "an override's `expires_at` not in the future",
    ("purpose", "No such purpose as of seq"): "a run registered for a purpose the ledger lacks",
    ("notice_version", "No notice version"): "a notice_version never published for the purpose",
    # Not state but a rule between two fields, which OpenAPI 3.0's JSON Schema cannot state.
    ("dataset.rows_kept", "Must be at most rows_in"): "a dataset keeping more rows than it read",
    (
        "Idempotency-Key",
        "Reused with a different request",
    ): "an Idempotency-Key an earlier request used with another body",
    # A restriction names purposes the ledger must have; its window and the content times of a
    # batch are rules between fields; a selector given in two cases is given twice.
    ("purposes.*", "No such purpose."): "a restriction on a purpose the ledger lacks",
    ("window.to", "Must be later than window.from"): "a restriction window ending before it starts",
    ("jurisdictions.*", "is given twice"): "a selector given twice in two letter cases",
    (
        "content_times",
        "Must have exactly one entry per user ID",
    ): "content_times of another length than user_ids",
}


def stateful_refusal(response: Any) -> str | None:
    """What the answer refuses for the ledger's state or the time, if it is such a refusal."""
    if response.status_code == 412:
        return "If-Match naming a version other than the record's current one"
    if response.status_code != 422:
        return None
    errors = response.json().get("errors") or {}
    found = [_refusal(field, messages) for field, messages in errors.items()]
    # Every field refused must be refused for the state or a rule between fields.
    return found[0] if found and all(found) else None


def _refusal(field: str, messages: Any) -> str | None:
    for (name, phrase), what in STATEFUL_REFUSALS.items():
        named = field == name or (name.endswith(".*") and field.startswith(name[:-1]))
        if named and all(phrase in str(message) for message in messages):
            return what
    return None


# Headers that frame the HTTP message rather than carry the API's input. schemathesis adds
# undeclared headers to requests, these among them; gunicorn answers a made-up one itself,
# before the app sees the request (501 for an unknown transfer coding, 400 for a bad length),
# and no API contract describes them.
FRAMING_HEADERS = frozenset(
    ("connection", "content-length", "expect", "host", "keep-alive", "te", "trailer")
    + ("transfer-encoding", "upgrade")
)


# /v1/me answers to a user token; the arranged population's alice is its user.
USER = "alice"


def credential(case: schemathesis.Case[Any], live: LiveServer, role: str) -> str:
    """The role's key, or for /v1/me a fresh user token (a long run outlives any one token)."""
    if case.path == "/v1/me" or case.path.startswith("/v1/me/"):
        return live.user_token(USER)
    return live.tokens[role]


def sendable(case: schemathesis.Case[Any], token: str) -> dict[str, str]:
    """Ready the case to be sent: no made-up framing headers, and the key (see authorize)."""
    if case.headers:
        case.headers = CaseInsensitiveDict(
            {k: v for k, v in case.headers.items() if k.lower() not in FRAMING_HEADERS}
        )
    return authorize(case, token)


def authorize(case: schemathesis.Case[Any], token: str) -> dict[str, str]:
    """Put the key into the case itself, unless the case is about a request without one.

    Passed beside the case, a key also reached cases whose Authorization a mutation had
    removed among others, which schemathesis then judged as sent without it. In the case, it
    is judged as sent; what a request without a key gets is for the cases made for it (kept
    keyless, as schemathesis's own runner keeps them) and for ignored_auth.
    """
    auth = {"Authorization": f"Bearer {token}"}
    if "authorization" not in {name.lower() for name in get_exclude_headers(case)}:
        headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(case.headers or {})
        headers.update(auth)
        case.headers = headers
    return auth


def waived(case: schemathesis.Case[Any], response: Any) -> list[Any]:
    """The checks that cannot judge this answer, for a reason named above; usually none."""
    if stateful_refusal(response) or mislabelled(case) or malformed_members(response):
        return [positive_data_acceptance]
    if kept_after_delete(case):
        return [use_after_free]
    return []


def kept_after_delete(case: schemathesis.Case[Any]) -> bool:
    """Whether the case reads a user's record, which their DELETEs keep by design.

    DELETE /v1/users/{user_id} erases a user (every purpose denied from then on) and keeps their
    record and history as proof; DELETE of an override lifts it and keeps the row. Reading them
    afterwards is 200 on purpose, which use_after_free (expecting 404) cannot know.
    """
    return case.method == "GET" and case.operation.path.startswith("/v1/users/{user_id}")


def malformed_members(response: Any) -> bool:
    """Whether a run's members upload was refused for IDs that are not user IDs.

    Its body is text or an Arrow stream, which the spec can only call a string or binary; every
    line or row must be a user ID, and one that is not refuses the whole upload by its line or
    row number (all or nothing), which no schema of an untyped body can say.
    """
    if response.status_code != 422:
        return False
    errors = response.json().get("errors") or {}
    return bool(errors) and all(
        name.startswith(("row ", "line ")) and all("not a valid user ID" in m for m in msgs)
        for name, msgs in errors.items()
    )


def mislabelled(case: schemathesis.Case[Any]) -> bool:
    """Whether the case carries a header value its own schema refuses (so it is no valid data).

    schemathesis 4.32's coverage phase cannot spell a header value whose pattern needs quotes
    (If-Match), seeds the header with a refused placeholder ('') and still calls the cases built
    on it positive; the service rightly answers them 400.
    """
    headers: Mapping[str, Any] = case.headers or {}
    return any(
        p.name in headers and not p.is_valid(headers[p.name]) for p in case.operation.headers
    )


@schemathesis.serializer("application/vnd.apache.arrow.stream")
def arrow_body(ctx: object, value: object) -> bytes:
    """A filter body is an Arrow IPC stream, which the spec can only call binary: generated
    bytes go as a stream of one string column (their lines), as a pipeline sends IDs; anything
    else goes as it is, no stream at all."""
    data = getattr(value, "data", value)  # schemathesis may wrap generated bytes
    if not isinstance(data, bytes):
        return str(value).encode()
    ids = pa.array(data.decode("utf-8", "replace").splitlines(), pa.string())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("user_id", pa.string())])) as stream:
        stream.write_batch(pa.record_batch([ids], names=["user_id"]))
    return bytes(sink.getvalue().to_pybytes())


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server with a purpose and a population, so generated requests reach real paths."""
    with live_server(tmp_path_factory.mktemp("fuzz")) as live:
        arrange(live)
        yield live


def test_every_check_schemathesis_has_is_on() -> None:
    load_all_checks()
    config = schema.config.checks_config_for()
    # max_response_time is on only with a limit; latency has its own figures (bench/).
    names = set(CHECKS.get_all_names()) - {"max_response_time"}
    assert names >= {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "use_after_free",
        "ensure_resource_availability",
        "missing_required_header",
        "ignored_auth",
        "unsupported_method",
    }
    assert sorted(n for n in names if not config.get_by_name(name=n).enabled) == []


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_operation_answers_within_its_contract(
    case: schemathesis.Case[Any], role: str, fuzzed: LiveServer
) -> None:
    headers = sendable(case, credential(case, fuzzed, role))
    response = case.call(base_url=fuzzed.base_url)
    case.validate_response(
        response,
        excluded_checks=waived(case, response),
        headers=headers,
        transport_kwargs={"base_url": fuzzed.base_url},
    )


def test_chains_of_calls_keep_the_contract(fuzzed: LiveServer) -> None:
    """The stateful phase: calls chained by what one answer gives the next (links schemathesis
    infers from the spec), so the checks that judge a call by an earlier one have chains to
    judge (ensure_resource_availability: what was created can be read; use_after_free)."""
    failures: list[Exception] = []

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case[Any]) -> None:
            self.auth = sendable(case, credential(case, fuzzed, "admin"))

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": fuzzed.base_url}

        def validate_response(
            self, response: Any, case: schemathesis.Case[Any], *_: Any, **kwargs: Any
        ) -> None:
            try:
                case.validate_response(
                    response,
                    excluded_checks=waived(case, response),
                    headers=self.auth,
                    transport_kwargs=kwargs,
                    recorder=self.recorder,
                )
            except Exception as failure:
                failures.append(failure)
                raise

    # Flaky, as above: Hypothesis sees a chain draw differently the second time (a bundle
    # filled by other answers), as schemathesis's own runner does, which counts only failed steps.
    with contextlib.suppress(Flaky):
        Workflow.run(
            settings=settings(
                max_examples=CHAINS,
                stateful_step_count=STEPS,
                # Shrinking replays chains against a server whose state has moved on since.
                phases=[Phase.explicit, Phase.generate],
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
        )
    if failures:
        raise failures[0]
