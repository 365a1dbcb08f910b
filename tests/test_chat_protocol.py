"""The chat protocol (trionos.chat): exact wire format, defaults, both directions, fuzzing."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import attrs
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trionos
from trionos import chat
from trionos._codec import Codec
from trionos._errors import DecodeError, EncodeError
from trionos.chat import (
    CLIENT_CODEC,
    SERVER_CODEC,
    Ack,
    Chat,
    Error,
    Join,
    Joined,
    Leave,
    Left,
    Message,
    Welcome,
    normalize_name,
)
from trionos.testing._strategies import malformed_payloads, messages, mutated_payloads

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CODECS: list[Codec[Any]] = [CLIENT_CODEC, SERVER_CODEC]
CODEC_IDS = ["client", "server"]
MESSAGES: dict[Codec[Any], st.SearchStrategy[Any]] = {codec: messages(codec) for codec in CODECS}
MALFORMED = {codec: malformed_payloads(codec) for codec in CODECS}
MUTATED = {codec: mutated_payloads(codec) for codec in CODECS}

WIRE = [
    (CLIENT_CODEC, Join("ann"), '{"type":"join","username":"ann","room":"lobby"}'),
    (CLIENT_CODEC, Join("ann", room="kitchen"), '{"type":"join","username":"ann","room":"kitchen"}'),
    (CLIENT_CODEC, Chat("hi"), '{"type":"chat","text":"hi"}'),
    (CLIENT_CODEC, Leave(), '{"type":"leave"}'),
    (SERVER_CODEC, Welcome(("ann", "bob")), '{"type":"welcome","users":["ann","bob"]}'),
    (SERVER_CODEC, Welcome(()), '{"type":"welcome","users":[]}'),
    (SERVER_CODEC, Joined("bob"), '{"type":"joined","username":"bob"}'),
    (SERVER_CODEC, Message("ann", "hi"), '{"type":"message","from":"ann","text":"hi"}'),
    (SERVER_CODEC, Left("bob"), '{"type":"left","username":"bob"}'),
    (SERVER_CODEC, Error("join a room first"), '{"type":"error","reason":"join a room first"}'),
    # History and recovery: optional fields, absent unless used.
    (
        CLIENT_CODEC,
        Join("ann", since=trionos.Position("9f2c", 41)),
        '{"type":"join","username":"ann","room":"lobby","since":{"epoch":"9f2c","offset":41}}',
    ),
    (
        SERVER_CODEC,
        Welcome(("ann",), "9f2c", 44, True),
        '{"type":"welcome","users":["ann"],"epoch":"9f2c","offset":44,"recovered":true}',
    ),
    (SERVER_CODEC, Welcome(("a",), "9f2c", 0), '{"type":"welcome","users":["a"],"epoch":"9f2c","offset":0}'),
    (SERVER_CODEC, Message("ann", "hi", 45), '{"type":"message","from":"ann","text":"hi","offset":45}'),
    # Acknowledgements and time (contract 6): optional fields, absent unless used.
    (CLIENT_CODEC, Chat("hi", id="m7"), '{"type":"chat","text":"hi","id":"m7"}'),
    (CLIENT_CODEC, Leave(id=3), '{"type":"leave","id":3}'),
    (
        CLIENT_CODEC,
        Join("ann", history=20, id=1),
        '{"type":"join","username":"ann","room":"lobby","history":20,"id":1}',
    ),
    (
        SERVER_CODEC,
        Ack("m7", offset=45, time=1796601600000),
        '{"type":"ack","id":"m7","offset":45,"time":1796601600000}',
    ),
    (SERVER_CODEC, Ack(8, time=5), '{"type":"ack","id":8,"time":5}'),
    (
        SERVER_CODEC,
        Message("a", "hi", 45, 9),
        '{"type":"message","from":"a","text":"hi","offset":45,"time":9}',
    ),
    (SERVER_CODEC, Error("no", id="m7"), '{"type":"error","reason":"no","id":"m7"}'),
    (SERVER_CODEC, Welcome(("a",), id=1), '{"type":"welcome","users":["a"],"id":1}'),
    (SERVER_CODEC, Left("a", id="x"), '{"type":"left","username":"a","id":"x"}'),
]


@pytest.mark.parametrize(("codec", "msg", "wire"), WIRE, ids=[type(m).__name__ for _, m, _ in WIRE])
def test_exact_wire_format(codec: Codec[Any], msg: object, wire: str) -> None:
    """Each chat message encodes to exactly this JSON text and decodes back from it."""
    assert codec.encode(msg) == wire
    assert codec.decode(wire) == msg


def test_tags_of_both_directions() -> None:
    """The client and server codecs know exactly the documented tags."""
    assert dict(CLIENT_CODEC.tags) == {"join": Join, "chat": Chat, "leave": Leave}
    assert dict(SERVER_CODEC.tags) == {
        "welcome": Welcome,
        "joined": Joined,
        "message": Message,
        "ack": Ack,
        "left": Left,
        "error": Error,
    }


def test_join_room_defaults_to_lobby() -> None:
    """A join without a room joins the lobby."""
    assert CLIENT_CODEC.decode('{"type":"join","username":"ann"}') == Join("ann", "lobby")


def test_welcome_users_decode_to_a_tuple() -> None:
    """Welcome.users is a tuple, so a decoded Welcome is hashable and equal to one built in code."""
    welcome = SERVER_CODEC.decode('{"type":"welcome","users":["ann","bob"]}')
    assert isinstance(welcome, Welcome)
    assert welcome.users == ("ann", "bob")
    assert hash(welcome) == hash(Welcome(("ann", "bob")))


def test_message_sender_is_from_on_the_wire() -> None:
    """Message.from_ is "from" on the wire; "from_" is not accepted in its place."""
    assert SERVER_CODEC.unstructure(Message("ann", "hi")) == {"type": "message", "from": "ann", "text": "hi"}
    with pytest.raises(DecodeError, match="'message' is missing field 'from'"):
        SERVER_CODEC.decode('{"type":"message","from_":"ann","text":"hi"}')


def test_extra_fields_are_ignored() -> None:
    """Either side may add fields; the other ignores them."""
    assert CLIENT_CODEC.decode('{"type":"chat","text":"hi","sent_at":1700000000}') == Chat("hi")


def test_each_codec_only_speaks_its_direction() -> None:
    """The client codec refuses server messages and the server codec refuses client messages."""
    with pytest.raises(EncodeError, match="accepts Join, Chat, Leave"):
        CLIENT_CODEC.encode(Message("ann", "hi"))  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(EncodeError, match="accepts Welcome, Joined, Message, Ack, Left, Error"):
        SERVER_CODEC.encode(Chat("hi"))  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(DecodeError, match=r"unknown type 'chat' \(expected one of: ack, error, joined, left"):
        SERVER_CODEC.decode('{"type":"chat","text":"hi"}')


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"type":"join","username":5}', "'join' field 'username' must be a string, got int 5"),
        ('{"type":"join"}', "'join' is missing field 'username'"),
        ('{"type":"dance"}', "unknown type 'dance' (expected one of: chat, join, leave)"),
        ('{"username":"ann"}', 'missing "type" (expected one of: chat, join, leave)'),
        ('["join","ann"]', "expected a JSON object, got list"),
        ('{"type":"join","username":"ann"', "invalid JSON at line 1 column 32"),
        ('{"type":"chat","text":null}', "'chat' field 'text' must be a string, got null"),
    ],
)
def test_client_decode_errors(payload: str, expected: str) -> None:
    """Bad client payloads raise DecodeError with a message a server can send back as Error.reason."""
    with pytest.raises(DecodeError) as info:
        CLIENT_CODEC.decode(payload)
    assert expected in str(info.value)


def test_welcome_with_a_non_string_user_names_the_index() -> None:
    """An ill-typed list item is reported with its index."""
    with pytest.raises(DecodeError, match=r"'welcome' field 'users\[2\]' must be a string, got int 3"):
        SERVER_CODEC.decode('{"type":"welcome","users":["ann","bob",3]}')


def test_messages_are_frozen() -> None:
    """Every chat message is an immutable attrs value."""
    assert {type(msg) for _, msg, _ in WIRE} == {*CLIENT_CODEC.tags.values(), *SERVER_CODEC.tags.values()}
    for _, msg, _ in WIRE:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            msg.text = "changed"  # type: ignore[attr-defined]  # every message class is frozen


def test_public_names_are_sorted_and_complete() -> None:
    """chat.__all__ is sorted and complete: message classes, unions, id type, codecs, name rules."""
    assert chat.__all__ == sorted(chat.__all__)
    classes = {
        name
        for name, value in vars(chat).items()
        if isinstance(value, type) and attrs.has(value) and not name.startswith("_")
    }
    names = {"ClientMessage", "ServerMessage", "MessageId", "CLIENT_CODEC", "SERVER_CODEC"}
    names |= {"InvalidName", "MAX_ROOM_BYTES", "MAX_USERNAME_BYTES", "normalize_name"}
    assert classes | names == set(chat.__all__)


def test_json_schema_describes_the_wire_format() -> None:
    """The client schema accepts the documented payloads and rejects a join without a username."""
    validator = jsonschema.Draft202012Validator(CLIENT_CODEC.json_schema())
    for codec, _, wire in WIRE:
        if codec is CLIENT_CODEC:
            validator.validate(json.loads(wire))
    assert not validator.is_valid({"type": "join"})
    assert not validator.is_valid({"type": "join", "username": 5})
    server = jsonschema.Draft202012Validator(SERVER_CODEC.json_schema())
    assert server.is_valid({"type": "message", "from": "ann", "text": "hi"})
    assert not server.is_valid({"type": "message", "from_": "ann", "text": "hi"})


def is_json_integer(_: object, value: object) -> bool:
    """JSON Schema's integer accepts 1.0; the codec, like JSON's own types, does not."""
    return type(value) is int


def is_json_number(_: object, value: object) -> bool:
    """A number is finite and fits a float (Python's json reads 1e400 as inf)."""
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        try:
            float(value)
        except OverflowError:
            return False
        return True
    return False


STRICT_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"integer": is_json_integer, "number": is_json_number}
)
StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=STRICT_TYPES)
VALIDATORS: dict[Codec[Any], Any] = {codec: StrictValidator(codec.json_schema()) for codec in CODECS}


