"""The typed message codec: tags, renames, strictness, error messages, JSON Schema, fuzzing."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import attrs
import cattrs
import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import imports_loaded
from trionos._codec import Codec
from trionos._errors import DecodeError, EncodeError, TrionosError
from trionos.testing._strategies import json_values, malformed_payloads, messages, mutated_payloads

# Fixed examples, no example database: every run tests the same inputs.
FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- a protocol that uses every supported field type ---------------------------------------------------


@attrs.frozen
class Author:
    """A nested class with a default."""

    name: str
    karma: int = 0


@attrs.frozen
class Comment:
    author: Author
    text: str


@attrs.frozen
class Post:
    """A message with one field of every kind."""

    title: str
    author: Author
    tags: list[str] = attrs.field(factory=list)
    score: float = 0.0
    draft: bool = False
    parent: int | None = None
    mood: Literal["happy", "sad"] = "happy"
    comments: tuple[Comment, ...] = ()


@attrs.frozen
class UserJoined:
    username: str
    class_: str = "member"


@attrs.frozen
class HTTPPing:
    pass


@attrs.frozen
class Tree:
    """A recursive class."""

    label: str
    children: list[Tree] = attrs.field(factory=list)


Everything = Post | UserJoined | HTTPPing
CODEC: Codec[Everything] = Codec(Everything)
STRICT: Codec[Everything] = Codec(Everything, strict=True, tag_field="kind", tags={UserJoined: "joined"})
TREE: Codec[Tree] = Codec(Tree)
CODECS: list[Codec[Any]] = [CODEC, STRICT, TREE]
CODEC_IDS = ["lenient", "strict", "recursive"]

try:
    import orjson  # noqa: F401
except ImportError:
    ORJSON: Codec[Everything] | None = None
else:
    ORJSON = Codec(Everything, json="orjson")
needs_orjson = pytest.mark.skipif(ORJSON is None, reason="orjson is not installed")

# Built once per codec: building a strategy per example would dominate the run time.
MESSAGES = {codec: messages(codec) for codec in CODECS}
MALFORMED = {codec: malformed_payloads(codec) for codec in CODECS}
MUTATED = {codec: mutated_payloads(codec) for codec in CODECS}
JSON_VALUES = {
    codec: json_values()
    | st.builds(
        lambda obj, tag, field=codec.tag_field: {**obj, field: tag},
        st.dictionaries(st.text(max_size=8), json_values(), max_size=6),
        st.sampled_from(list(codec.tags)),
    )
    for codec in CODECS
}
VALIDATORS = {codec: jsonschema.Draft202012Validator(codec.json_schema()) for codec in CODECS}

POST = Post(
    title="hi",
    author=Author("ann", karma=3),
    tags=["a", "b"],
    score=1.5,
    draft=True,
    parent=7,
    mood="sad",
    comments=(Comment(Author("bob"), "nice"),),
)


def decode_error(codec: Codec[Any], payload: str | bytes) -> str:
    """Decode a payload that must fail; return the DecodeError's message."""
    with pytest.raises(DecodeError) as info:
        codec.decode(payload)
    return str(info.value)


def decodes_or_raises_decode_error(codec: Codec[Any], payload: str | bytes) -> None:
    """Decode a payload that may or may not be valid; anything but a DecodeError propagates."""
    try:
        msg = codec.decode(payload)
    except DecodeError:
        return
    assert type(msg) in codec.tags.values()


# -- tags and names on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tag"),
    [("Chat", "chat"), ("UserJoined", "user_joined"), ("HTTPPing", "http_ping"), ("Utf8Text", "utf8_text")],
)
def test_default_tag_is_snake_case_of_class_name(name: str, tag: str) -> None:
    """A class without an explicit tag is tagged with its name in snake_case."""
    cls = attrs.frozen(type(name, (), {}))
    assert list(Codec(cls).tags) == [tag]


def test_tags_maps_tag_to_class_in_union_order() -> None:
    """codec.tags lists every tag and its class, in the order of the union."""
    assert dict(CODEC.tags) == {"post": Post, "user_joined": UserJoined, "http_ping": HTTPPing}
    assert dict(STRICT.tags) == {"post": Post, "joined": UserJoined, "http_ping": HTTPPing}


