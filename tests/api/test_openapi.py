"""The committed openapi.yaml is what the code generates: valid, complete, problem+json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from service.domain.validation import PURPOSE_KEY_RE, SELECTORS, USER_ID_RE
from service.runtime.extensions import api as smorest_api
from service.web.fields import AS_OF_RE
from service.web.problems import PROBLEM_MEDIA_TYPE

OPENAPI_YAML = Path(__file__).resolve().parents[2] / "openapi.yaml"

# The paths of DESIGN.md's API table that are built so far.
DESIGNED_PATHS = (
    "/v1/purposes",
    "/v1/purposes/{key}",
    "/v1/users/{user_id}",
    "/v1/users/{user_id}/consents",
    "/v1/users/{user_id}/consents/{purpose}",
    "/v1/users/{user_id}/events",
    "/v1/users/{user_id}/overrides",
    "/v1/users/{user_id}/overrides/{override_id}",
    "/v1/runs",
    "/v1/runs/{run_id}",
    "/v1/runs/{run_id}/members",
    "/v1/runs/{run_id}/violations",
    "/v1/runs/{run_id}/affected",
    "/v1/runs/{run_id}/remediations",
    "/v1/runs/{run_id}/lineage",
    "/v1/users/{user_id}/runs",
    "/v1/me",
    "/v1/me/consents/{purpose}",
    "/v1/me/events",
    "/v1/me/runs",
    "/v1/me/record",
    "/healthz",
    "/readyz",
)
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


@pytest.fixture
def committed() -> dict[str, Any]:
    """The committed openapi.yaml."""
    return dict(yaml.safe_load(OPENAPI_YAML.read_text(encoding="utf-8")))


@pytest.fixture
def generated(app: Flask) -> dict[str, Any]:
    """The spec the code generates now, as plain JSON data."""
    return dict(json.loads(json.dumps(smorest_api.spec.to_dict())))


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref, if the node is one."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return dict(target)


def error_responses(spec: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(path, method, status, response) for every documented error response."""
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for status, response in operation["responses"].items():
                if status == "default" or int(status) >= 400:
                    found.append((path, method, status, resolve(spec, response)))
    return found


def test_committed_openapi_yaml_is_what_the_code_generates(
    committed: dict[str, Any], generated: dict[str, Any]
) -> None:
    assert committed == generated, "openapi.yaml is out of date: run `make openapi` and commit it"


def test_the_served_openapi_json_is_the_committed_contract(
    client: FlaskClient, committed: dict[str, Any]
) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.get_json() == committed


def test_openapi_yaml_is_a_valid_openapi_3_document(committed: dict[str, Any]) -> None:
    assert str(committed["openapi"]).startswith("3.")
    validate(committed)


def test_every_designed_path_built_so_far_is_documented(committed: dict[str, Any]) -> None:
    missing = [path for path in DESIGNED_PATHS if path not in committed["paths"]]
    assert missing == []


def test_every_error_response_is_documented_as_problem_json(committed: dict[str, Any]) -> None:
    errors = error_responses(committed)
    assert errors, "no error responses documented at all"
    for path, method, status, response in errors:
        where = f"{method.upper()} {path} {status}"
        assert set(response.get("content", {})) == {PROBLEM_MEDIA_TYPE}, where
        schema = resolve(committed, response["content"][PROBLEM_MEDIA_TYPE]["schema"])
        assert {"type", "title", "status", "detail"} <= set(schema["properties"]), where


def parameters(spec: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, schema) of every parameter of that name, on paths and on operations."""
    found = []
    for path, item in spec["paths"].items():
        for key, node in item.items():
            for parameter in node if key == "parameters" else node.get("parameters", []):
                if parameter["name"] == name:
                    found.append((f"{key} {path}", parameter["schema"]))
    return found


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("user_id", USER_ID_RE.pattern),
        ("purpose", PURPOSE_KEY_RE.pattern),
        ("key", PURPOSE_KEY_RE.pattern),
    ],
)
def test_every_path_parameter_carries_the_pattern_the_service_enforces(
    committed: dict[str, Any], name: str, pattern: str
) -> None:
    found = parameters(committed, name)
    assert found
    assert {where: schema.get("pattern") for where, schema in found} == {
        where: pattern for where, _ in found
    }


def test_every_as_of_parameter_is_a_seq_or_an_rfc_3339_time(committed: dict[str, Any]) -> None:
    found = parameters(committed, "as_of")
    where_found = {where for where, _ in found}
    assert {"get /v1/lookup/{purpose}/{user_id}", "post /v1/filter/{purpose}"} <= where_found
    for where, schema in found:
        assert schema["pattern"] == AS_OF_RE.pattern, where
        assert {"format": "date-time"} in schema["anyOf"], where


def test_a_default_policy_admits_every_selector_and_nothing_else(
    committed: dict[str, Any],
) -> None:
    defaults = committed["components"]["schemas"]["PolicyDefaults"]
    assert set(defaults["properties"]) == set(SELECTORS)
    assert defaults["additionalProperties"] is False
    for name in ("PurposeCreate", "PurposePatch", "Purpose"):
        field = committed["components"]["schemas"][name]["properties"]["defaults"]
        assert field == {"$ref": "#/components/schemas/PolicyDefaults"}, name