def parse_strictly(payload: str | bytes) -> tuple[bool, Any]:
    """(True, value) when the payload is UTF-8 RFC 8259 JSON whose strings are all Unicode text."""
    try:
        text = payload if isinstance(payload, str) else payload.decode("utf-8")
        value = json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        return False, None
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return False, None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True, value


def reject_constant(name: str) -> None:
    raise ValueError(name)


def assert_decodes_as_the_schema_says(codec: Codec[Any], payload: str | bytes) -> None:
    """decode(payload) succeeds exactly when the payload is JSON the codec's schema accepts.

    On success the message is an instance of the class its tag names and survives a round trip;
    on failure the DecodeError names the problem: the message tag when the payload is an object
    with a known tag, or else what is wrong with the JSON or its shape.
    """
    is_json, value = parse_strictly(payload)
    valid = is_json and VALIDATORS[codec].is_valid(value)
    try:
        message = codec.decode(payload)
    except DecodeError as exc:
        assert not valid, f"a valid payload was refused: {exc}"
        reason = str(exc)
        tag = value.get(codec.tag_field) if isinstance(value, dict) else None
        if not is_json:
            assert reason.startswith(("invalid JSON", "invalid UTF-8", "invalid text in JSON")), reason
        elif not isinstance(value, dict):
            assert reason.startswith("expected a JSON object, got "), reason
        elif isinstance(tag, str) and tag in codec.tags:
            assert reason.startswith(repr(tag)), reason
        else:
            assert reason.startswith((f'missing "{codec.tag_field}"', f"unknown {codec.tag_field} ")), reason
        return
    assert valid, f"an invalid payload was accepted as {message!r}"
    assert type(message) is codec.tags[value[codec.tag_field]]
    assert codec.decode(codec.encode(message)) == message


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_every_chat_message_round_trips(codec: Codec[Any], data: st.DataObject) -> None:
    """decode(encode(m)) == m for generated chat messages, non-ASCII text included."""
    msg = data.draw(MESSAGES[codec])
    assert codec.decode(codec.encode(msg)) == msg


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_malformed_chat_payloads_are_rejected(codec: Codec[Any], data: st.DataObject) -> None:
    """Every malformed payload raises DecodeError."""
    with pytest.raises(DecodeError):
        codec.decode(data.draw(MALFORMED[codec]))


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_mutated_chat_payloads_decode_exactly_when_the_schema_accepts_them(
    codec: Codec[Any], data: st.DataObject
) -> None:
    """A valid message with one random edit decodes, to a message that round-trips, exactly when
    it is JSON that the protocol's schema accepts; otherwise it raises DecodeError (nothing else)
    that says what is wrong."""
    assert_decodes_as_the_schema_says(codec, data.draw(MUTATED[codec]))