def test_explicit_tag_is_used_on_the_wire() -> None:
    """tags= overrides the default tag, both when encoding and when decoding."""
    assert STRICT.encode(UserJoined("ann")) == '{"kind":"joined","username":"ann","class":"member"}'
    assert STRICT.decode('{"kind":"joined","username":"ann"}') == UserJoined("ann")
    assert "unknown kind 'user_joined'" in decode_error(STRICT, '{"kind":"user_joined","username":"a"}')


def test_tag_field_is_configurable() -> None:
    """tag_field= names the key that carries the tag, first in the object."""
    assert STRICT.tag_field == "kind"
    assert STRICT.encode(HTTPPing()) == '{"kind":"http_ping"}'
    assert 'missing "kind"' in decode_error(STRICT, '{"type":"http_ping"}')


def test_trailing_underscore_is_stripped_on_the_wire() -> None:
    """A field named like a keyword (class_) is "class" on the wire, in both directions."""
    assert CODEC.encode(UserJoined("ann", class_="admin")) == (
        '{"type":"user_joined","username":"ann","class":"admin"}'
    )
    assert CODEC.decode('{"type":"user_joined","username":"ann","class":"admin"}') == UserJoined(
        "ann", "admin"
    )


def test_explicit_renames_apply_to_members_and_nested_classes() -> None:
    """renames= sets the wire name of any field, nested classes included."""
    codec: Codec[Post | UserJoined] = Codec(
        Post | UserJoined, renames={UserJoined: {"username": "user"}, Author: {"name": "login"}}
    )
    wire = {"type": "post", "title": "t", "author": {"login": "ann", "karma": 0}}
    msg = Post("t", Author("ann"))
    assert codec.unstructure(msg)["author"] == wire["author"]
    assert codec.decode(json.dumps(wire)) == msg
    assert codec.decode('{"type":"user_joined","user":"bob"}') == UserJoined("bob")
    assert "'post' is missing field 'author.login'" in decode_error(
        codec, '{"type":"post","title":"t","author":{}}'
    )


def test_codecs_do_not_share_converters() -> None:
    """Each codec has its own converter: nothing leaks into another codec or into cattrs' global one."""
    renamed: Codec[UserJoined] = Codec(UserJoined, renames={UserJoined: {"username": "user"}})
    plain: Codec[UserJoined] = Codec(UserJoined)
    assert renamed.unstructure(UserJoined("a"))["user"] == "a"
    assert plain.unstructure(UserJoined("a"))["username"] == "a"
    # The global converter still coerces, as cattrs does by default: our strict hooks are private.
    assert cattrs.structure(5, str) == "5"


def test_single_class_codec_still_tags_its_messages() -> None:
    """A codec over one class (not a union) tags messages and checks the tag."""
    codec: Codec[UserJoined] = Codec(UserJoined)
    assert codec.encode(UserJoined("ann")) == '{"type":"user_joined","username":"ann","class":"member"}'
    assert codec.decode('{"type":"user_joined","username":"ann"}') == UserJoined("ann")
    assert "unknown type 'post'" in decode_error(codec, '{"type":"post","username":"ann"}')
    strict: Codec[UserJoined] = Codec(UserJoined, strict=True)
    assert strict.decode('{"type":"user_joined","username":"ann"}') == UserJoined("ann")
    assert "unexpected field 'x'" in decode_error(strict, '{"type":"user_joined","username":"a","x":1}')


def test_recursive_classes_round_trip() -> None:
    """A class that contains itself encodes and decodes, with paths through the nesting in errors."""
    tree = Tree("a", [Tree("b", [Tree("c")]), Tree("d")])
    assert TREE.decode(TREE.encode(tree)) == tree
    bad = '{"type":"tree","label":"a","children":[{"label":"b","children":[{"label":1}]}]}'
    assert "'tree' field 'children[0].children[0].label' must be a string, got int" in decode_error(TREE, bad)


