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

Decoding is strict about types, because JSON from a peer is untrusted: a string field takes only a
string (cattrs would happily call ``str(5)``), an integer field takes no ``true``, a list field
takes only an array. Strings must be Unicode text: JSON can spell a lone surrogate
(``"\\udfff"``), which Python parses into a ``str`` that cannot be encoded to UTF-8 again, so it
would fail later, far from the peer that sent it (sending it on, storing it in Redis). Such a
string is refused here, on the way in. Every problem is reported as one
:class:`~trionos.DecodeError` whose message names the message tag, the field path, what was
expected and what came.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from ._errors import DecodeError, EncodeError, exception_leaves
from ._json import ENCODE_FAILURES, is_unicode_text, json_library, parse, short_repr, unencodable

__all__ = ["Codec"]

T = TypeVar("T")

_NoneType = type(None)
_SCALARS: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    _NoneType: "null",
}
_SUPPORTED = (
    "str, int, float, bool, None, Literal[...], list[X], tuple[X, ...], X | None and nested attrs classes"
)
#: How many problems a DecodeError lists before it says "and N more problems".
_MAX_PROBLEMS = 5
_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: attrs field metadata key: ``attrs.field(default=None, metadata={OMIT_IF_DEFAULT: True})`` is not
#: encoded while it holds its default.
OMIT_IF_DEFAULT = "omit_if_default"


# -- helpers shared with trionos.testing._strategies ------------------------------------------------------


def snake_case(name: str) -> str:
    """Return the default tag for a class name: ``UserJoined`` -> ``user_joined``, ``HTTPError`` ->
    ``http_error``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def optional_arg(tp: Any) -> Any | None:
    """For ``X | None`` (or ``Optional[X]``) return ``X``; for anything else return None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if len(args) == 2 and _NoneType in args:
            return args[0] if args[1] is _NoneType else args[1]
    return None


def sequence_arg(tp: Any) -> Any | None:
    """For ``list[X]`` or ``tuple[X, ...]`` return ``X``; for anything else return None."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def is_literal(tp: Any) -> bool:
    """Whether ``tp`` is a ``Literal[...]`` whose values are all str, int, bool or None."""
    return typing.get_origin(tp) is Literal and all(
        type(value) in (str, int, bool, _NoneType) for value in typing.get_args(tp)
    )


@attrs.frozen
class WireField:
    """One field of a message class as it appears on the wire (used by the codec and its strategies)."""

    #: The attribute name in Python (``from_``).
    name: str
    #: The ``__init__`` argument name (attrs strips leading underscores).
    alias: str
    #: The key in the JSON object (``from``).
    wire: str
    #: The resolved field type.
    type: Any
    #: Whether a payload must carry the field (it has no default).
    required: bool
    #: The attrs default (``attrs.NOTHING`` when required), possibly an ``attrs.Factory``.
    default: Any


def _union_members(union: Any) -> tuple[type, ...]:
    if attrs.has(union):
        return (union,)
    if typing.get_origin(union) in (typing.Union, types.UnionType):
        members = typing.get_args(union)
        not_attrs = [m for m in members if not (isinstance(m, type) and attrs.has(m))]
        if not not_attrs:
            return members
        raise TypeError(f"Codec needs a union of attrs classes, but {union!r} contains {not_attrs[0]!r}")
    raise TypeError(f"Codec needs an attrs class or a union of attrs classes, got {union!r}")


# How error messages name the kind of a JSON value that came.
_KINDS = {
    _NoneType: "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "object",
}


def _short(value: object) -> str:
    """Describe a JSON value for an error message: its kind and a truncated repr."""
    kind = _KINDS.get(type(value), type(value).__name__)
    if value is None:
        return kind
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _expected(tp: Any) -> str:
    """Say in words what JSON value a field type takes ("a string", "an array", ...)."""
    if tp in _SCALARS:
        return _SCALARS[tp]
    inner = optional_arg(tp)
    if inner is not None:
        return f"{_expected(inner)} or null"
    if sequence_arg(tp) is not None:
        return "an array"
    if is_literal(tp):
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    return "an object"


# -- strict structure hooks ---------------------------------------------------------------------------------


class _Mismatch(Exception):
    """Raised inside structure hooks; cattrs attaches the field path and the codec words the message."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(expected, value)
        self.expected = expected
        self.value = value