@FUZZ
@given(payload=st.text() | st.binary())
def test_arbitrary_input_decodes_exactly_when_the_schema_accepts_it(payload: str | bytes) -> None:
    """Any text or bytes sent to a chat server decodes exactly when it is (UTF-8) JSON that the
    protocol's schema accepts; anything else raises DecodeError, nothing else, saying why."""
    assert_decodes_as_the_schema_says(CLIENT_CODEC, payload)


def test_welcome_accepts_any_iterable_of_names() -> None:
    """Welcome(list) keeps a tuple, so it equals the decoded message."""
    built = Welcome(["ann", "bob"])
    assert built == SERVER_CODEC.decode(SERVER_CODEC.encode(built))
    assert built.users == ("ann", "bob")


def names(users: Iterable[str]) -> tuple[str, ...]:
    """A typed converter (``converter=tuple`` types as an unsolved generic)."""
    return tuple(users)


@attrs.frozen
class OldMessage:
    """The message class as version 0.1 defined it (no offset)."""

    from_: str
    text: str


@attrs.frozen
class OldWelcome:
    users: tuple[str, ...] = attrs.field(converter=names)


def test_an_old_client_reads_history_messages_by_ignoring_the_new_fields() -> None:
    """A 0.1 client (default, lenient codec) decodes messages and welcomes that carry positions."""
    old: Codec[OldMessage | OldWelcome] = Codec(
        OldMessage | OldWelcome, tags={OldMessage: "message", OldWelcome: "welcome"}
    )
    assert old.decode('{"type":"message","from":"a","text":"hi","offset":3}') == OldMessage("a", "hi")
    assert old.decode('{"type":"welcome","users":["a"],"epoch":"e","offset":3,"recovered":true}') == (
        OldWelcome(("a",))
    )