def test_too_deep_recursive_payload_is_a_decode_error() -> None:
    """Nesting deeper than the stack allows is a short DecodeError, not a RecursionError."""
    obj: dict[str, Any] = {"label": "x"}
    for _ in range(400):
        obj = {"label": "x", "children": [obj]}
    obj["type"] = "tree"
    assert decode_error(TREE, json.dumps(obj)) == "'tree' is nested too deeply"


# -- encoding ------------------------------------------------------------------------------------------


def test_encode_is_compact_tag_first_and_keeps_non_ascii() -> None:
    """encode() writes compact JSON, the tag first, non-ASCII characters as they are."""
    assert CODEC.encode(UserJoined("zoë ☃")) == '{"type":"user_joined","username":"zoë ☃","class":"member"}'


def test_unstructure_and_structure_handle_embedded_messages() -> None:
    """unstructure() gives a JSON-ready dict with the tag; structure() takes one back."""
    obj = CODEC.unstructure(POST)
    assert next(iter(obj)) == "type"
    assert obj["comments"] == [{"author": {"name": "bob", "karma": 0}, "text": "nice"}]
    envelope = json.loads(json.dumps({"id": 1, "payload": obj}))
    assert CODEC.structure(envelope["payload"]) == POST
    with pytest.raises(DecodeError, match="expected a JSON object, got list"):
        CODEC.structure([obj])


def test_encoding_a_class_outside_the_union_is_an_encode_error() -> None:
    """encode() of a foreign class raises EncodeError naming the classes it accepts."""
    with pytest.raises(EncodeError, match=r"cannot encode Tree .*accepts Post, UserJoined, HTTPPing"):
        CODEC.encode(Tree("x"))  # type: ignore[arg-type]  # the mistake under test, made untyped
    with pytest.raises(EncodeError):
        CODEC.unstructure({"type": "post"})  # type: ignore[arg-type]  # the same
    assert issubclass(EncodeError, TrionosError)
    assert issubclass(EncodeError, TypeError)


def test_encoding_a_subclass_is_an_encode_error() -> None:
    """The tag belongs to the exact class: a subclass of a member is not encoded as its parent."""

    @attrs.frozen
    class LoudPing(HTTPPing):
        pass

    with pytest.raises(EncodeError):
        CODEC.encode(LoudPing())


def test_encoding_values_json_cannot_represent_is_an_encode_error() -> None:
    """NaN, infinity and non-JSON values in a field raise EncodeError, not ValueError or TypeError."""
    with pytest.raises(EncodeError, match="cannot encode"):
        CODEC.encode(Post("t", Author("a"), score=float("nan")))
    with pytest.raises(EncodeError, match="cannot encode"):
        CODEC.encode(Post("t", Author(object())))  # type: ignore[arg-type]


# -- decoding: types -----------------------------------------------------------------------------------


def test_defaults_fill_absent_fields() -> None:
    """Fields with defaults may be absent from the payload."""
    assert CODEC.decode('{"type":"post","title":"t","author":{"name":"a"}}') == Post("t", Author("a"))


