"""The codec's private cattrs converter: strict structure hooks, wire names, omitted defaults.

JSON from a peer is untrusted, so decoding takes each value as it is: a string field takes only a
string (cattrs would happily call ``str(5)``), an integer field takes no ``true``, a list field
takes only an array, and a string must be Unicode text (a lone surrogate, which JSON can spell as
``"\\udfff"``, would fail later, far from the peer that sent it). A mismatch raises
``Mismatch``; cattrs attaches the field path, and the codec's explanation words the message.

Each :class:`~trionos.Codec` builds one converter with ``build_converter``, so two codecs never
see each other's hooks and cattrs' global converter is never touched.

The module is pure (no I/O, never imports trio).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._json import is_unicode_text
from ._wire import (
    OMIT_IF_DEFAULT,
    NoneType,
    WireField,
    expected,
    is_literal,
    optional_arg,
    scalar_union_args,
    sequence_arg,
)

__all__ = ["Mismatch", "build_converter"]

#: A structure hook, as cattrs calls it: (JSON value, target type) -> Python value.
StructureHook = Callable[[Any, Any], Any]


class Mismatch(Exception):
    """Raised inside structure hooks; cattrs attaches the field path and the codec words the message."""

    def __init__(self, expected: str, value: object) -> None:
        super().__init__(expected, value)
        #: What the field takes, in words ("a string").
        self.expected = expected
        #: The JSON value that came.
        self.value = value


# cattrs' own hooks coerce (``str(5)``, ``int("5")``, ``int(True)``): these take the JSON value as it is.
# Exact type checks, because bool is an int subclass and must not pass as one.
def _structure_str(obj: object, _: type) -> str:
    if type(obj) is str:
        if obj.isascii() or is_unicode_text(obj):
            return obj
        raise Mismatch("Unicode text (no lone surrogates)", obj)
    raise Mismatch("a string", obj)


def _structure_int(obj: object, _: type) -> int:
    if type(obj) is int:
        return obj
    raise Mismatch("an integer", obj)


def _structure_float(obj: object, _: type) -> float:
    # JSON has one number type: 1 is as good a float as 1.0. Infinity only appears when a literal
    # overflows (1e400); it could not be encoded back, so it is refused here.
    if type(obj) is float:
        if math.isfinite(obj):
            return obj
        raise Mismatch("a finite number", obj)
    if type(obj) is int:
        try:
            return float(obj)
        except OverflowError:
            raise Mismatch("a number within float range", obj) from None
    raise Mismatch("a number", obj)


def _structure_bool(obj: object, _: type) -> bool:
    if obj is True or obj is False:
        return obj
    raise Mismatch("a boolean", obj)


def _structure_none(obj: object, _: type) -> None:
    if obj is None:
        return None
    raise Mismatch("null", obj)


def _literal_factory(tp: Any) -> StructureHook:
    values = typing.get_args(tp)
    # Compare (type, value) pairs so that True does not match Literal[1], nor 1 match Literal[True].
    allowed = frozenset((type(v), v) for v in values)
    kinds = frozenset(type(v) for v in values)
    words = expected(tp)

    def structure_literal(obj: object, _: Any) -> object:
        if type(obj) in kinds and (type(obj), obj) in allowed:
            return obj
        raise Mismatch(words, obj)

    return structure_literal


def _make_scalar_union_factory(converter: cattrs.Converter) -> Callable[[Any], StructureHook]:
    def scalar_union_factory(tp: Any) -> StructureHook:
        # Each scalar hook checks the exact JSON type, so the first that takes the value is the
        # only one that would: ``str | int`` reads "5" as a string and 5 as an integer, never coerced.
        hooks = [(arg, converter.get_structure_hook(arg)) for arg in scalar_union_args(tp) or ()]
        words = expected(tp)

        def structure_scalar_union(obj: object, _: Any) -> object:
            for arg, hook in hooks:
                try:
                    return hook(obj, arg)
                except Mismatch:
                    pass
            raise Mismatch(words, obj)

        return structure_scalar_union

    return scalar_union_factory


def _make_optional_factory(converter: cattrs.Converter) -> Callable[[Any], StructureHook]:
    def optional_factory(tp: Any) -> StructureHook:
        inner_type = optional_arg(tp)
        inner = converter.get_structure_hook(inner_type)
        words = expected(tp)

        def structure_optional(obj: object, _: Any) -> object:
            if obj is None:
                return None
            try:
                return inner(obj, inner_type)
            except Mismatch:
                raise Mismatch(words, obj) from None

        return structure_optional

    return optional_factory


def _make_sequence_factory(converter: cattrs.Converter) -> Callable[[Any], StructureHook]:
    def sequence_factory(tp: Any) -> StructureHook:
        # cattrs turns any iterable into a list, so "abc" would become ["a", "b", "c"]: check first.
        inner: StructureHook
        if typing.get_origin(tp) is tuple:
            inner = homogenous_tuple_structure_factory(tp, converter)
        else:
            inner = list_structure_factory(tp, converter)

        def structure_sequence(obj: object, cl: Any) -> object:
            if isinstance(obj, list):
                return inner(obj, cl)
            raise Mismatch("an array", obj)

        return structure_sequence

    return sequence_factory


def build_converter(fields: Mapping[type, tuple[WireField, ...]], *, strict: bool) -> cattrs.Converter:
    """Build a private converter for the classes of one protocol.

    Args:
        fields: every class of the protocol (members and nested classes) with its wire fields, as
            ``collect_fields`` returns them.
        strict: whether payloads with unknown fields are refused.

    Returns:
        A converter whose structure hooks raise ``Mismatch`` (wrapped by cattrs' detailed
        validation) for any value of the wrong JSON type, and whose unstructure hooks write wire
        names and leave out fields marked ``omit_if_default`` while they hold their default.
    """
    # Detailed validation gives every error its field path.
    converter = cattrs.Converter(forbid_extra_keys=strict, detailed_validation=True)
    scalar_hooks: tuple[tuple[type, StructureHook], ...] = (
        (str, _structure_str),
        (int, _structure_int),
        (float, _structure_float),
        (bool, _structure_bool),
        (NoneType, _structure_none),
    )
    for tp, hook in scalar_hooks:
        converter.register_structure_hook(tp, hook)
    # Factories registered later take precedence over cattrs' built-in ones for the same types.
    converter.register_structure_hook_factory(is_literal, _literal_factory)
    converter.register_structure_hook_factory(
        lambda tp: scalar_union_args(tp) is not None, _make_scalar_union_factory(converter)
    )
    converter.register_structure_hook_factory(
        lambda tp: optional_arg(tp) is not None, _make_optional_factory(converter)
    )
    converter.register_structure_hook_factory(
        lambda tp: sequence_arg(tp) is not None, _make_sequence_factory(converter)
    )

    def structure_class_factory(cls: type) -> StructureHook:
        generated: StructureHook = make_dict_structure_fn(
            cls, converter, _cattrs_forbid_extra_keys=strict, **_overrides(fields, cls, encoding=False)
        )

        # The generated function indexes its input: a string or a list would fail with noise.
        def structure_class(obj: object, cl: Any) -> object:
            if isinstance(obj, dict):
                return generated(obj, cl)
            raise Mismatch("an object", obj)

        return structure_class

    converter.register_structure_hook_factory(lambda tp: tp in fields, structure_class_factory)
    converter.register_unstructure_hook_factory(
        lambda tp: tp in fields,
        lambda cls: make_dict_unstructure_fn(cls, converter, **_overrides(fields, cls, encoding=True)),
    )
    return converter


def _overrides(fields: Mapping[type, tuple[WireField, ...]], cls: type, *, encoding: bool) -> dict[str, Any]:
    """cattrs overrides for *cls*: wire names, and (when encoding) fields omitted at their default."""
    result = {}
    for f in fields[cls]:
        # A field declared with metadata {"omit_if_default": True} is left out when it holds its
        # default, so a protocol can add an optional field that old peers never see.
        omit = encoding and attrs.fields_dict(cls)[f.name].metadata.get(OMIT_IF_DEFAULT, False)
        if f.wire != f.name or omit:
            result[f.name] = override(rename=f.wire, omit_if_default=True if omit else None)
    return result
