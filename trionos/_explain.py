"""Turn what cattrs raised while decoding into one :exc:`~trionos.DecodeError` message.

cattrs reports a bad payload as a tree of exceptions (one group per class, one per list) with
notes saying which attribute or index each came from. ``explain`` walks that tree and writes
one sentence per problem, naming the message tag, the field's path on the wire (``comments[0].text``,
with wire names, not Python names), what was expected and what came::

    'post' field 'tags[2]' must be a string, got int 3; 'post' is missing field 'author'

At most ``MAX_PROBLEMS`` problems are listed, so a huge payload cannot make a huge message.

The module is pure (no I/O, never imports trio).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)

from ._errors import exception_leaves
from ._json import short_repr
from ._strict import Mismatch
from ._wire import describe

__all__ = ["MAX_PROBLEMS", "explain"]

#: How many problems a DecodeError lists before it says "and N more problems".
MAX_PROBLEMS = 5

_Note = TypeVar("_Note", AttributeValidationNote, IterableValidationNote)


def explain(
    obj: Mapping[str, Any],
    error: BaseException,
    *,
    tag_field: str,
    tags: Mapping[str, type],
    wire_names: Mapping[type, Mapping[str, str]],
) -> str:
    """Say why *obj* is not a valid message, in one sentence or several joined by ``"; "``.

    Args:
        obj: the JSON object that failed to decode.
        error: what the converter raised for it.
        tag_field: the key that carries the tag.
        tags: the protocol's tags and classes.
        wire_names: for each class, ``{attribute name: wire name}``.

    Returns:
        The message of the :exc:`~trionos.DecodeError` to raise.
    """
    expected = ", ".join(sorted(tags))
    if tag_field not in obj:
        return f'missing "{tag_field}" (expected one of: {expected})'
    tag = obj[tag_field]
    if type(tag) is not str or tag not in tags:
        return f"unknown {tag_field} {_short_value(tag)} (expected one of: {expected})"
    label = repr(tag)
    try:
        problems = list(_problems(error, "", wire_names))
    except RecursionError:
        problems = [("", "is nested too deeply")]
    if any(isinstance(e, RecursionError) for e in exception_leaves(error)):
        # Only recursive classes get here; the path would be as long as the payload.
        problems = [("", "is nested too deeply")]
    sentences = []
    for path, problem in problems[:MAX_PROBLEMS]:
        if problem == "missing":
            sentences.append(f"{label} is missing field {path!r}")
        elif problem == "unexpected":
            sentences.append(f"{label} has unexpected field {path!r}")
        elif path:
            sentences.append(f"{label} field {path!r} {problem}")
        else:
            sentences.append(f"{label} {problem}")
    if len(problems) > MAX_PROBLEMS:
        # Bounded: a 10,000-item list of wrong types must not make a 10,000-sentence error.
        sentences.append(f"and {len(problems) - MAX_PROBLEMS} more problems")
    return "; ".join(sentences) or f"{label} is invalid: {error}"


def _problems(
    exc: BaseException, path: str, wire_names: Mapping[type, Mapping[str, str]]
) -> Iterator[tuple[str, str]]:
    """Walk cattrs' exception tree, yielding (wire path, problem) pairs."""
    if isinstance(exc, ClassValidationError):
        names = wire_names.get(exc.cl, {})
        for sub in exc.exceptions:
            attribute = _note(sub, AttributeValidationNote)
            if attribute is not None:
                name = names.get(attribute.name, attribute.name)
                yield from _problems(sub, f"{path}.{name}" if path else name, wire_names)
            elif isinstance(sub, ForbiddenExtraKeysError):
                for key in sorted(sub.extra_fields):
                    yield (f"{path}.{key}" if path else key), "unexpected"
            else:
                # Raised by the class itself, e.g. an attrs validator.
                yield path, f"is invalid: {sub}"
    elif isinstance(exc, IterableValidationError):
        for sub in exc.exceptions:
            item = _note(sub, IterableValidationNote)
            yield from _problems(sub, f"{path}[{item.index}]" if item is not None else path, wire_names)
    elif isinstance(exc, Mismatch):
        yield path, f"must be {exc.expected}, got {describe(exc.value)}"
    elif isinstance(exc, KeyError) and path:
        # The generated structure function indexes required fields: a KeyError there is a gap.
        yield path, "missing"
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield key, "unexpected"
    else:
        yield path, f"is invalid: {exc}"


def _note(exc: BaseException, kind: type[_Note]) -> _Note | None:
    """The note of class *kind* that cattrs attached to *exc*, if any."""
    for note in getattr(exc, "__notes__", ()):
        if note.__class__ is kind:
            return note
    return None


def _short_value(value: object) -> str:
    return "null" if value is None else short_repr(value)