def test_float_fields_accept_json_integers() -> None:
    """JSON has one number type: an integer is a valid value for a float field, and becomes a float."""
    msg = CODEC.decode('{"type":"post","title":"t","author":{"name":"a"},"score":3}')
    assert isinstance(msg, Post)
    assert msg.score == 3.0
    assert type(msg.score) is float


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("karma", "true", "'author.karma' must be an integer, got bool True"),
        ("karma", "1.0", "'author.karma' must be an integer, got float 1.0"),
        ("karma", '"1"', "'author.karma' must be an integer, got str '1'"),
        ("name", "5", "'author.name' must be a string, got int 5"),
        ("name", "null", "'author.name' must be a string, got null"),
    ],
)
def test_no_coercion_between_json_types(field: str, value: str, expected: str) -> None:
    """Booleans are not integers, numbers are not strings, null is not a string: no silent coercion."""
    author = {"name": '"a"', "karma": "0", field: value}
    fields = ",".join(f'"{k}":{v}' for k, v in author.items())
    payload = '{"type":"post","title":"t","author":{' + fields + "}}"
    assert expected in decode_error(CODEC, payload)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('"draft":1', "'post' field 'draft' must be a boolean, got int 1"),
        ('"score":"1"', "'post' field 'score' must be a number, got str"),
        ('"score":true', "'post' field 'score' must be a number, got bool"),
        ('"score":1e400', "'post' field 'score' must be a finite number, got float inf"),
        ('"score":1' + "0" * 400, "'post' field 'score' must be a number within float range, got int"),
        ('"parent":"x"', "'post' field 'parent' must be an integer or null, got str 'x'"),
        ('"mood":"angry"', "'post' field 'mood' must be one of 'happy', 'sad', got str 'angry'"),
        ('"tags":"abc"', "'post' field 'tags' must be an array, got str 'abc'"),
        ('"tags":{"a":1}', "'post' field 'tags' must be an array, got object"),
        ('"tags":["a","b",3]', "'post' field 'tags[2]' must be a string, got int 3"),
        ('"comments":[{"author":{"name":"b"},"text":1}]', "'post' field 'comments[0].text' must be a string"),
        ('"comments":[{"text":"x"}]', "'post' is missing field 'comments[0].author'"),
        ('"comments":["x"]', "'post' field 'comments[0]' must be an object, got str 'x'"),
    ],
)
def test_ill_typed_fields_name_their_path(extra: str, expected: str) -> None:
    """Each ill-typed field is reported with its path (dots and indexes), what was expected and what came."""
    payload = '{"type":"post","title":"t","author":{"name":"a"},' + extra + "}"
    assert expected in decode_error(CODEC, payload)


# -- decoding: structure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"type":"post",', "invalid JSON at line 1 column 16"),
        ("", "invalid JSON at line 1 column 1"),
        ('{"type":"post","score":NaN}', "invalid JSON: NaN is not a JSON value"),
        ("[1, 2]", "expected a JSON object, got list [1, 2]"),
        ('"post"', "expected a JSON object, got str 'post'"),
        ("null", "expected a JSON object, got null"),
        ("{}", 'missing "type" (expected one of: http_ping, post, user_joined)'),
        ('{"type":"dance"}', "unknown type 'dance' (expected one of: http_ping, post, user_joined)"),
        ('{"type":1}', "unknown type 1 (expected one of"),
        ('{"type":["post"]}', "unknown type ['post'] (expected one of"),
        ('{"type":null}', "unknown type null (expected one of"),
        ('{"type":"user_joined"}', "'user_joined' is missing field 'username'"),
        ('{"type":"user_joined","username":5}', "'user_joined' field 'username' must be a string, got int 5"),
        ('{"type":"user_joined","username":"a","class":3}', "'user_joined' field 'class' must be a string"),
        (
            '{"type":"post","title":"t","author":"ann"}',
            "'post' field 'author' must be an object, got str 'ann'",
        ),
        ('{"type":"post","title":"t","author":{}}', "'post' is missing field 'author.name'"),
    ],
)
def test_decode_error_messages_say_what_was_expected_and_what_came(payload: str, expected: str) -> None:
    """Every kind of bad payload gets a DecodeError whose message pins the problem."""
    assert expected in decode_error(CODEC, payload)


def test_several_problems_are_reported_together() -> None:
    """All problems of one message are listed, joined by "; ", in field order."""
    message = decode_error(CODEC, '{"type":"post","title":1,"draft":"no"}')
    assert message == (
        "'post' field 'title' must be a string, got int 1; 'post' is missing field 'author'; "
        "'post' field 'draft' must be a boolean, got str 'no'"
    )


def test_the_number_of_problems_reported_is_bounded() -> None:
    """A huge list of wrong values gives a bounded message that counts the rest."""
    payload = json.dumps({"type": "post", "title": "t", "author": {"name": "a"}, "tags": list(range(10_000))})
    message = decode_error(CODEC, payload)
    assert message.count("must be a string") == 5
    assert message.endswith("and 9995 more problems")