# cattrs' own hooks coerce (``str(5)``, ``int("5")``, ``int(True)``): these take the JSON value as it is.
# Exact type checks, because bool is an int subclass and must not pass as one.
def _structure_str(obj: object, _: type) -> str:
    if type(obj) is str:
        if obj.isascii() or is_unicode_text(obj):
            return obj
        raise _Mismatch("Unicode text (no lone surrogates)", obj)
    raise _Mismatch("a string", obj)


def _structure_int(obj: object, _: type) -> int:
    if type(obj) is int:
        return obj
    raise _Mismatch("an integer", obj)


def _structure_float(obj: object, _: type) -> float:
    # JSON has one number type: 1 is as good a float as 1.0. Infinity only appears when a literal
    # overflows (1e400); it could not be encoded back, so it is refused here.
    if type(obj) is float:
        if math.isfinite(obj):
            return obj
        raise _Mismatch("a finite number", obj)
    if type(obj) is int:
        try:
            return float(obj)
        except OverflowError:
            raise _Mismatch("a number within float range", obj) from None
    raise _Mismatch("a number", obj)


def _structure_bool(obj: object, _: type) -> bool:
    if obj is True or obj is False:
        return obj
    raise _Mismatch("a boolean", obj)


def _structure_none(obj: object, _: type) -> None:
    if obj is None:
        return None
    raise _Mismatch("null", obj)


def _literal_factory(tp: Any) -> Callable[[object, Any], object]:
    values = typing.get_args(tp)
    # Compare (type, value) pairs so that True does not match Literal[1], nor 1 match Literal[True].
    allowed = frozenset((type(v), v) for v in values)
    kinds = frozenset(type(v) for v in values)
    expected = _expected(tp)

    def structure_literal(obj: object, _: Any) -> object:
        if type(obj) in kinds and (type(obj), obj) in allowed:
            return obj
        raise _Mismatch(expected, obj)

    return structure_literal


def _make_optional_factory(converter: cattrs.Converter) -> Callable[[Any], Any]:
    def optional_factory(tp: Any) -> Callable[[object, Any], object]:
        inner_type = optional_arg(tp)
        inner = converter.get_structure_hook(inner_type)
        expected = _expected(tp)

        def structure_optional(obj: object, _: Any) -> object:
            if obj is None:
                return None
            try:
                return inner(obj, inner_type)
            except _Mismatch:
                raise _Mismatch(expected, obj) from None

        return structure_optional

    return optional_factory


def _make_sequence_factory(converter: cattrs.Converter) -> Callable[[Any], Any]:
    def sequence_factory(tp: Any) -> Callable[[object, Any], object]:
        # cattrs turns any iterable into a list, so "abc" would become ["a", "b", "c"]: check first.
        if typing.get_origin(tp) is tuple:
            inner = homogenous_tuple_structure_factory(tp, converter)
        else:
            inner = list_structure_factory(tp, converter)

        def structure_sequence(obj: object, cl: Any) -> object:
            if isinstance(obj, list):
                return inner(obj, cl)
            raise _Mismatch("an array", obj)

        return structure_sequence

    return sequence_factory


# -- the codec ----------------------------------------------------------------------------------------------


