"""Output schemas that say the same and cost clients less to check.

A client validates every structured answer against the tool's output schema (the official
SDK with ``jsonschema``). pydantic writes a nullable field as ``anyOf: [{type: X}, {type:
null}]`` and an enum as a ``$ref`` into ``$defs``; resolving a ``$ref`` and trying each
branch of an ``anyOf``, per field of every listed task, made checking a 100-task
``list_tasks`` answer cost the client more than the server spent on it. The same constraints
written as ``type: [X, "null"]``, with the referenced definitions inlined, check 2-3 times
faster (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

_LOCAL_REF = "#/$defs/"


def cheap_to_validate(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its definitions inlined and type-only ``anyOf`` branches folded into ``type``."""
    folded = _fold(inline_definitions(schema))
    assert isinstance(folded, dict)
    return folded


def inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every local ``$ref`` replaced by the definition it names, and no ``$defs``
    (unchanged if a definition refers to itself, which cannot be inlined)."""
    definitions: dict[str, Any] = schema.get("$defs", {})
    if any(_refers_to(definition, name) for name, definition in definitions.items()):
        return schema
    inlined = _inline(schema, definitions)
    assert isinstance(inlined, dict)
    return inlined


def _refers_to(node: object, name: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == _LOCAL_REF + name or any(_refers_to(value, name) for value in node.values())
    if isinstance(node, list):
        return any(_refers_to(item, name) for item in node)
    return False


def _inline(node: object, definitions: dict[str, Any]) -> object:
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.removeprefix(_LOCAL_REF) in definitions:
        target = definitions[reference.removeprefix(_LOCAL_REF)]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _inline({**target, **siblings}, definitions)
    return {key: _inline(value, definitions) for key, value in node.items() if key != "$defs"}


def _fold(node: object) -> object:
    if isinstance(node, list):
        return [_fold(item) for item in node]
    if not isinstance(node, dict):
        return node
    branches = node.get("anyOf")
    if isinstance(branches, list) and all(isinstance(b, dict) and set(b) == {"type"} for b in branches):
        node = {k: v for k, v in node.items() if k != "anyOf"}
        node["type"] = [branch["type"] for branch in branches]
    return {key: _fold(value) for key, value in node.items()}


def rows_described(schema: dict[str, Any], array: str) -> dict[str, Any]:
    """``schema`` with the rows of its array property ``array`` described, not checked: the array's
    description names each field of a row, its type and its meaning, and the fully typed row stays
    under ``$defs`` (by its title), where nothing refers to it and so no check walks it.

    The Python SDK's client (``jsonschema``) builds a validator for every value it descends into:
    checking 100 typed rows of 8 values cost it 5-9 ms, more than the server spends answering; rows
    checked by their required keys still cost it 0.56 ms, a descent into each row, whatever the row's
    schema says; an array whose items it is not told of costs it 0.01 ms (docs/benchmarks.md 13). The
    rows are the server's own, never a client's: tests/test_answers.py holds every answer to the typed row.
    """
    listed = schema["properties"][array]
    row: dict[str, Any] = listed["items"]
    required = set(row.get("required", []))
    fields = "; ".join(_field_line(name, spec, name in required) for name, spec in row["properties"].items())
    name = row.get("title", "Row")
    described = {key: value for key, value in listed.items() if key != "items"}
    described["description"] = (
        f"{listed.get('description', '')} Each is an object (typed in $defs/{name}, which a client's check "
        f"of the answer does not walk). {row.get('description', '')} Its fields: {fields}."
    )
    return {
        **schema,
        "properties": {**schema["properties"], array: described},
        "$defs": {**schema.get("$defs", {}), name: row},
    }


def _field_line(name: str, spec: dict[str, Any], required: bool) -> str:
    default = spec.get("default")
    shown_default = f", default {default}" if default is not None else ""
    optional = "" if required else ", may be absent"
    return f"{name} ({_kind(spec)}{optional}{shown_default}): {spec.get('description', '').rstrip('.')}"


def _kind(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return "one of " + ", ".join(str(value) for value in spec["enum"])
    types = spec.get("type", "any")
    named = [types] if isinstance(types, str) else [kind for kind in types if kind != "null"]
    if named == ["array"]:
        return f"array of {_kind(spec.get('items', {}))}"
    return " or ".join(named)