def test_unknown_fields_are_ignored_by_default() -> None:
    """A lenient codec ignores fields it does not know, at any depth (forward compatibility)."""
    payload = '{"type":"post","title":"t","author":{"name":"a","avatar":"x.png"},"likes":3}'
    assert CODEC.decode(payload) == Post("t", Author("a"))


def test_strict_codec_rejects_unknown_fields() -> None:
    """strict=True rejects unknown fields, naming each one with its path."""
    assert "'joined' has unexpected field 'x'" in decode_error(
        STRICT, '{"kind":"joined","username":"a","x":1}'
    )
    nested = '{"kind":"post","title":"t","author":{"name":"a","avatar":"x.png"}}'
    assert "'post' has unexpected field 'author.avatar'" in decode_error(STRICT, nested)
    assert STRICT.strict and not CODEC.strict


def test_bytes_are_read_as_utf8() -> None:
    """decode() takes UTF-8 bytes as well as str."""
    assert CODEC.decode('{"type":"user_joined","username":"zoë"}'.encode()) == UserJoined("zoë")
    assert CODEC.decode(bytearray(b'{"type":"http_ping"}')) == HTTPPing()


def test_invalid_utf8_is_a_decode_error() -> None:
    """Bytes that are not UTF-8 raise DecodeError saying where."""
    assert "invalid UTF-8 at byte 2" in decode_error(CODEC, b'{"\xff')


def test_deeply_nested_json_is_a_decode_error() -> None:
    """JSON nested deeper than the parser's stack raises DecodeError, not RecursionError."""
    assert "nested too deeply" in decode_error(CODEC, "[" * 100_000)


def test_decode_error_is_a_value_error_chained_to_its_cause() -> None:
    """DecodeError is a TrionosError and a ValueError, with the foreign exception as __cause__."""
    with pytest.raises(DecodeError) as info:
        CODEC.decode("{")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TrionosError)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_decoding_something_that_is_not_text_is_a_type_error() -> None:
    """Passing neither str nor bytes is a bug in the caller: TypeError, not DecodeError."""
    with pytest.raises(TypeError, match="takes str or bytes, got dict"):
        CODEC.decode({"type": "http_ping"})  # type: ignore[arg-type]


# -- construction --------------------------------------------------------------------------------------


@attrs.frozen
class WithDict:
    scores: dict[str, int]


@attrs.frozen
class WithTypeField:
    type: str


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Codec(int | str), TypeError, "union of attrs classes"),
        (lambda: Codec(Post | int), TypeError, "contains <class 'int'>"),
        (lambda: Codec("Post"), TypeError, "attrs class or a union"),
        (lambda: Codec(WithDict), TypeError, r"WithDict.scores: dict\[str, int\]; supported field types"),
        (
            lambda: Codec(Post | UserJoined, tags={Post: "x", UserJoined: "x"}),
            ValueError,
            "both have the tag",
        ),
        (lambda: Codec(Post, tags={UserJoined: "x"}), ValueError, "not in the union"),
        (lambda: Codec(Post, tags={Post: ""}), TypeError, "non-empty string"),
        (lambda: Codec(Post, tag_field=""), TypeError, "non-empty string"),
        (lambda: Codec(Post, renames={Post: {"nope": "x"}}), ValueError, "unknown fields: nope"),
        (lambda: Codec(Post, renames={Tree: {"label": "x"}}), ValueError, "does not use"),
        (lambda: Codec(Post, renames={Post: {"title": "draft"}}), ValueError, "same wire name"),
        (lambda: Codec(WithTypeField), ValueError, "tag field"),
        # An untyped caller's mistake, refused at run time.
        (lambda: Codec(Post, json="simdjson"), ValueError, "'stdlib' or 'orjson'"),  # type: ignore[arg-type]
    ],
)
def test_misconfigured_codecs_fail_at_construction(make: Any, error: type[Exception], match: str) -> None:
    """Mistakes in a protocol definition raise when the codec is built, not at the first message."""
    with pytest.raises(error, match=match):
        make()


