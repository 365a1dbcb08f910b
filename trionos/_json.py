"""The one JSON policy of the package: what trionos writes and reads is RFC 8259 JSON, nothing else.

Every JSON text trionos sends or stores (``send_json``, every :class:`~trionos.Codec`, the
broker's presence records) is made by ``dumps`` or by the orjson pair of
``json_library``, and every JSON text it reads is parsed by ``loads`` or by that pair.
The policy:

* Output is compact (``{"a":1,"b":[2,3]}``), keeps non-ASCII text as is, and is valid JSON that
  can be encoded to UTF-8. What JSON cannot represent is refused with
  :exc:`~trionos.EncodeError` before anything is sent: NaN and infinities (Python's
  ``json`` would write ``NaN``, which is not JSON; orjson would write ``null``, which changes
  the value), a string holding a lone surrogate, values of other types (a set, an object), a
  container that contains itself. The message says what was refused and where (``'x'``,
  ``'a[2].b'``).
* Input must be JSON: ``NaN``, ``Infinity`` and ``-Infinity`` (which Python's ``json`` accepts
  by default) are refused, as are invalid UTF-8, a string (or key) that is not Unicode text (an
  escaped lone surrogate), nesting too deep for the parser, and integers over Python's
  digit limit. Every refusal is a :exc:`~trionos.DecodeError` and nothing else, since
  the text comes from a peer. A number literal too large for a float (``1e400``) is valid JSON;
  the stdlib parser reads it as ``inf`` (a codec's float field then refuses it), orjson refuses
  it.

The module is pure (no I/O, never imports trio).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, Literal, NoReturn, TypeAlias

from ._errors import DecodeError, EncodeError

__all__ = [
    "ENCODE_FAILURES",
    "Encoder",
    "JSONInput",
    "Parser",
    "dumps",
    "is_unicode_text",
    "json_library",
    "loads",
    "parse",
    "short_repr",
    "unencodable",
]

#: Text or UTF-8 bytes, as a WebSocket message or a Redis value delivers it.
JSONInput: TypeAlias = str | bytes | bytearray | memoryview
#: A raw encoder: value -> JSON text; raises one of ``ENCODE_FAILURES`` for what it refuses.
Encoder: TypeAlias = Callable[[Any], str]
#: A raw parser: JSON text -> value; raises ``ValueError`` (``json.JSONDecodeError`` or not) or
#: ``RecursionError`` for what it refuses.
Parser: TypeAlias = Callable[[Any], Any]
#: What a raw encoder raises for a value it cannot encode.
ENCODE_FAILURES = (TypeError, ValueError, RecursionError)

#: A code point that cannot be encoded to UTF-8: a surrogate on its own.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The JSON escape of a surrogate. A valid escaped pair matches too, so a match in the text only
#: means that the parsed value is checked string by string.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def is_unicode_text(text: str) -> bool:
    """Whether *text* can be encoded to UTF-8 (holds no lone surrogate); O(1) for ASCII.

    Args:
        text: the string to check.

    Returns:
        True when every code point of *text* can be encoded to UTF-8.
    """
    return text.isascii() or _SURROGATE.search(text) is None


# -- encoding -----------------------------------------------------------------------------------------------


# Built once: json.dumps with options builds a new encoder on every call.
_stdlib_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _stdlib_encoder(value: Any) -> str:
    """Compact JSON text of *value* with the stdlib; refuses NaN, infinities and lone surrogates."""
    text = _stdlib_encode(value)
    # What cannot become UTF-8 would fail at the socket instead, after the send was accepted.
    if not (text.isascii() or _SURROGATE.search(text) is None):
        raise ValueError("a string holds a lone surrogate")
    return text


def dumps(value: Any) -> str:
    """Return *value* as compact JSON text (non-ASCII kept as is), refusing what JSON cannot hold.

    Args:
        value: a JSON value: dict (str, int, float, bool or None keys), list, tuple, str, int,
            float, bool or None, nested in any way.

    Returns:
        The JSON text, e.g. ``{"a":[1,2.5,"é"]}``; it can always be encoded to UTF-8.

    Raises:
        EncodeError: *value* holds NaN or an infinity, a string with a lone surrogate, an
            integer too long for Python to print, a value of another type, or a container that
            contains itself; or it is nested too deeply. The message names the first such item by
            its path.
    """
    try:
        return _stdlib_encoder(value)
    except ENCODE_FAILURES as exc:
        raise EncodeError(f"cannot encode {short_repr(value)} as JSON: {unencodable(value, exc)}") from exc


def unencodable(value: Any, error: BaseException) -> str:
    """Say why an encoder refused *value*: the first item JSON cannot hold and its path.

    Runs only after an encoder failed, so it may walk the whole value. The walk is iterative and
    follows each container once per path, so deep or cyclic values cannot exhaust the stack.

    Args:
        value: the value an encoder refused.
        error: what the encoder raised; its text is the explanation when the walk finds nothing
            (a limit of the encoder's own, such as orjson's 64-bit integers).

    Returns:
        A phrase for an error message, e.g. ``the number at 'x' is nan (JSON has no NaN or
        Infinity)``.
    """
    if isinstance(error, RecursionError):
        return "it is nested too deeply"
    found = _first_unencodable(value)
    return found if found is not None else str(error)


def _where(path: str) -> str:
    return f"at {path!r}" if path else "at the top level"


def _first_unencodable(value: Any) -> str | None:
    """The first item (in document order) that JSON cannot hold, described; None if there is none."""
    # Depth-first, with the chain of containers above the current item, to tell a cycle from a
    # container that merely appears twice.
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    ancestors: list[int] = []
    while stack:
        item, path, depth = stack.pop()
        del ancestors[depth:]
        if isinstance(item, str):
            if not is_unicode_text(item):
                match = _SURROGATE.search(item)
                assert match is not None
                return (
                    f"the string {_where(path)} holds the lone surrogate {match.group()!r} "
                    f"at index {match.start()} (not Unicode text)"
                )
        elif isinstance(item, bool | int) or item is None:
            # 4300 digits (Python's default limit on printing an int) take about 14,280 bits.
            if isinstance(item, int) and item.bit_length() > 14_000 and not _printable(item):
                return (
                    f"the integer {_where(path)} has more digits than Python prints "
                    f"(sys.get_int_max_str_digits() is {sys.get_int_max_str_digits()})"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"the number {_where(path)} is {item!r} (JSON has no NaN or Infinity)"
        elif isinstance(item, dict | list | tuple):
            if id(item) in ancestors:
                return f"the {type(item).__name__} {_where(path)} contains itself"
            ancestors.append(id(item))
            children: list[tuple[Any, str, int]] = []
            if isinstance(item, dict):
                for key, sub in item.items():
                    problem = _unencodable_key(key, path)
                    if problem is not None:
                        return problem
                    children.append((sub, f"{path}.{key}" if path else str(key), depth + 1))
            else:
                children = [(sub, f"{path}[{i}]", depth + 1) for i, sub in enumerate(item)]
            stack.extend(reversed(children))
        else:
            return f"the value {_where(path)} is a {type(item).__name__} {short_repr(item)}, not a JSON value"
    return None


def _printable(number: int) -> bool:
    try:
        repr(number)
    except ValueError:
        return False
    return True


def _unencodable_key(key: object, path: str) -> str | None:
    where = f"of the object at {path!r}" if path else "of the top-level object"
    if isinstance(key, str):
        if is_unicode_text(key):
            return None
        return f"a key {where} holds a lone surrogate (not Unicode text)"
    if isinstance(key, float) and not math.isfinite(key):
        return f"a key {where} is {key!r} (JSON has no NaN or Infinity)"
    if isinstance(key, int) and key.bit_length() > 14_000 and not _printable(key):
        return f"a key {where} is an integer with more digits than Python prints"
    if isinstance(key, bool | int | float) or key is None:
        return None  # written as a string, as json.dumps does
    return f"a key {where} is a {type(key).__name__} {short_repr(key)}; JSON keys are strings"


# -- decoding -----------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


# Built once: json.loads with options builds a new decoder on every call.
_stdlib_parse: Parser = json.JSONDecoder(parse_constant=_reject_constant).decode


def loads(data: JSONInput) -> Any:
    """Parse JSON text, or UTF-8 bytes, refusing everything that is not RFC 8259 JSON.

    Args:
        data: the JSON text (``str``) or its UTF-8 encoding.

    Returns:
        The parsed value. Every string in it, keys included, is Unicode text.

    Raises:
        DecodeError: (and nothing else) invalid UTF-8, invalid JSON (``NaN``, ``Infinity`` and
            ``-Infinity`` included), a lone surrogate (escaped, or raw in ``str`` input), nesting
            too deep, or an integer beyond Python's digit limit. The message says where.
    """
    return parse(data, _stdlib_parse)


def parse(data: JSONInput, parser: Parser, *, parser_checks_utf8: bool = False) -> Any:
    """Parse *data* with *parser*, applying the policy of ``loads`` around it.

    Args:
        data: the JSON text or its UTF-8 encoding.
        parser: the raw parser (the stdlib one, or orjson's, which refuses ``NaN`` itself).
        parser_checks_utf8: whether *parser* takes bytes and checks UTF-8 (and refuses lone
            surrogates) as it parses, as orjson does, so bytes need not be decoded first.

    Returns:
        The parsed value; every string in it is Unicode text.

    Raises:
        DecodeError: as ``loads``.
    """
    if not isinstance(data, str) and not parser_checks_utf8:
        data = _utf8(data)
    try:
        value = parser(data)
    except json.JSONDecodeError as exc:  # orjson's error is a subclass
        if not isinstance(data, str):
            _utf8(data)  # raises if that was the problem, for the same message either way
        raise DecodeError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:
        # NaN/Infinity (refused by _reject_constant) and integers over the str->int digit limit.
        raise DecodeError(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise DecodeError("invalid JSON: nested too deeply") from exc
    # A parsed string can hold a lone surrogate only if the text holds an escaped one, or (str
    # input only: UTF-8 bytes cannot carry one) a raw one. Plain ASCII without "\\u" costs two
    # fast scans; the parsed value is walked only when the text is suspect.
    if isinstance(data, str) and (
        ("\\u" in data and _ESCAPED_SURROGATE.search(data) is not None)
        or (not data.isascii() and _SURROGATE.search(data) is not None)
    ):
        _check_unicode(value)
    return value


def _check_unicode(value: Any) -> None:
    """Raise :exc:`~trionos.DecodeError` for the first string (in document order) that is not Unicode text."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            _require_text(item, f"the string at {path!r}" if path else "the top-level string")
        elif isinstance(item, dict):
            entries = []
            for key, sub in item.items():
                _require_text(key, f"a key of the object at {path!r}" if path else "a top-level key")
                entries.append((sub, f"{path}.{key}" if path else key))
            stack.extend(reversed(entries))
        elif isinstance(item, list):
            stack.extend(reversed([(sub, f"{path}[{i}]") for i, sub in enumerate(item)]))


def _require_text(text: str, where: str) -> None:
    match = None if text.isascii() else _SURROGATE.search(text)
    if match is not None:
        raise DecodeError(
            f"invalid text in JSON: {where} must be Unicode text, "
            f"got the lone surrogate {match.group()!r} at index {match.start()}"
        )


def _utf8(data: bytes | bytearray | memoryview) -> str:
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from exc


# -- libraries ----------------------------------------------------------------------------------------------


def json_library(name: Literal["stdlib", "orjson"]) -> tuple[Encoder, Parser, bool]:
    """Return the raw (encoder, parser, parser_checks_utf8) of a JSON library, under this policy.

    Both encoders refuse NaN and infinities (raising ``ValueError``, which ``unencodable``
    explains); both parsers refuse ``NaN`` and ``Infinity``. Pass the parser to ``parse``.

    Args:
        name: ``"stdlib"`` (Python's ``json``) or ``"orjson"`` (an optional dependency).

    Returns:
        The encoder, the parser, and whether the parser takes UTF-8 bytes itself.

    Raises:
        ImportError: *name* is ``"orjson"`` and orjson is not installed.
        ValueError: *name* is neither.
    """
    if name == "stdlib":
        return _stdlib_encoder, _stdlib_parse, False
    if name == "orjson":
        try:
            import orjson
        except ImportError:
            raise ImportError("Codec(json='orjson') needs orjson: pip install orjson") from None
        orjson_dumps = orjson.dumps

        def orjson_encoder(value: Any) -> str:
            # orjson writes NaN and infinities as null (and refuses lone surrogates itself). A null
            # in the output is rare enough (None fields) that looking for the cause then is cheap.
            text = orjson_dumps(value).decode()
            # (Searching the str: `in` on bytes is several times slower.)
            if "null" in text and _has_non_finite(value):
                raise ValueError("Out of range float values are not JSON compliant")
            return text

        return orjson_encoder, orjson.loads, True
    raise ValueError(f"json must be 'stdlib' or 'orjson', got {name!r}")


def _has_non_finite(value: Any) -> bool:
    """Whether a value orjson could encode holds NaN or an infinity (orjson refuses cycles)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def short_repr(value: object) -> str:
    """*value*'s repr, cut to 60 characters, for an error message.

    Args:
        value: anything.

    Returns:
        ``repr(value)``, or its first 57 characters and ``...``; for a value that cannot be
        printed (nested too deeply, an integer beyond Python's digit limit), its type.
    """
    try:
        text = repr(value)
    except RecursionError:
        return f"a {type(value).__name__} nested too deeply to print"
    except ValueError:
        return f"a {type(value).__name__} too long to print"
    return text if len(text) <= 60 else text[:57] + "..."
