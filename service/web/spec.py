"""An apispec plugin for what marshmallow cannot say in openapi.yaml, stated beside the schemas."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from apispec import APISpec, BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.field_converter import FieldConverterMixin

OPENAPI = "openapi"


def _field_openapi(
    _: FieldConverterMixin,
    field: ma.fields.Field,  # type: ignore[type-arg]
    ret: dict[str, Any],
    **__: Any,
) -> dict[str, Any]:
    extra: dict[str, Any] | None = field.metadata.get(OPENAPI)
    if extra is None:
        return {}
    if "$ref" in extra or "allOf" in extra:
        # A reference stands alone: OpenAPI 3.0 ignores anything beside it; and a nullable
        # reference (allOf with nullable) replaces apispec's anyOf, whose second branch would
        # admit any object at all.
        ret.clear()
    # A copy each time, so that no two places of openapi.yaml share a YAML anchor.
    return copy.deepcopy(extra)


class ContractPlugin(BasePlugin):
    """Registers the given components and applies fields' and schemas' `openapi` additions.

    A field's `metadata["openapi"]` and a schema's `Meta.openapi` are merged into the generated
    JSON schema last, over what apispec derived, so that a rule the service enforces outside
    marshmallow (in the domain's checks) is part of the contract too.
    """

    def __init__(self, components: Mapping[str, dict[str, Any]]) -> None:
        super().__init__()
        self.components = components

    def init_spec(self, spec: APISpec) -> None:
        """Register the components, and the field hook after every built-in one."""
        super().init_spec(spec)
        for name, component in self.components.items():
            spec.components.schema(name, copy.deepcopy(component))
        for plugin in spec.plugins:
            if isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None:
                plugin.converter.add_attribute_function(_field_openapi)  # type: ignore[no-untyped-call]

    def schema_helper(self, name: str, definition: dict[str, Any], **kwargs: Any) -> Any:
        """The schema's own additions: keywords of the object rather than of one field."""
        meta = getattr(kwargs.get("schema"), "Meta", None)
        return copy.deepcopy(getattr(meta, OPENAPI, {}))