def test_a_field_named_like_the_tag_is_fine_with_another_tag_field() -> None:
    """A class with a "type" field works once the tag lives elsewhere."""
    codec: Codec[WithTypeField] = Codec(WithTypeField, tag_field="kind")
    assert codec.decode(codec.encode(WithTypeField("x"))) == WithTypeField("x")


def test_repr_names_the_union_and_options() -> None:
    """repr() shows the classes and the options that change the wire format."""
    assert repr(STRICT) == "Codec(Post | UserJoined | HTTPPing, tag_field='kind', strict=True)"


# -- properties ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_every_message_round_trips(codec: Codec[Any], data: st.DataObject) -> None:
    """decode(encode(m)) == m for every message the strategies build, through str and through bytes."""
    msg = data.draw(MESSAGES[codec])
    text = codec.encode(msg)
    assert codec.decode(text) == msg
    assert codec.decode(text.encode()) == msg
    assert codec.structure(json.loads(json.dumps(codec.unstructure(msg)))) == msg


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_malformed_payloads_are_rejected(codec: Codec[Any], data: st.DataObject) -> None:
    """Every payload from malformed_payloads() raises DecodeError."""
    decode_error(codec, data.draw(MALFORMED[codec]))


@FUZZ
@given(text=st.text())
def test_arbitrary_text_raises_only_decode_error(text: str) -> None:
    """Decoding any text returns a message or raises DecodeError, nothing else."""
    decodes_or_raises_decode_error(CODEC, text)


@FUZZ
@given(payload=st.binary())
def test_arbitrary_bytes_raise_only_decode_error(payload: bytes) -> None:
    """Decoding any bytes returns a message or raises DecodeError, nothing else."""
    decodes_or_raises_decode_error(CODEC, payload)


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_arbitrary_json_values_raise_only_decode_error(codec: Codec[Any], data: st.DataObject) -> None:
    """Decoding any JSON value (objects with a valid tag included) raises nothing but DecodeError."""
    value = data.draw(JSON_VALUES[codec])
    decodes_or_raises_decode_error(codec, json.dumps(value))


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_mutated_messages_raise_only_decode_error(codec: Codec[Any], data: st.DataObject) -> None:
    """Valid messages with one random edit decode or raise DecodeError, nothing else."""
    decodes_or_raises_decode_error(codec, data.draw(MUTATED[codec]))


# -- JSON Schema ---------------------------------------------------------------------------------------


