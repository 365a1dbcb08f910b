"""The package's one JSON policy: RFC 8259 out (NaN and Infinity refused), RFC 8259 in, everywhere."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import attrs
import orjson
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trionos
from trionos._broker import decode_member, encode_member
from trionos._errors import BrokerError, DecodeError, EncodeError
from trionos._json import dumps, loads
from trionos.testing import open_memory_server

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NON_FINITE = [math.nan, math.inf, -math.inf]


@attrs.frozen
class Reading:
    value: float


STDLIB_CODEC: trionos.Codec[Reading] = trionos.Codec(Reading)
ORJSON_CODEC: trionos.Codec[Reading] = trionos.Codec(Reading, json="orjson")


# -- dumps ------------------------------------------------------------------------------------------------


def test_dumps_is_compact_and_keeps_non_ascii() -> None:
    """Output has no spaces between tokens and keeps non-ASCII text as is."""
    assert dumps({"a": [1, 2.5, "é", None, True], "b": {}}) == '{"a":[1,2.5,"é",null,true],"b":{}}'


@pytest.mark.parametrize("number", NON_FINITE)
def test_dumps_refuses_nan_and_infinities_naming_the_path(number: float) -> None:
    """NaN, Infinity and -Infinity are not JSON: EncodeError says which value and where it is."""
    with pytest.raises(EncodeError) as info:
        dumps({"readings": [1.0, {"x": number}]})
    assert str(info.value) == (
        f"cannot encode {{'readings': [1.0, {{'x': {number!r}}}]}} as JSON: the number at "
        f"'readings[1].x' is {number!r} (JSON has no NaN or Infinity)"
    )
    assert isinstance(info.value, TypeError)  # EncodeError is a local fault, also a TypeError


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (math.nan, "the number at the top level is nan"),
        ({"s": {1, 2}}, "the value at 's' is a set {1, 2}, not a JSON value"),
        (["ok", "\udfff"], "the string at '[1]' holds the lone surrogate '\\udfff' at index 0"),
        ({(1, 2): 3}, "a key of the top-level object is a tuple (1, 2); JSON keys are strings"),
        ({"k": {math.inf: 1}}, "a key of the object at 'k' is inf (JSON has no NaN or Infinity)"),
        ({"k": {"\ud800": 1}}, "a key of the object at 'k' holds a lone surrogate"),
        ({10**5000: 1}, "a key of the top-level object is an integer with more digits than Python prints"),
    ],
)
def test_dumps_names_what_it_refuses(value: Any, problem: str) -> None:
    """Each kind of value JSON cannot hold is reported with its path."""
    with pytest.raises(EncodeError, match=r"cannot encode .* as JSON: ") as info:
        dumps(value)
    assert problem in str(info.value)


def test_dumps_tells_a_cycle_from_a_shared_container() -> None:
    """A list that appears twice is fine; a list that contains itself is refused."""
    shared = [1]
    assert dumps({"a": shared, "b": shared}) == '{"a":[1],"b":[1]}'
    loop: list[Any] = [1]
    loop.append({"again": loop})
    with pytest.raises(EncodeError, match=r"the list at '\[1\].again' contains itself"):
        dumps(loop)


def test_dumps_of_deep_nesting_is_an_encode_error() -> None:
    """Nesting beyond the recursion limit is an EncodeError, not a RecursionError."""
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(EncodeError, match="nested too deeply"):
        dumps(deep)


def test_dumps_names_an_integer_beyond_the_digit_limit() -> None:
    """An integer too long for Python to print is refused with its path, not a bare ValueError."""
    with pytest.raises(EncodeError, match="as JSON: the integer at 'n' has more digits than Python prints"):
        dumps({"n": 10**5000})
    assert dumps({"n": 10**4000}) == '{"n":1' + "0" * 4000 + "}"


def test_an_orjson_codec_without_orjson_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codec(json="orjson") without orjson installed raises ImportError naming the package."""
    monkeypatch.setitem(sys.modules, "orjson", None)  # makes `import orjson` raise ImportError
    with pytest.raises(ImportError, match="pip install orjson"):
        trionos.Codec(Reading, json="orjson")


# -- loads ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("wrap", ["{}", '{{"x":{}}}', "[1,{}]"])
def test_loads_refuses_nan_and_infinity(constant: str, wrap: str) -> None:
    """Python's json reads NaN/Infinity/-Infinity by default; the policy refuses them, str or bytes."""
    text = wrap.format(constant)
    for data in (text, text.encode()):
        with pytest.raises(DecodeError, match=f"invalid JSON: {constant} is not a JSON value"):
            loads(data)


def test_loads_reads_json() -> None:
    """Plain JSON, str or UTF-8 bytes, parses as the stdlib parses it."""
    text = '{"a": [1, 2.5e3, "é", null, true, -0.0], "b": {"c": "\\ud83d\\ude00"}}'
    assert loads(text) == loads(text.encode()) == json.loads(text)


# -- one policy, whichever way JSON is written --------------------------------------------------------------

#: JSON-like values, with everything the policy refuses mixed in: NaN and infinities, lone
#: surrogates, tuples (written as arrays) and non-string keys (written as strings).
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=6)
)
KEYS = st.text(max_size=4) | st.integers(-5, 5) | st.booleans() | st.none()
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
)


