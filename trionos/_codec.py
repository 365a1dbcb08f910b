"""Typed message protocols: tagged unions of attrs classes <-> JSON, through a private cattrs Converter.

A protocol is a union of ``@attrs.frozen`` classes. On the wire each message is one JSON object whose
tag field (``"type"`` by default) names the class::

    ClientMessage = Join | Chat | Leave
    codec = Codec(ClientMessage)
    codec.encode(Join("ann"))                   # '{"type":"join","username":"ann","room":"lobby"}'
    codec.decode('{"type":"chat","text":"hi"}')  # Chat(text='hi')

The module is pure (no I/O, never imports trio). Everything specific to one protocol lives in its
``Codec``: each codec owns a private ``cattrs.Converter`` built once in ``__init__`` (field renames
are ``cattrs.gen`` overrides, the union is ``cattrs.strategies.configure_tagged_union``), so two
codecs never see each other's hooks and the hot path only runs pre-generated functions.

The jobs around the codec live next to it: ``_wire`` (field types and wire names), ``_strict``
(the converter's strict structure hooks: JSON from a peer is untrusted, so a string field takes
only a string, an integer field no ``true``, and every string must be Unicode text), ``_explain``
(one :class:`~trionos.DecodeError` message naming the message tag, the field path, what was
expected and what came), ``_schema`` (JSON Schema) and ``_json`` (the package's JSON policy).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, TypeVar

import cattrs
from cattrs.strategies import configure_tagged_union

from ._errors import DecodeError, EncodeError
from ._explain import explain
from ._json import ENCODE_FAILURES, JSONInput, json_library, parse, short_repr, unencodable
from ._schema import json_schema
from ._strict import build_converter
from ._wire import WireField, collect_fields, describe, snake_case, union_members

__all__ = ["Codec", "fields_of"]

T = TypeVar("T")


class Codec(Generic[T]):
    """Encode and decode one protocol: a union of attrs classes, each tagged on the wire.

    Field types may be str, int, float, bool, None, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``,
    ``X | None`` and nested attrs classes. A field declared
    ``attrs.field(default=..., metadata={"omit_if_default": True})`` is left out of the encoded
    object while it holds its default (an optional field added to a protocol stays invisible to
    peers that never use it).

    JSON follows the package's one policy, with either library: compact output, non-ASCII kept as
    is, NaN and infinities refused both ways. ``json="orjson"`` is about twice as fast end to end;
    it differs from the default in that orjson refuses integers beyond 64 bits when encoding,
    reads them as floats when decoding, and refuses a number literal too large for a float
    (``1e400``) as invalid JSON.

    A codec is immutable and holds no I/O; share one per protocol (module constants are fine).
    Encoding does not validate field values: attrs does not check annotations, so
    ``Chat(text=5)`` encodes as ``{"type":"chat","text":5}``, which peers reject.

    Args:
        union: ``A | B | C`` (or ``typing.Union[...]``, or a single attrs class).
        tags: overrides the tag of some classes (``{UserJoined: "joined"}``); the default tag is
            the class name in snake_case (``UserJoined`` -> ``"user_joined"``).
        tag_field: the JSON key that carries the tag.
        strict: by default unknown fields in a payload are ignored, so a peer running a newer
            version of the protocol can add fields; ``strict=True`` rejects them.
        renames: maps a class to ``{attribute: wire name}``. Without it a trailing underscore is
            stripped (``from_`` is ``"from"`` on the wire), the usual escape for Python keywords.
            Renames apply to nested attrs classes too.
        json: the JSON library, ``"stdlib"`` or ``"orjson"`` (an optional dependency).

    Raises:
        TypeError: *union* is not made of attrs classes, a field type is not supported, or a tag
            or *tag_field* is not a non-empty string; raised here, when the protocol is defined,
            not at the first message.
        ValueError: two classes share a tag, *tags* or *renames* name something the protocol
            does not use, two fields share a wire name, or a field is called like *tag_field*.
        ImportError: *json* is ``"orjson"`` and orjson is not installed.
    """

    __slots__ = (
        "_by_class",
        "_by_tag",
        "_converter",
        "_encoder",
        "_fields",
        "_json",
        "_members",
        "_parser",
        "_parser_checks_utf8",
        "_strict",
        "_structure_union",
        "_tag_field",
        "_union",
        "_wire_names",
    )

    def __init__(
        self,
        union: Any,
        *,
        tags: Mapping[type, str] | None = None,
        tag_field: str = "type",
        strict: bool = False,
        renames: Mapping[type, Mapping[str, str]] | None = None,
        json: Literal["stdlib", "orjson"] = "stdlib",
    ) -> None:
        members = union_members(union)
        self._json = json
        self._encoder, self._parser, self._parser_checks_utf8 = json_library(json)
        if not isinstance(tag_field, str) or not tag_field:
            raise TypeError(f"tag_field must be a non-empty string, got {tag_field!r}")
        tags = dict(tags or {})
        for cls in tags:
            if cls not in members:
                raise ValueError(f"tags names {cls!r}, which is not in the union {union!r}")
        by_class = {cls: tags.get(cls, snake_case(cls.__name__)) for cls in members}
        by_tag: dict[str, type] = {}
        for cls, tag in by_class.items():
            if not isinstance(tag, str) or not tag:
                raise TypeError(f"the tag of {cls.__name__} must be a non-empty string, got {tag!r}")
            if tag in by_tag:
                raise ValueError(f"{by_tag[tag].__name__} and {cls.__name__} both have the tag {tag!r}")
            by_tag[tag] = cls

        self._union = union
        self._members = members
        self._tag_field = tag_field
        self._strict = strict
        self._by_tag = by_tag
        self._fields = collect_fields(members, renames or {})
        self._wire_names = {cls: {f.name: f.wire for f in fields} for cls, fields in self._fields.items()}
        for cls in members:
            if tag_field in self._wire_names[cls].values():
                raise ValueError(
                    f"{cls.__name__} has a field called {tag_field!r} on the wire, which is the tag field; "
                    "rename the field or choose another tag_field"
                )

        self._converter = converter = build_converter(self._fields, strict=strict)
        # The tag goes first in the JSON object (what people write by hand, and what a human reading
        # a log looks for), so encoding uses the generated per-class functions directly rather than
        # the union hook, which appends the tag last.
        self._by_class = {cls: (tag, converter.get_unstructure_hook(cls)) for cls, tag in by_class.items()}
        self._structure_union: Callable[[dict[str, Any], Any], Any]
        if len(members) > 1:
            configure_tagged_union(union, converter, tag_generator=by_class.__getitem__, tag_name=tag_field)
            self._structure_union = converter.get_structure_hook(union)
        else:
            # configure_tagged_union needs a real union; this is the same logic for one class.
            self._structure_union = self._single_class_hook(members[0], by_class[members[0]])

    def _single_class_hook(self, cls: type, tag: str) -> Callable[[dict[str, Any], Any], object]:
        hook = self._converter.get_structure_hook(cls)
        tag_field = self._tag_field
        strict = self._strict

        def structure_single(obj: dict[str, Any], _: Any) -> object:
            if obj[tag_field] != tag:
                raise KeyError(tag_field)
            if strict:
                obj = obj.copy()
                del obj[tag_field]
            return hook(obj, cls)

        return structure_single

    @property
    def tags(self) -> Mapping[str, type]:
        """The protocol: tag -> class, in union order."""
        return types.MappingProxyType(self._by_tag)

    @property
    def tag_field(self) -> str:
        """The JSON key that carries the tag."""
        return self._tag_field

    @property
    def strict(self) -> bool:
        """Whether unknown fields are rejected (True) or ignored (False)."""
        return self._strict

    def __repr__(self) -> str:
        names = " | ".join(cls.__name__ for cls in self._members)
        extra = f", json={self._json!r}" if self._json != "stdlib" else ""
        return f"Codec({names}, tag_field={self._tag_field!r}, strict={self._strict!r}{extra})"

    def unstructure(self, msg: T) -> dict[str, Any]:
        """Return *msg* as a JSON-ready dict with its tag, for callers that embed it in an envelope.

        Args:
            msg: a message of this protocol.

        Returns:
            A dict with the tag first, then the fields under their wire names.

        Raises:
            EncodeError: *msg*'s class is not in the union (subclasses included: the tag belongs
                to the exact class).
        """
        try:
            tag, unstructure = self._by_class[msg.__class__]
        except KeyError:
            accepted = ", ".join(cls.__name__ for cls in self._members)
            raise EncodeError(
                f"cannot encode {type(msg).__name__} {short_repr(msg)}: this codec accepts {accepted}"
            ) from None
        res = {self._tag_field: tag}
        res.update(unstructure(msg))
        return res

    def encode(self, msg: T) -> str:
        """Return *msg* as compact JSON text (non-ASCII kept as is, tag first).

        Args:
            msg: a message of this protocol.

        Returns:
            The JSON text; it can always be encoded to UTF-8.

        Raises:
            EncodeError: *msg*'s class is not in the union, or a field holds something JSON or
                UTF-8 cannot represent (NaN, an infinity, a set, a lone surrogate, ...); the
                message names the field.
        """
        obj = self.unstructure(msg)
        try:
            return self._encoder(obj)
        except ENCODE_FAILURES as exc:
            raise EncodeError(f"cannot encode {short_repr(msg)} as JSON: {unencodable(obj, exc)}") from exc

    def structure(self, obj: object) -> T:
        """Build a message from an already-parsed JSON value (a dict with the tag field).

        Args:
            obj: a parsed JSON value.

        Returns:
            The message.

        Raises:
            DecodeError: (and nothing else) *obj* is not a valid message of this protocol.
        """
        if not isinstance(obj, dict):
            raise DecodeError(f"expected a JSON object, got {describe(obj)}")
        try:
            message: T = self._structure_union(obj, self._union)
        except (
            cattrs.BaseValidationError,
            cattrs.ForbiddenExtraKeysError,
            KeyError,
            TypeError,
            RecursionError,
        ) as exc:
            raise DecodeError(
                explain(obj, exc, tag_field=self._tag_field, tags=self._by_tag, wire_names=self._wire_names)
            ) from exc
        return message

    def decode(self, data: JSONInput) -> T:
        """Parse JSON text (``str``, or UTF-8 ``bytes``) into a message.

        Args:
            data: the payload, as a text or binary WebSocket message carries it.

        Returns:
            The message.

        Raises:
            DecodeError: (and nothing else) for any payload that is not a valid message: invalid
                UTF-8, invalid JSON (``NaN`` and ``Infinity`` included), a string that is not
                Unicode text (a lone surrogate, raw or escaped), not an object, a missing or
                unknown tag, missing, ill-typed or (when ``strict``) unexpected fields.
            TypeError: *data* is neither text nor bytes (a bug in the caller, not in the peer).
        """
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise TypeError(f"decode() takes str or bytes, got {type(data).__name__}")
        return self.structure(parse(data, self._parser, parser_checks_utf8=self._parser_checks_utf8))

    def json_schema(self) -> dict[str, Any]:
        """Return a JSON Schema (draft 2020-12) for the messages of this protocol.

        One object schema per class under ``oneOf``, each with its tag as a ``const``; nested attrs
        classes are in ``$defs``. Strict codecs forbid additional properties. The OpenAPI-style
        ``discriminator`` is an annotation; validators ignore it. One mismatch is known: the schema
        keyword ``integer`` accepts ``1.0``, which the codec refuses for an int field.

        Returns:
            The schema, a JSON-ready dict.
        """
        return json_schema(
            tags=self._by_tag,
            fields=self._fields,
            tag_field=self._tag_field,
            strict=self._strict,
            converter=self._converter,
        )


def fields_of(codec: Codec[Any]) -> Mapping[type, tuple[WireField, ...]]:
    """Return the wire fields of every class a codec handles (union members and nested classes).

    Args:
        codec: any codec.

    Returns:
        A read-only mapping: class -> its wire fields, in declaration order.
    """
    return types.MappingProxyType(codec._fields)