def test_json_schema_has_one_tagged_object_per_class() -> None:
    """json_schema() is a draft 2020-12 oneOf of objects, each tagged with a const, and a discriminator."""
    schema = CODEC.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"] == {"propertyName": "type"}
    post, joined, ping = schema["oneOf"]
    assert post["properties"]["type"] == {"const": "post"}
    assert post["required"] == ["type", "title", "author"]
    assert post["description"] == "A message with one field of every kind."
    assert post["properties"]["author"] == {"$ref": "#/$defs/Author"}
    assert post["properties"]["tags"] == {
        "type": "array",
        "items": {"type": "string"},
    }  # a factory: no default
    assert post["properties"]["score"] == {"type": "number", "default": 0.0}
    assert post["properties"]["parent"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert post["properties"]["mood"] == {"enum": ["happy", "sad"], "default": "happy"}
    assert post["properties"]["comments"]["items"] == {"$ref": "#/$defs/Comment"}
    assert joined["properties"]["class"] == {"type": "string", "default": "member"}
    assert ping == {
        "type": "object",
        "title": "HTTPPing",
        "properties": {"type": {"const": "http_ping"}},
        "required": ["type"],
    }
    assert set(schema["$defs"]) == {"Author", "Comment"}
    assert "additionalProperties" not in post


def test_strict_json_schema_forbids_additional_properties() -> None:
    """A strict codec's schema sets additionalProperties false on every object, nested ones included."""
    schema = STRICT.json_schema()
    assert schema["discriminator"] == {"propertyName": "kind"}
    assert all(variant["additionalProperties"] is False for variant in schema["oneOf"])
    assert all(definition["additionalProperties"] is False for definition in schema["$defs"].values())


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_json_schema_accepts_every_encoded_message(codec: Codec[Any], data: st.DataObject) -> None:
    """Everything encode() produces validates against json_schema()."""
    VALIDATORS[codec].validate(json.loads(codec.encode(data.draw(MESSAGES[codec]))))


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@FUZZ
@given(data=st.data())
def test_json_schema_rejects_malformed_payloads(codec: Codec[Any], data: st.DataObject) -> None:
    """Every malformed payload that is JSON at all fails validation against json_schema()."""
    payload = data.draw(MALFORMED[codec])
    try:
        value = json.loads(payload)
    except ValueError:
        return
    assert not VALIDATORS[codec].is_valid(value)


# -- orjson (optional) ---------------------------------------------------------------------------------


@needs_orjson
@FUZZ
@given(data=st.data())
def test_orjson_codec_matches_the_stdlib_codec(data: st.DataObject) -> None:
    """json="orjson" writes the same text and reads it back to the same message."""
    assert ORJSON is not None
    msg = data.draw(MESSAGES[CODEC])
    assert ORJSON.encode(msg) == CODEC.encode(msg)
    assert ORJSON.decode(CODEC.encode(msg).encode()) == msg


@needs_orjson
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"\xff', "invalid UTF-8 at byte 2"),
        ('{"type":"post",', "invalid JSON at line 1 column"),
        ("[1]", "expected a JSON object, got list"),
        ('{"type":"dance"}', "unknown type 'dance'"),
        (
            '{"type":"user_joined","username":true}',
            "'user_joined' field 'username' must be a string, got bool",
        ),
    ],
)
def test_orjson_codec_reports_errors_like_the_stdlib_codec(payload: str | bytes, expected: str) -> None:
    """json="orjson" raises the same DecodeErrors."""
    assert ORJSON is not None
    assert expected in decode_error(ORJSON, payload)


# -- Unicode text: lone surrogates --------------------------------------------------------------------

#: Text that may hold lone surrogates: what JSON's \\u escapes can spell, and str input can carry.
TEXT_WITH_SURROGATES = st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=8)


def test_an_escaped_lone_surrogate_is_a_decode_error_naming_the_field() -> None:
    """A JSON-escaped lone surrogate in a string field is refused on the way in, with the field named."""
    payload = '{"type":"user_joined","username":"\\udfff"}'
    assert decode_error(CODEC, payload) == (
        "invalid text in JSON: the string at 'username' must be Unicode text, "
        "got the lone surrogate '\\udfff' at index 0"
    )
    assert "'comments[0].text'" in decode_error(
        CODEC,
        '{"type":"post","title":"t","author":{"name":"a"},"comments":[{"author":{"name":"b"},'
        '"text":"ok \\ud800"}]}',
    )


def test_a_raw_lone_surrogate_in_str_input_is_a_decode_error() -> None:
    """A str payload that carries a lone surrogate itself (not escaped) is refused the same way."""
    assert "the lone surrogate '\\udfff'" in decode_error(
        CODEC, '{"type":"user_joined","username":"a\udfff"}'
    )


def test_an_escaped_surrogate_pair_is_one_character() -> None:
    """A valid escaped pair (how ensure_ascii JSON writes emoji) still decodes to its character."""
    assert CODEC.decode('{"type":"user_joined","username":"\\ud83d\\ude00"}') == UserJoined("\U0001f600")


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ('"\\udfff"', "the top-level string"),
        ('{"a\\ud800":1}', "a top-level key"),
        ('[1,{"b":["x","\\udc00"]}]', "the string at '[1].b[1]'"),
        ('{"k":{"\\udbff":null}}', "a key of the object at 'k'"),
    ],
)
def test_loads_json_refuses_lone_surrogates_anywhere(payload: str, where: str) -> None:
    """recv_json's parser refuses a lone surrogate in any string or key, saying where it is."""
    from trionos._json import loads as loads_json

    with pytest.raises(DecodeError, match=f"invalid text in JSON: {re.escape(where)} must be Unicode text"):
        loads_json(payload)


