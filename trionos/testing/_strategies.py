"""Hypothesis strategies for protocols defined with :class:`trionos.Codec`.

Everything is derived from the codec, so a user's own protocol gets the same tests as the chat
protocol::

    @given(messages(MY_CODEC))
    def test_round_trip(msg):
        assert MY_CODEC.decode(MY_CODEC.encode(msg)) == msg

    @given(malformed_payloads(MY_CODEC))
    def test_rejects(payload):
        with pytest.raises(trionos.DecodeError):
            MY_CODEC.decode(payload)

This is the only trionos module that imports hypothesis; the library itself never does.
"""

from __future__ import annotations

import json
import typing
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st

from .._codec import Codec, fields_of
from .._wire import WireField, is_literal, optional_arg, scalar_union_args, sequence_arg

__all__ = ["json_values", "malformed_payloads", "messages", "mutated_payloads"]

T = TypeVar("T")

# Integers stay within 64 bits: the range every JSON library (orjson too) round-trips exactly.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# Shallow JSON values of every kind, to put where a field expects another kind.
_WRONG_VALUE_POOL: tuple[object, ...] = (0, -1, 1.5, True, False, "x", "", None, [], [0], ["x"], {}, {"x": 1})
# Text that is not JSON at all, or almost.
_NOT_JSON = (
    "",
    " ",
    "{",
    "}",
    "[",
    "nul",
    "tru",
    "{'type': 'chat'}",
    '{"type" "chat"}',
    "[1,]",
    "{,}",
    "NaN",
)


def json_values() -> st.SearchStrategy[Any]:
    """Arbitrary JSON values (as Python objects): null, booleans, numbers, strings, arrays, objects.

    Integers stay within 64 bits; floats are finite; at most 12 leaves.

    Returns:
        A strategy for the values.
    """
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(_INT_MIN, _INT_MAX)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
        max_leaves=12,
    )


def messages(codec: Codec[T]) -> st.SearchStrategy[T]:
    """Valid messages of every class in *codec*'s protocol, with values drawn from the field types.

    Defaulted fields are sometimes left out; integers stay within 64 bits, lists within 4 items.

    Args:
        codec: the protocol.

    Returns:
        A strategy for message instances that *codec* round-trips.
    """
    builder = _Builder(codec)
    return st.one_of([builder.instances(cls) for cls in codec.tags.values()])


def malformed_payloads(codec: Codec[Any]) -> st.SearchStrategy[str]:
    """JSON text that ``codec.decode`` must reject with :exc:`~trionos.DecodeError`.

    Each example is wrong in a way that does not depend on the codec's own code to decide: text that
    is not JSON (including truncated and over-long valid messages), JSON that is not an object, a
    missing or unknown tag, a missing required field, a field of the wrong type (booleans for
    integers, numbers for strings, ...) and, for strict codecs, an unexpected field.

    Args:
        codec: the protocol.

    Returns:
        A strategy for JSON text.
    """
    builder = _Builder(codec)
    valid = messages(codec)
    encoded = valid.map(codec.encode)
    categories = [
        st.sampled_from(_NOT_JSON),
        # A strict prefix of a JSON object never closes it; anything after the object is "extra data".
        st.tuples(encoded, st.integers(0, 10_000)).map(lambda t: t[0][: t[1] % len(t[0])]),
        st.tuples(encoded, st.sampled_from([",", "}", "]", "x", "{}", "0"])).map("".join),
        json_values().filter(lambda v: not isinstance(v, dict)).map(json.dumps),
        _with_bad_tag(codec, valid),
    ]
    with_required = [cls for cls in codec.tags.values() if _required(builder.fields[cls])]
    if with_required:
        categories.append(_without_a_required_field(codec, builder, with_required))
    ill_typed = [
        cls for cls in codec.tags.values() if any(_wrong_values(builder, f.type) for f in builder.fields[cls])
    ]
    if ill_typed:
        categories.append(_with_an_ill_typed_field(codec, builder, ill_typed))
    if codec.strict:
        categories.append(_with_an_unexpected_field(codec, builder))
    return st.one_of(categories)


def mutated_payloads(codec: Codec[Any]) -> st.SearchStrategy[str]:
    """Valid messages with one random edit: some stay valid, most do not.

    For fuzzing: ``codec.decode`` must either return a message or raise
    :exc:`~trionos.DecodeError` for every one of them.

    Args:
        codec: the protocol.

    Returns:
        A strategy for JSON text (or almost).
    """
    valid = messages(codec)
    encoded = valid.map(codec.encode)
    text_edits = st.tuples(encoded, st.integers(0, 10_000), st.integers(0, 2), st.characters()).map(
        _edit_text
    )

    @st.composite
    def value_edits(draw: st.DrawFn) -> str:
        obj = codec.unstructure(draw(valid))
        key = draw(st.sampled_from(sorted(obj)) | st.text(max_size=8))
        if draw(st.booleans()) and key in obj:
            del obj[key]
        else:
            obj[key] = draw(json_values())
        return json.dumps(obj)

    return text_edits | value_edits()


# -- internals ---------------------------------------------------------------------------------------------


