"""A JSON Schema (draft 2020-12) for the messages of one protocol (:meth:`trionos.Codec.json_schema`).

One object schema per class under ``oneOf``, each with its tag as a ``const``; every attrs class
used as a field type goes in ``$defs`` (untagged, even a union member), so recursive classes are
expressible. The module is pure (no I/O, never imports trio).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import cattrs

from ._wire import NoneType, WireField, is_literal, optional_arg, scalar_union_args, sequence_arg

__all__ = ["JSON_SCHEMA_DIALECT", "json_schema"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@attrs.frozen
class _Writer:
    """What every object schema of one protocol needs."""

    fields: Mapping[type, tuple[WireField, ...]]
    names: Mapping[type, str]
    tag_field: str
    strict: bool
    converter: cattrs.Converter

    def object_schema(self, cls: type, tag: str | None) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        if tag is not None:
            properties[self.tag_field] = {"const": tag}
            required.append(self.tag_field)
        for f in self.fields[cls]:
            prop = self.type_schema(f.type)
            if f.required:
                required.append(f.wire)
            # A factory default has no JSON value (attrs' stubs type Factory as a function: the ignore).
            elif not isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                prop["default"] = self.converter.unstructure(f.default, f.type)
            properties[f.wire] = prop
        schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
        doc = (cls.__doc__ or "").strip()
        if doc:
            schema["description"] = doc.splitlines()[0]
        schema["properties"] = properties
        schema["required"] = required
        if self.strict:
            schema["additionalProperties"] = False
        return schema

    def type_schema(self, tp: Any) -> dict[str, Any]:
        if tp is str:
            return {"type": "string"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is NoneType:
            return {"type": "null"}
        if is_literal(tp):
            values = list(typing.get_args(tp))
            return {"const": values[0]} if len(values) == 1 else {"enum": values}
        scalars = scalar_union_args(tp)
        if scalars is not None:
            return {"anyOf": [self.type_schema(arg) for arg in scalars]}
        inner = optional_arg(tp)
        if inner is not None:
            return {"anyOf": [self.type_schema(inner), {"type": "null"}]}
        inner = sequence_arg(tp)
        if inner is not None:
            return {"type": "array", "items": self.type_schema(inner)}
        return {"$ref": f"#/$defs/{self.names[tp]}"}


def json_schema(
    *,
    tags: Mapping[str, type],
    fields: Mapping[type, tuple[WireField, ...]],
    tag_field: str,
    strict: bool,
    converter: cattrs.Converter,
) -> dict[str, Any]:
    """Return a JSON Schema (draft 2020-12) for the messages of one protocol.

    Args:
        tags: the protocol's tags and classes, in union order.
        fields: every class of the protocol (members and nested classes) with its wire fields.
        tag_field: the key that carries the tag.
        strict: whether unknown fields are refused (the schema then forbids additional properties).
        converter: the codec's converter, which writes the defaults.

    Returns:
        The schema, a JSON-ready dict.
    """
    nested = list(dict.fromkeys(cls for row in fields.values() for f in row for cls in _classes_in(f.type)))
    writer = _Writer(fields, _unique_names(nested), tag_field, strict, converter)
    variants = [writer.object_schema(cls, tag) for tag, cls in tags.items()]
    schema: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, "oneOf": variants}
    schema["discriminator"] = {"propertyName": tag_field}
    if nested:
        schema["$defs"] = {writer.names[cls]: writer.object_schema(cls, None) for cls in nested}
    return schema


def _classes_in(tp: Any) -> Iterator[type]:
    """The attrs classes a (supported) field type mentions, outermost first."""
    if isinstance(tp, type) and attrs.has(tp):
        yield tp
    elif not is_literal(tp):
        for arg in typing.get_args(tp):
            yield from _classes_in(arg)


def _unique_names(classes: list[type]) -> dict[type, str]:
    """Name each nested class in ``$defs``; classes that share a name get their module too."""
    names: dict[type, str] = {}
    seen: set[str] = set()
    for cls in classes:
        name = cls.__name__
        if name in seen:
            name = f"{cls.__module__}.{cls.__qualname__}"
        seen.add(name)
        names[cls] = name
    return names