def test_structure_refuses_lone_surrogates() -> None:
    """structure() (an already parsed value) refuses a str field that is not Unicode text."""
    with pytest.raises(DecodeError, match="'username' must be Unicode text \\(no lone surrogates\\)"):
        CODEC.structure({"type": "user_joined", "username": "\udfff"})


def test_encoding_a_lone_surrogate_is_an_encode_error() -> None:
    """A message that holds a lone surrogate fails at encode(), not later at the socket."""
    with pytest.raises(EncodeError, match="lone surrogate"):
        CODEC.encode(UserJoined("\udfff"))


def as_parsed(text: str, ascii_only: bool) -> str:
    """What a JSON parser makes of *text* written by json.dumps: with ensure_ascii, a high and a
    low surrogate next to each other are written as an escaped pair, which parses as one character."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass") if ascii_only else text


def is_unicode(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def accepted_or_none(parse: Any, payload: Any) -> Any:
    try:
        return parse(payload)
    except DecodeError:
        return None


def every_string(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *every_string(v))]
    if isinstance(value, list):
        return [s for item in value for s in every_string(item)]
    return []


@FUZZ
@given(text=TEXT_WITH_SURROGATES, ascii_only=st.booleans())
# A surrogate pair: one character once escaped and parsed, two lone surrogates when raw.
@example(text="\ud800\udc00", ascii_only=True)
@example(text="\ud800\udc00", ascii_only=False)
def test_every_string_the_codec_accepts_encodes_to_utf8(text: str, ascii_only: bool) -> None:
    """Whatever decode() and structure() accept, escaped or raw, can be encoded to UTF-8; and
    everything that can is accepted."""
    payload = json.dumps({"type": "user_joined", "username": text}, ensure_ascii=ascii_only)
    valid = is_unicode(as_parsed(text, ascii_only))
    codecs = [CODEC] if ORJSON is None else [CODEC, ORJSON]
    for codec in codecs:
        for parse in (codec.decode, lambda p, c=codec: c.structure(json.loads(p))):
            msg = accepted_or_none(parse, payload)
            assert (msg is not None) == valid
            if msg is not None:
                msg.username.encode("utf-8")
                codec.encode(msg).encode("utf-8")


@FUZZ
@given(
    value=st.recursive(
        TEXT_WITH_SURROGATES,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(TEXT_WITH_SURROGATES, children, max_size=3)
        ),
        max_leaves=8,
    ),
    ascii_only=st.booleans(),
)
@example(value={"\ud800\udc00": ["\udbff\udfff"]}, ascii_only=True)
@example(value={"\ud800\udc00": ["\udbff\udfff"]}, ascii_only=False)
def test_every_json_value_loads_json_accepts_encodes_to_utf8(value: Any, ascii_only: bool) -> None:
    """Whatever recv_json's parser accepts holds only UTF-8-encodable strings, keys included."""
    from trionos._json import loads as loads_json

    parsed = accepted_or_none(loads_json, json.dumps(value, ensure_ascii=ascii_only))
    valid = all(is_unicode(as_parsed(s, ascii_only)) for s in every_string(value))
    assert (parsed is not None) == valid
    for string in every_string(parsed):
        string.encode("utf-8")


# -- architecture --------------------------------------------------------------------------------------


def test_codec_and_chat_modules_import_without_trio() -> None:
    """The codec's modules, the JSON policy and trionos.chat are pure: importing them loads neither
    trio nor hypothesis."""
    loaded = imports_loaded(
        "trionos._codec, trionos._explain, trionos._json, trionos._schema, trionos._strict, trionos._wire, "
        "trionos.chat",
        ("trio", "trio_websocket", "hypothesis"),
    )
    assert not loaded, loaded


@pytest.mark.parametrize("payload", ["[" * 100_000, "1" * 5_000, b'{"a": "\xff"}', "{"])
def test_loads_json_raises_only_decode_error(payload: str | bytes) -> None:
    """The JSON parser behind recv_json and every codec turns deep nesting, oversized integers,
    invalid UTF-8 and bad syntax into DecodeError."""
    from trionos._json import loads as loads_json

    with pytest.raises(DecodeError):
        loads_json(payload)