def refused(value: Any) -> bool:
    """Whether *value* holds something the policy refuses (a non-finite float or a lone surrogate)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(refused(k) or refused(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(refused(item) for item in value)
    return False


@FUZZ
@given(value=VALUES)
def test_every_dumps_output_is_rfc_8259_json(value: Any) -> None:
    """dumps either refuses the value with EncodeError, exactly when it holds NaN, an infinity or a
    lone surrogate, or returns compact text that a strict RFC 8259 parser (orjson) reads back as
    loads does."""
    try:
        text = dumps(value)
    except EncodeError:
        assert refused(value)
        return
    assert not refused(value)
    strict = orjson.loads(text.encode("utf-8"))
    assert strict == loads(text) == json.loads(text)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@FUZZ
@given(value=VALUES)
def test_orjson_codec_and_stdlib_refuse_the_same_floats(value: Any) -> None:
    """Codec(json="orjson") refuses NaN and infinities as dumps does (orjson alone writes null)."""
    floats = [v for v in _leaves(value) if isinstance(v, float)] or [0.0]
    for number in floats:
        for codec in (STDLIB_CODEC, ORJSON_CODEC):
            if math.isfinite(number):
                assert codec.decode(codec.encode(Reading(number))) == Reading(number)
            else:
                with pytest.raises(EncodeError, match="the number at 'value' is"):
                    codec.encode(Reading(number))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for sub in value.values() for leaf in _leaves(sub)]
    if isinstance(value, list | tuple):
        return [leaf for sub in value for leaf in _leaves(sub)]
    return [value]


@pytest.mark.parametrize("codec", [STDLIB_CODEC, ORJSON_CODEC], ids=["stdlib", "orjson"])
@pytest.mark.parametrize("number", NON_FINITE)
def test_codecs_refuse_nan_both_ways(codec: trionos.Codec[Reading], number: float) -> None:
    """Both JSON libraries of Codec refuse NaN and infinities when encoding and when decoding."""
    with pytest.raises(EncodeError, match=f"cannot encode Reading\\(value={number!r}\\) as JSON"):
        codec.encode(Reading(number))
    constant = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(number)]
    with pytest.raises(DecodeError, match="invalid JSON"):
        codec.decode(f'{{"type":"reading","value":{constant}}}')


def test_orjson_codec_still_writes_null_for_none() -> None:
    """The orjson NaN check looks for the cause of a null and does not refuse a real one."""

    @attrs.frozen
    class Maybe:
        value: float | None = None

    codec: trionos.Codec[Maybe] = trionos.Codec(Maybe, json="orjson")
    assert codec.encode(Maybe()) == '{"type":"maybe","value":null}'
    with pytest.raises(EncodeError, match="the number at 'value' is nan"):
        codec.encode(Maybe(math.nan))


# -- send_json and recv_json ---------------------------------------------------------------------------------


async def echo_text(req: trionos.Request) -> None:
    """Send every text message back exactly as it came."""
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


async def test_send_json_refuses_nan_and_sends_nothing() -> None:
    """send_json({"x": nan}) raises EncodeError before anything is sent; the connection goes on."""
    async with open_memory_server(echo_text, heartbeat=None) as server, server.connect("/") as ws:
        for number in NON_FINITE:
            with pytest.raises(EncodeError, match="the number at 'x' is"):
                await ws.send_json({"x": number})
        await ws.send_json({"x": 1.5})
        # The first message the echo sends back is the valid one: nothing went out before it.
        assert await ws.recv() == '{"x":1.5}'


async def test_recv_json_refuses_nan_from_the_peer_and_stays_usable() -> None:
    """A peer's {"x":NaN} is a DecodeError from recv_json, like any bad JSON, and the connection
    keeps working."""
    async with open_memory_server(echo_text, heartbeat=None) as server, server.connect("/") as ws:
        for constant in ["NaN", "Infinity", "-Infinity"]:
            await ws.send(f'{{"x":{constant}}}')
            with pytest.raises(DecodeError, match=f"{constant} is not a JSON value"):
                await ws.recv_json()
        await ws.send('{"x":2}')
        with trio.fail_after(5):
            assert await ws.recv_json() == {"x": 2}


# -- the broker's presence records ---------------------------------------------------------------------------


def test_presence_records_are_written_by_the_policy() -> None:
    """A presence record is compact JSON; a name that is not Unicode text is refused when written."""
    assert encode_member("n1", "c1", "é") == '["n1","c1","é"]'.encode()
    with pytest.raises(EncodeError, match="the string at '\\[2\\]' holds the lone surrogate"):
        encode_member("n1", "c1", "\udfff")


@pytest.mark.parametrize(
    "data", [b'["n1","c1",NaN]', b'["n1","c1",Infinity]', b'["n1","c1","\\udfff"]', b'["n1",NaN,"a"]']
)
def test_presence_records_are_read_by_the_policy(data: bytes) -> None:
    """A record holding NaN, Infinity or an escaped lone surrogate is a BrokerError caused by the
    JSON policy's DecodeError."""
    with pytest.raises(BrokerError, match="malformed presence record in room 'r'") as info:
        decode_member("r", data, 0)
    assert isinstance(info.value.__cause__, DecodeError)
