"""The parts of a chat request beyond plain text: content parts, tools, tool calls, formats.

Shapes follow OpenAI's Chat Completions API and are as strict as OpenAI is: unknown fields
are refused (400 naming them), a tool's name must match ``^[a-zA-Z0-9_-]{1,64}$``, a
``json_schema`` response format needs a name, and a ``strict`` schema must close every
object (``additionalProperties: false``) and require all of its properties.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nearline.core.errors import InvalidRequest

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""Tool (function) names and json_schema names, as OpenAI accepts them."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageURL(_Wire):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Wire):
    """An image the model should look at: an ``https:`` or ``data:`` URL, forwarded as is."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Wire):
    """What a tool call asks: the function's name and its arguments, a JSON text."""

    name: str
    arguments: str


class ToolCall(_Wire):
    """One call in an assistant message's ``tool_calls``."""

    id: str = Field(min_length=1)
    type: Literal["function"]
    function: FunctionCall


class FunctionDefinition(_Wire):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Wire):
    name: str


class NamedToolChoice(_Wire):
    """``{"type": "function", "function": {"name": ...}}``: call this tool."""

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(_Wire):
    type: Literal["text"]


class JsonObjectFormat(_Wire):
    """Any JSON object (OpenAI's "JSON mode")."""

    type: Literal["json_object"]


class JsonSchemaSpec(_Wire):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class JsonSchemaFormat(_Wire):
    """JSON that validates against ``json_schema.schema`` (structured outputs)."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


def check_strict_schema(schema: dict[str, Any], param: str) -> None:
    """Refuse a ``strict`` schema OpenAI refuses: every object schema must list all of its
    properties in ``required`` and set ``additionalProperties: false``."""
    for where, node in _object_schemas(schema, ()):
        shown = ".".join(where) or "the schema root"
        properties = node.get("properties") or {}
        if node.get("additionalProperties", True) is not False:
            raise InvalidRequest(
                f"invalid schema for {param}: at {shown}, 'additionalProperties' is required "
                "to be supplied and to be false (strict mode)",
                param=param,
                code="invalid_json_schema",
            )
        missing = sorted(set(properties) - set(node.get("required") or []))
        if missing:
            raise InvalidRequest(
                f"invalid schema for {param}: at {shown}, 'required' must list every property "
                f"(strict mode); missing {', '.join(missing)}",
                param=param,
                code="invalid_json_schema",
            )


def _object_schemas(
    node: object, where: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every object schema inside ``node`` (properties, items, anyOf, $defs …), with its path."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _object_schemas(item, (*where, str(index)))
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        yield where, node
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, child in value.items():
                yield from _object_schemas(child, (*where, key, str(name)))
        elif key in ("items", "anyOf", "allOf", "oneOf", "not", "additionalProperties"):
            yield from _object_schemas(value, (*where, key))