class Codec(Generic[T]):
    """Encode and decode one protocol: a union of attrs classes, each tagged on the wire.

    ``union`` is ``A | B | C`` (or ``typing.Union[...]``, or a single attrs class). Options:

    * ``tags`` overrides the tag of some classes (``{UserJoined: "joined"}``); the default tag is the
      class name in snake_case (``UserJoined`` -> ``"user_joined"``).
    * ``tag_field`` is the JSON key that carries the tag (default ``"type"``).
    * ``strict``: by default unknown fields in a payload are ignored, so a peer running a newer
      version of the protocol can add fields; ``strict=True`` rejects them.
    * A field declared ``attrs.field(default=..., metadata={"omit_if_default": True})`` is left out
      of the encoded object while it holds its default (an optional field added to a protocol
      stays invisible to peers that never use it).
    * ``renames`` maps a class to ``{attribute: wire name}``. Without it a trailing underscore is
      stripped (``from_`` is ``"from"`` on the wire), the usual escape for Python keywords. Renames
      apply to nested attrs classes too.

    Field types may be str, int, float, bool, None, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``,
    ``X | None`` and nested attrs classes; anything else raises :exc:`TypeError` here, at import time
    of the protocol, not at the first message.

    ``json="orjson"`` parses and serialises with orjson (an optional dependency), about twice as
    fast end to end, under the same JSON policy (NaN and infinities refused both ways). Differences
    from the default: orjson refuses integers beyond 64 bits when encoding, reads them as floats
    when decoding, and refuses a number literal too large for a float (``1e400``) as invalid JSON.

    A codec is immutable and holds no I/O; share one per protocol (module constants are fine).
    Encoding does not validate field values: attrs does not check annotations, so
    ``Chat(text=5)`` encodes as ``{"type":"chat","text":5}``, which peers reject.
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
        members = _union_members(union)
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
        self._fields = self._collect_fields(members, renames or {})
        self._wire_names = {cls: {f.name: f.wire for f in fields} for cls, fields in self._fields.items()}
        for cls in members:
            if tag_field in self._wire_names[cls].values():
                raise ValueError(
                    f"{cls.__name__} has a field called {tag_field!r} on the wire, which is the tag field; "
                    "rename the field or choose another tag_field"
                )

        self._converter = converter = self._build_converter()
        # The tag goes first in the JSON object (what people write by hand, and what a human reading
        # a log looks for), so encoding uses the generated per-class functions directly rather than
        # the union hook, which appends the tag last.
        self._by_class = {cls: (tag, converter.get_unstructure_hook(cls)) for cls, tag in by_class.items()}
        if len(members) > 1:
            configure_tagged_union(union, converter, tag_generator=by_class.__getitem__, tag_name=tag_field)
            self._structure_union = converter.get_structure_hook(union)
        else:
            # configure_tagged_union needs a real union; this is the same logic for one class.
            self._structure_union = self._single_class_hook(members[0], by_class[members[0]])

    # -- construction -----------------------------------------------------------------------------------

    def _collect_fields(
        self, members: tuple[type, ...], renames: Mapping[type, Mapping[str, str]]
    ) -> dict[type, tuple[WireField, ...]]:
        """Resolve the fields of every class reachable from the union, checking types and renames."""
        fields: dict[type, tuple[WireField, ...]] = {}
        pending = list(members)
        while pending:
            cls = pending.pop()
            if cls in fields:
                continue
            attrs.resolve_types(cls)
            explicit = dict(renames.get(cls, {}))
            row = []
            for a in attrs.fields(cls):
                if not a.init:
                    continue
                where = f"{cls.__name__}.{a.name}"
                wire = explicit.pop(a.name, a.name[:-1] if a.name.endswith("_") else a.name)
                self._check_type(a.type, where, pending)
                row.append(
                    WireField(
                        name=a.name,
                        alias=a.alias,
                        wire=wire,
                        type=a.type,
                        required=a.default is attrs.NOTHING,
                        default=a.default,
                    )
                )
            if explicit:
                raise ValueError(f"renames for {cls.__name__} name unknown fields: {', '.join(explicit)}")
            wires = [f.wire for f in row]
            if len(set(wires)) != len(wires):
                raise ValueError(f"two fields of {cls.__name__} have the same wire name: {wires}")
            fields[cls] = tuple(row)
        unknown = [cls for cls in renames if cls not in fields]
        if unknown:
            raise ValueError(f"renames names {unknown[0]!r}, which this protocol does not use")
        return fields

    def _check_type(self, tp: Any, where: str, pending: list[type]) -> None:
        if tp in _SCALARS or is_literal(tp):
            return
        if isinstance(tp, type) and attrs.has(tp):
            pending.append(tp)
            return
        inner = optional_arg(tp)
        if inner is None:
            inner = sequence_arg(tp)
        if inner is None:
            raise TypeError(f"Codec cannot handle {where}: {tp!r}; supported field types are {_SUPPORTED}")
        self._check_type(inner, where, pending)

    def _build_converter(self) -> cattrs.Converter:
        # A private converter: hooks registered here never leak into another codec or into
        # cattrs' global converter. Detailed validation gives every error its field path.
        converter = cattrs.Converter(forbid_extra_keys=self._strict, detailed_validation=True)
        for tp, hook in (
            (str, _structure_str),
            (int, _structure_int),
            (float, _structure_float),
            (bool, _structure_bool),
            (_NoneType, _structure_none),
        ):
            converter.register_structure_hook(tp, hook)
        # Factories registered later take precedence over cattrs' built-in ones for the same types.
        converter.register_structure_hook_factory(is_literal, _literal_factory)
        converter.register_structure_hook_factory(
            lambda tp: optional_arg(tp) is not None, _make_optional_factory(converter)
        )
        converter.register_structure_hook_factory(
            lambda tp: sequence_arg(tp) is not None, _make_sequence_factory(converter)
        )
        converter.register_structure_hook_factory(
            lambda tp: tp in self._fields, lambda cls: self._structure_class_hook(converter, cls)
        )
        converter.register_unstructure_hook_factory(
            lambda tp: tp in self._fields,
            lambda cls: make_dict_unstructure_fn(cls, converter, **self._overrides(cls, encoding=True)),
        )
        return converter

    def _overrides(self, cls: type, *, encoding: bool = False) -> dict[str, Any]:
        result = {}
        for f in self._fields[cls]:
            # A field declared with metadata {"omit_if_default": True} is left out when it holds its
            # default, so a protocol can add an optional field that old peers never see.
            omit = encoding and attrs.fields_dict(cls)[f.name].metadata.get(OMIT_IF_DEFAULT, False)
            if f.wire != f.name or omit:
                result[f.name] = override(rename=f.wire, omit_if_default=True if omit else None)
        return result

    def _structure_class_hook(
        self, converter: cattrs.Converter, cls: type
    ) -> Callable[[object, Any], object]:
        generated = make_dict_structure_fn(
            cls, converter, _cattrs_forbid_extra_keys=self._strict, **self._overrides(cls)
        )

        # The generated function indexes its input: a string or a list would fail with noise.
        def structure_class(obj: object, cl: Any) -> object:
            if isinstance(obj, dict):
                return generated(obj, cl)
            raise _Mismatch("an object", obj)

        return structure_class

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

    # -- public API -------------------------------------------------------------------------------------

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
        """Return ``msg`` as a JSON-ready dict with its tag, for callers that embed it in an envelope.

        Raises :exc:`~trionos.EncodeError` when ``msg``'s class is not in the union (subclasses
        included: the tag belongs to the exact class).
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
        """Return ``msg`` as compact JSON text (non-ASCII kept as is, tag first).

        Raises :exc:`~trionos.EncodeError` when ``msg``'s class is not in the union, or when a field
        holds something JSON or UTF-8 cannot represent (NaN, infinity, a set, a lone surrogate, ...).
        """
        obj = self.unstructure(msg)
        try:
            return self._encoder(obj)
        except ENCODE_FAILURES as exc:
            raise EncodeError(f"cannot encode {short_repr(msg)} as JSON: {unencodable(obj, exc)}") from exc

    def structure(self, obj: object) -> T:
        """Build a message from an already-parsed JSON value (a dict with the tag field).

        Raises :exc:`~trionos.DecodeError`, and only that, when ``obj`` is not a valid message.
        """
        if not isinstance(obj, dict):
            raise DecodeError(f"expected a JSON object, got {_short(obj)}")
        try:
            return self._structure_union(obj, self._union)  # type: ignore[no-any-return]
        except (
            cattrs.BaseValidationError,
            cattrs.ForbiddenExtraKeysError,
            KeyError,
            TypeError,
            RecursionError,
        ) as exc:
            raise DecodeError(self._explain(obj, exc)) from exc

    def decode(self, data: str | bytes | bytearray | memoryview) -> T:
        """Parse JSON text (``str``, or UTF-8 ``bytes``) into a message.

        Raises :exc:`~trionos.DecodeError`, and only that, for any payload that is not a valid
        message: invalid UTF-8, invalid JSON, a string that is not Unicode text (a lone surrogate,
        raw or escaped), not an object, a missing or unknown tag, missing,
        ill-typed or (when ``strict``) unexpected fields. Raises :exc:`TypeError` if ``data`` is
        neither text nor bytes (a bug in the caller, not in the peer).
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
        """
        # Every class used as a field type goes in $defs (untagged, even a union member), so that
        # recursive classes are expressible.
        nested = list(
            dict.fromkeys(
                cls for fields in self._fields.values() for f in fields for cls in _classes_in(f.type)
            )
        )
        names = _unique_names(nested)
        variants = [self._object_schema(cls, names, tag) for tag, cls in self._by_tag.items()]
        schema: dict[str, Any] = {"$schema": _JSON_SCHEMA_DIALECT, "oneOf": variants}
        schema["discriminator"] = {"propertyName": self._tag_field}
        if nested:
            schema["$defs"] = {names[cls]: self._object_schema(cls, names, None) for cls in nested}
        return schema

    # -- internals --------------------------------------------------------------------------------------

    def _object_schema(self, cls: type, names: dict[type, str], tag: str | None) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required = []
        if tag is not None:
            properties[self._tag_field] = {"const": tag}
            required.append(self._tag_field)
        for f in self._fields[cls]:
            prop = self._type_schema(f.type, names)
            if f.required:
                required.append(f.wire)
            elif not isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
                prop["default"] = self._converter.unstructure(f.default, f.type)
            properties[f.wire] = prop
        schema: dict[str, Any] = {"type": "object", "title": cls.__name__}
        doc = (cls.__doc__ or "").strip()
        if doc:
            schema["description"] = doc.splitlines()[0]
        schema["properties"] = properties
        schema["required"] = required
        if self._strict:
            schema["additionalProperties"] = False
        return schema

    def _type_schema(self, tp: Any, names: dict[type, str]) -> dict[str, Any]:
        if tp is str:
            return {"type": "string"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is _NoneType:
            return {"type": "null"}
        if is_literal(tp):
            values = list(typing.get_args(tp))
            return {"const": values[0]} if len(values) == 1 else {"enum": values}
        inner = optional_arg(tp)
        if inner is not None:
            return {"anyOf": [self._type_schema(inner, names), {"type": "null"}]}
        inner = sequence_arg(tp)
        if inner is not None:
            return {"type": "array", "items": self._type_schema(inner, names)}
        return {"$ref": f"#/$defs/{names[tp]}"}

    def _explain(self, obj: dict[str, Any], exc: BaseException) -> str:
        """Turn whatever cattrs raised into one sentence (or several, joined by "; ")."""
        tag_field = self._tag_field
        expected = ", ".join(sorted(self._by_tag))
        if tag_field not in obj:
            return f'missing "{tag_field}" (expected one of: {expected})'
        tag = obj[tag_field]
        if type(tag) is not str or tag not in self._by_tag:
            return f"unknown {tag_field} {_short_value(tag)} (expected one of: {expected})"
        label = repr(tag)
        try:
            problems = list(self._problems(exc, ""))
        except RecursionError:
            problems = [("", "is nested too deeply")]
        if any(isinstance(e, RecursionError) for e in exception_leaves(exc)):
            # Only recursive classes get here; the path would be as long as the payload.
            problems = [("", "is nested too deeply")]
        sentences = []
        for path, problem in problems[:_MAX_PROBLEMS]:
            if problem == "missing":
                sentences.append(f"{label} is missing field {path!r}")
            elif problem == "unexpected":
                sentences.append(f"{label} has unexpected field {path!r}")
            elif path:
                sentences.append(f"{label} field {path!r} {problem}")
            else:
                sentences.append(f"{label} {problem}")
        if len(problems) > _MAX_PROBLEMS:
            # Bounded: a 10,000-item list of wrong types must not make a 10,000-sentence error.
            sentences.append(f"and {len(problems) - _MAX_PROBLEMS} more problems")
        return "; ".join(sentences) or f"{label} is invalid: {exc}"

    def _problems(self, exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
        """Walk cattrs' exception tree, yielding (wire path, problem) pairs."""
        if isinstance(exc, ClassValidationError):
            wire_names = self._wire_names.get(exc.cl, {})
            for sub in exc.exceptions:
                note = _note(sub, AttributeValidationNote)
                if note is not None:
                    name = wire_names.get(note.name, note.name)
                    yield from self._problems(sub, f"{path}.{name}" if path else name)
                elif isinstance(sub, ForbiddenExtraKeysError):
                    for key in sorted(sub.extra_fields):
                        yield (f"{path}.{key}" if path else key), "unexpected"
                else:
                    # Raised by the class itself, e.g. an attrs validator.
                    yield path, f"is invalid: {sub}"
        elif isinstance(exc, IterableValidationError):
            for sub in exc.exceptions:
                note = _note(sub, IterableValidationNote)
                yield from self._problems(sub, f"{path}[{note.index}]" if note is not None else path)
        elif isinstance(exc, _Mismatch):
            yield path, f"must be {exc.expected}, got {_short(exc.value)}"
        elif isinstance(exc, KeyError) and path:
            # The generated structure function indexes required fields: a KeyError there is a gap.
            yield path, "missing"
        elif isinstance(exc, ForbiddenExtraKeysError):
            for key in sorted(exc.extra_fields):
                yield key, "unexpected"
        else:
            yield path, f"is invalid: {exc}"


def _note(exc: BaseException, kind: type[T]) -> T | None:
    for note in getattr(exc, "__notes__", ()):
        if note.__class__ is kind:
            return note  # type: ignore[no-any-return]
    return None


def _short_value(value: object) -> str:
    return "null" if value is None else short_repr(value)


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


def fields_of(codec: Codec[Any]) -> Mapping[type, tuple[WireField, ...]]:
    """The wire fields of every class a codec handles (union members and nested classes)."""
    return types.MappingProxyType(codec._fields)
