"""A small JSON Schema validator for the schemas pydantic generates: :func:`schema_errors`.

Submitters check a payload against the schema a job worker advertises without knowing the
worker's Python types (and without a ``jsonschema`` dependency). Covered: ``type``,
``properties``, ``required``, ``additionalProperties``, ``items``, ``prefixItems``, ``enum``,
``const``, ``anyOf``/``oneOf``/``allOf``, local ``$ref`` (``#/$defs/...``), numeric and length
bounds. Unknown keywords are ignored (a schema this does not understand never rejects a payload
the worker would accept: the worker validates again).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["schema_errors"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_errors(value: Any, schema: dict[str, Any], *, limit: int = 5) -> list[str]:
    """Up to ``limit`` messages ``"path: problem"`` for ``value`` against ``schema``; empty when it fits."""
    errors: list[str] = []
    for error in _check(value, schema, schema, "<root>"):
        errors.append(error)
        if len(errors) >= limit:
            break
    return errors


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    while isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
        ref = node.get("$ref") if isinstance(node, dict) else None
    return schema


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _check(value: Any, schema: Any, root: dict[str, Any], path: str) -> Iterator[str]:
    if not isinstance(schema, dict):
        return
    schema = _resolve(schema, root)
    wanted = schema.get("type")
    if wanted is not None:
        names = wanted if isinstance(wanted, list) else [wanted]
        if not any(_is_type(value, name) for name in names):
            yield f"{path}: expected {' or '.join(names)}, got {_kind(value)}"
            return
    if "const" in schema and value != schema["const"]:
        yield f"{path}: must be {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: must be one of {schema['enum']!r}"
    yield from _combinators(value, schema, root, path)
    if isinstance(value, dict):
        yield from _object(value, schema, root, path)
    elif isinstance(value, list):
        yield from _array(value, schema, root, path)
    elif isinstance(value, str):
        yield from _bounds(len(value), schema, path, "minLength", "maxLength", "characters")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield from _bounds(value, schema, path, "minimum", "maximum", "")


def _combinators(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> Iterator[str]:
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        fits = isinstance(options, list) and any(next(_check(value, o, root, path), None) is None for o in options)
        if isinstance(options, list) and options and not fits:
            yield f"{path}: matches none of the allowed shapes"
    for option in schema.get("allOf", []) if isinstance(schema.get("allOf"), list) else []:
        yield from _check(value, option, root, path)


def _object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], path: str) -> Iterator[str]:
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            yield f"{_join(path, name)}: required"
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            yield from _check(item, properties[name], root, _join(path, name))
        elif extra is False:
            yield f"{_join(path, name)}: not allowed"
        elif isinstance(extra, dict):
            yield from _check(item, extra, root, _join(path, name))


def _array(value: list[Any], schema: dict[str, Any], root: dict[str, Any], path: str) -> Iterator[str]:
    prefix = schema.get("prefixItems", [])
    for index, item in enumerate(value):
        item_schema = prefix[index] if index < len(prefix) else schema.get("items")
        yield from _check(item, item_schema, root, f"{path}[{index}]")
    yield from _bounds(len(value), schema, path, "minItems", "maxItems", "items")


def _bounds(size: float, schema: dict[str, Any], path: str, low: str, high: str, unit: str) -> Iterator[str]:
    suffix = f" {unit}" if unit else ""
    if isinstance(schema.get(low), int | float) and size < schema[low]:
        yield f"{path}: must be at least {schema[low]}{suffix}"
    if isinstance(schema.get(high), int | float) and size > schema[high]:
        yield f"{path}: must be at most {schema[high]}{suffix}"


def _join(path: str, name: str) -> str:
    return name if path == "<root>" else f"{path}.{name}"


def _kind(value: Any) -> str:
    for name in _TYPES:
        if _is_type(value, name):
            return name
    return type(value).__name__