def test_a_strict_codec_still_accepts_the_messages_without_history() -> None:
    """The new fields are optional: a strict codec of today's protocol accepts every 0.1 message."""
    strict_server: Codec[chat.ServerMessage] = Codec(chat.ServerMessage, strict=True)
    strict_client: Codec[chat.ClientMessage] = Codec(chat.ClientMessage, strict=True)
    assert strict_server.decode('{"type":"message","from":"a","text":"hi"}') == Message("a", "hi")
    assert strict_server.decode('{"type":"welcome","users":[]}') == Welcome(())
    assert strict_client.decode('{"type":"join","username":"a","room":"r"}') == Join("a", "r")
    assert strict_server.decode('{"type":"message","from":"a","text":"hi","offset":3}') == Message(
        "a", "hi", 3
    )


def test_the_json_schema_documents_the_history_fields() -> None:
    """The schema lists offset, epoch, recovered and since as optional fields and accepts both forms."""
    server, client = SERVER_CODEC.json_schema(), CLIENT_CODEC.json_schema()
    variants = {v["title"]: v for v in server["oneOf"]}
    assert variants["Message"]["required"] == ["type", "from", "text"]
    assert set(variants["Welcome"]["properties"]) >= {"epoch", "offset", "recovered"}
    assert client["$defs"]["Position"]["required"] == ["epoch", "offset"]
    for payload in (
        {"type": "message", "from": "a", "text": "hi"},
        {"type": "message", "from": "a", "text": "hi", "offset": 7},
        {"type": "welcome", "users": ["a"], "epoch": "e", "offset": 7, "recovered": False},
    ):
        jsonschema.validate(payload, server)
    jsonschema.validate({"type": "join", "username": "a", "since": {"epoch": "e", "offset": 1}}, client)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "join", "username": "a", "since": {"epoch": "e"}}, client)


