"""Message classes as they appear on the wire: supported field types, wire names, words for errors.

A protocol (see :class:`~trionos.Codec`) is a union of ``@attrs.frozen`` classes. This module
resolves the fields of every class the union reaches (nested classes included), checks that each
field type is one the codec supports, and works out each field's name on the wire. It also says in
words what a field type takes and what a JSON value is, for error messages. Shared by the codec,
its strict hooks, its error explanations, its JSON Schema and the testing kit's strategies.

The module is pure (no I/O, never imports trio).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "OMIT_IF_DEFAULT",
    "SCALARS",
    "WireField",
    "collect_fields",
    "describe",
    "expected",
    "is_literal",
    "optional_arg",
    "scalar_union_args",
    "sequence_arg",
    "snake_case",
    "union_members",
]

NoneType = type(None)

#: The scalar field types, and what each takes in words.
SCALARS: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    NoneType: "null",
}
_SUPPORTED = (
    "str, int, float, bool, None, Literal[...], list[X], tuple[X, ...], X | None, unions of those "
    "scalars (str | int) and nested attrs classes"
)
#: attrs field metadata key: ``attrs.field(default=None, metadata={OMIT_IF_DEFAULT: True})`` is not
#: encoded while it holds its default.
OMIT_IF_DEFAULT = "omit_if_default"


def snake_case(name: str) -> str:
    """Return the default tag for a class name.

    Args:
        name: a class name, e.g. ``UserJoined`` or ``HTTPError``.

    Returns:
        The name in snake_case: ``user_joined``, ``http_error``.
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def optional_arg(tp: Any) -> Any | None:
    """Return ``X`` for ``X | None`` (or ``Optional[X]``), and ``X | Y`` for ``X | Y | None``.

    Args:
        tp: a field type.

    Returns:
        The type without None when *tp* is a union with None; None for any other type.
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if NoneType in args:
            rest = tuple(arg for arg in args if arg is not NoneType)
            return rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 (built at run time)
    return None


def scalar_union_args(tp: Any) -> tuple[type, ...] | None:
    """Return ``(X, Y)`` for a union of scalar types without None, such as ``str | int``.

    Args:
        tp: a field type.

    Returns:
        The union's types when all are str, int, float or bool; None for any other type.
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if all(arg in SCALARS and arg is not NoneType for arg in args):
            return args
    return None


def sequence_arg(tp: Any) -> Any | None:
    """Return ``X`` for ``list[X]`` or ``tuple[X, ...]``.

    Args:
        tp: a field type.

    Returns:
        The item type when *tp* is ``list[X]`` or ``tuple[X, ...]``; None for any other type.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and len(args) == 1:
        return args[0]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


def is_literal(tp: Any) -> bool:
    """Say whether *tp* is a ``Literal[...]`` whose values are all str, int, bool or None.

    Args:
        tp: a field type.

    Returns:
        True for such a ``Literal``.
    """
    return typing.get_origin(tp) is Literal and all(
        type(value) in (str, int, bool, NoneType) for value in typing.get_args(tp)
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


def union_members(union: Any) -> tuple[type, ...]:
    """Return the classes of a protocol.

    Args:
        union: an attrs class, or a union of attrs classes (``A | B`` or ``typing.Union[A, B]``).

    Returns:
        The classes, in union order.

    Raises:
        TypeError: *union* is not an attrs class nor a union of them.
    """
    if attrs.has(union):
        return (union,)
    if typing.get_origin(union) in (typing.Union, types.UnionType):
        members = typing.get_args(union)
        not_attrs = [m for m in members if not (isinstance(m, type) and attrs.has(m))]
        if not not_attrs:
            return members
        raise TypeError(f"Codec needs a union of attrs classes, but {union!r} contains {not_attrs[0]!r}")
    raise TypeError(f"Codec needs an attrs class or a union of attrs classes, got {union!r}")


def collect_fields(
    members: tuple[type, ...], renames: Mapping[type, Mapping[str, str]]
) -> dict[type, tuple[WireField, ...]]:
    """Resolve the fields of every class reachable from *members*, checking types and renames.

    Without a rename a trailing underscore is stripped (``from_`` is ``"from"`` on the wire).

    Args:
        members: the classes of the protocol.
        renames: ``{class: {attribute: wire name}}`` for any reachable class.

    Returns:
        Every reachable class (members and nested classes) with its wire fields.

    Raises:
        TypeError: a field type is not supported.
        ValueError: *renames* names an unknown class or field, or two fields share a wire name.
    """
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
            _check_type(a.type, where, pending)
            row.append(
                WireField(
                    name=a.name,
                    alias=a.alias or a.name,
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


def _check_type(tp: Any, where: str, pending: list[type]) -> None:
    """Raise TypeError unless *tp* is supported; queue the attrs classes it mentions in *pending*."""
    if tp in SCALARS or is_literal(tp) or scalar_union_args(tp) is not None:
        return
    if isinstance(tp, type) and attrs.has(tp):
        pending.append(tp)
        return
    inner = optional_arg(tp)
    if inner is None:
        inner = sequence_arg(tp)
    if inner is None:
        raise TypeError(f"Codec cannot handle {where}: {tp!r}; supported field types are {_SUPPORTED}")
    _check_type(inner, where, pending)


# How error messages name the kind of a JSON value that came.
_KINDS = {
    NoneType: "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "object",
}


def describe(value: object) -> str:
    """Describe a JSON value for an error message: its kind and a truncated repr.

    Args:
        value: a parsed JSON value.

    Returns:
        E.g. ``int 5``, ``str 'abc'``, ``null``, ``object {'a': 1}``.
    """
    kind = _KINDS.get(type(value), type(value).__name__)
    if value is None:
        return kind
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def expected(tp: Any) -> str:
    """Say in words what JSON value a field type takes.

    Args:
        tp: a supported field type.

    Returns:
        E.g. ``a string``, ``an integer or null``, ``an array``, ``one of 'a', 'b'``, ``an object``.
    """
    if tp in SCALARS:
        return SCALARS[tp]
    inner = optional_arg(tp)
    if inner is not None:
        return f"{expected(inner)} or null"
    scalars = scalar_union_args(tp)
    if scalars is not None:
        return " or ".join(SCALARS[arg] for arg in scalars)
    if sequence_arg(tp) is not None:
        return "an array"
    if is_literal(tp):
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    return "an object"