class _Builder:
    """Strategies for the field types of one codec, memoised so recursive classes terminate."""

    def __init__(self, codec: Codec[Any]) -> None:
        self.codec = codec
        self.fields = fields_of(codec)
        self._classes: dict[type, st.SearchStrategy[Any]] = {}

    def instances(self, cls: type) -> st.SearchStrategy[Any]:
        if cls not in self._classes:
            # Deferred, so that a class whose fields refer back to it resolves lazily.
            self._classes[cls] = st.deferred(lambda: self._build(cls))
        return self._classes[cls]

    def _build(self, cls: type) -> st.SearchStrategy[Any]:
        required = {f.alias: self.values(f.type) for f in self.fields[cls] if f.required}
        optional = {f.alias: self.values(f.type) for f in self.fields[cls] if not f.required}
        # Not st.builds(cls, ...): it always leaves defaulted arguments at their default, whereas
        # fixed_dictionaries(optional=...) sometimes passes them, so both paths get exercised.
        return st.fixed_dictionaries(required, optional=optional).map(lambda kwargs: cls(**kwargs))

    def values(self, tp: Any) -> st.SearchStrategy[Any]:
        """Values of the Python type ``tp`` that the codec encodes and decodes back unchanged."""
        if tp is str:
            return st.text(max_size=20)
        if tp is bool:
            return st.booleans()
        if tp is int:
            return st.integers(_INT_MIN, _INT_MAX)
        if tp is float:
            return st.floats(allow_nan=False, allow_infinity=False)
        if tp is type(None):
            return st.none()
        if is_literal(tp):
            return st.sampled_from(typing.get_args(tp))
        scalars = scalar_union_args(tp)
        if scalars is not None:
            return st.one_of([self.values(arg) for arg in scalars])
        inner = optional_arg(tp)
        if inner is not None:
            return st.none() | self.values(inner)
        inner = sequence_arg(tp)
        if inner is not None:
            lists = st.lists(self.values(inner), max_size=4)
            return lists.map(tuple) if typing.get_origin(tp) is tuple else lists
        if attrs.has(tp):
            return self.instances(tp)
        raise TypeError(f"no strategy for {tp!r}")  # the codec would have refused it already

    def accepts(self, tp: Any, value: object) -> bool:
        """Whether the codec should decode ``value`` as a ``tp``: an independent statement of its rules."""
        if tp is str:
            return type(value) is str
        if tp is bool:
            return type(value) is bool
        if tp is int:
            return type(value) is int
        if tp is float:
            return type(value) in (int, float)
        if tp is type(None):
            return value is None
        if is_literal(tp):
            return any(type(value) is type(v) and value == v for v in typing.get_args(tp))
        scalars = scalar_union_args(tp)
        if scalars is not None:
            return any(self.accepts(arg, value) for arg in scalars)
        inner = optional_arg(tp)
        if inner is not None:
            return value is None or self.accepts(inner, value)
        inner = sequence_arg(tp)
        if inner is not None:
            return type(value) is list and all(self.accepts(inner, item) for item in value)
        if not isinstance(value, dict):
            return False
        fields = {f.wire: f for f in self.fields[tp]}
        if self.codec.strict and not set(value) <= set(fields):
            return False
        return all(f.wire in value for f in fields.values() if f.required) and all(
            self.accepts(fields[key].type, item) for key, item in value.items() if key in fields
        )


def _required(fields: tuple[WireField, ...]) -> list[WireField]:
    return [f for f in fields if f.required]


def _wrong_values(builder: _Builder, tp: Any) -> list[object]:
    return [v for v in _WRONG_VALUE_POOL if not builder.accepts(tp, v)]


def _edit_text(args: tuple[str, int, int, str]) -> str:
    text, position, operation, char = args
    i = position % (len(text) + 1)
    if operation == 0:
        return text[:i] + char + text[i:]
    if operation == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + char + text[i + 1 :]


def _with_bad_tag(codec: Codec[Any], valid: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    tag_field = codec.tag_field
    wrong_tags = st.text().filter(lambda t: t not in codec.tags) | json_values().filter(
        lambda v: not isinstance(v, str)
    )

    @st.composite
    def bad_tag(draw: st.DrawFn) -> str:
        obj = codec.unstructure(draw(valid))
        if draw(st.booleans()):
            del obj[tag_field]
        else:
            obj[tag_field] = draw(wrong_tags)
        return json.dumps(obj)

    return bad_tag()


def _message_dict(draw: st.DrawFn, codec: Codec[Any], builder: _Builder, classes: list[type]) -> Any:
    cls = draw(st.sampled_from(classes))
    return cls, codec.unstructure(draw(builder.instances(cls)))


def _without_a_required_field(
    codec: Codec[Any], builder: _Builder, classes: list[type]
) -> st.SearchStrategy[str]:
    @st.composite
    def missing(draw: st.DrawFn) -> str:
        cls, obj = _message_dict(draw, codec, builder, classes)
        field = draw(st.sampled_from(_required(builder.fields[cls])))
        del obj[field.wire]
        return json.dumps(obj)

    return missing()


def _with_an_ill_typed_field(
    codec: Codec[Any], builder: _Builder, classes: list[type]
) -> st.SearchStrategy[str]:
    @st.composite
    def ill_typed(draw: st.DrawFn) -> str:
        cls, obj = _message_dict(draw, codec, builder, classes)
        field = draw(st.sampled_from([f for f in builder.fields[cls] if _wrong_values(builder, f.type)]))
        obj[field.wire] = draw(st.sampled_from(_wrong_values(builder, field.type)))
        return json.dumps(obj)

    return ill_typed()


def _with_an_unexpected_field(codec: Codec[Any], builder: _Builder) -> st.SearchStrategy[str]:
    classes = list(codec.tags.values())

    @st.composite
    def unexpected(draw: st.DrawFn) -> str:
        cls, obj = _message_dict(draw, codec, builder, classes)
        taken = {f.wire for f in builder.fields[cls]} | {codec.tag_field}
        obj[draw(st.text(max_size=8).filter(lambda k: k not in taken))] = draw(json_values())
        return json.dumps(obj)

    return unexpected()