def test_an_id_is_a_string_or_an_integer_and_nothing_else() -> None:
    """``id`` keeps its JSON type (no coercion either way); a boolean, float or object is refused."""
    assert CLIENT_CODEC.decode('{"type":"chat","text":"x","id":"5"}') == Chat("x", id="5")
    assert CLIENT_CODEC.decode('{"type":"chat","text":"x","id":5}') == Chat("x", id=5)
    for bad in ("true", "1.5", "{}", "[1]"):
        with pytest.raises(DecodeError, match="'chat' field 'id' must be a string or an integer or null"):
            CLIENT_CODEC.decode(f'{{"type":"chat","text":"x","id":{bad}}}')
    schema = CLIENT_CODEC.json_schema()
    jsonschema.validate({"type": "chat", "text": "x", "id": 5}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "chat", "text": "x", "id": True}, schema)


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("alice", "alice"),
        ("  alice ", "alice"),
        ("\uff41lice", "alice"),
        ("ann  lee", "ann lee"),
        ("Зоя", "Зоя"),
    ],
)
def test_names_are_compared_after_nfkc_and_trimming(name: str, normalized: str) -> None:
    """normalize_name folds width and spacing, and keeps a name written in one script."""
    assert normalize_name(name) == normalized


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "username must not be empty"),
        ("\u200b", "username must not contain U+200B (a Cf character)"),
        ("a\ue000b", "username must not contain U+E000 (a Co character)"),
        ("\ud800", "username must not contain U+D800 (a Cs character)"),
        ("\u03b1lice", "username must not mix Greek and Latin letters"),
        ("é" * 33, "username is 66 bytes long; the limit is 64"),
    ],
)
def test_names_that_break_a_rule_are_refused_saying_which(name: str, reason: str) -> None:
    """Each refusal names the rule and the character."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        normalize_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "invalid"),
        ("alice\u200b", "invalid"),
        ("a\x00b", "invalid"),
        ("\u0430lice", "look_alike"),
        ("x" * 65, "too_long"),
        ("x" * 1_000_000, "too_long"),
    ],
)
def test_refused_names_are_counted_by_reason_never_by_name(name: str, reason: str) -> None:
    """normalize_name(metrics=...) counts each refusal under its reason bucket, not the name."""
    metrics = trionos.Metrics()
    with pytest.raises(chat.InvalidName) as refused:
        normalize_name(name, metrics=metrics)
    assert refused.value.reason == reason
    assert metrics.names_refused == {reason: 1}
    normalize_name("alice", metrics=metrics)
    assert metrics.names_refused == {reason: 1}
