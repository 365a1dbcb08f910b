"""ServerOptions, ClientOptions and Heartbeat: one value per option group, taken whole or as keywords."""

from __future__ import annotations

import math
import re
import typing
import warnings
from typing import Any

import attrs
import pytest
import trio

import trionos
import trionos.testing
from trionos import ClientOptions, Heartbeat, ServerOptions
from trionos._options import ClientOptionKeywords, ServerOptionKeywords
from trionos.testing import open_app, open_loopback_server, open_memory_server


async def offer_v2(req: trionos.Request) -> None:
    """Accept with subprotocol "v2", send back what was negotiated, then wait for the close."""
    ws = await req.accept(subprotocol="v2")
    await ws.send(f"subprotocol={ws.subprotocol}")
    async for _ in ws:
        pass


async def echo(req: trionos.Request) -> None:
    """Accept and echo every message."""
    ws = await req.accept()
    async for message in ws:
        await ws.send(message)


def test_server_options_defaults_are_the_documented_ones() -> None:
    """ServerOptions() holds the documented defaults (no per-address limit, loopback proxies trusted)."""
    assert attrs.asdict(ServerOptions(), recurse=False) == {
        "origins": None,
        "heartbeat": Heartbeat(interval=30.0, timeout=60.0),
        "max_message_size": 1024 * 1024,
        "max_head_size": 16 * 1024,
        "handshake_timeout": 10.0,
        "max_connections": 10_000,
        "max_connections_per_address": None,
        "close_timeout": 5.0,
        "max_outbox_bytes": 1024 * 1024,
        "message_queue_size": 1,
        "compression": None,
        "compression_context_takeover": False,
        "forwarded_allow_ips": ("127.0.0.1", "::1"),
        "max_inflate_rate": 32 * 1024 * 1024,
        "max_ping_rate": 2.0,
        "max_ping_burst": 20,
        "access_log": False,
    }


def test_client_options_defaults_are_the_documented_ones() -> None:
    """ClientOptions() holds the settings connect has always had."""
    assert attrs.asdict(ClientOptions(), recurse=False) == {
        "subprotocols": (),
        "extra_headers": (),
        "connect_timeout": 10.0,
        "heartbeat": Heartbeat(interval=30.0, timeout=60.0),
        "max_message_size": 1024 * 1024,
        "close_timeout": 5.0,
        "max_outbox_bytes": 1024 * 1024,
        "message_queue_size": 1,
        "compression": None,
    }


def test_options_are_frozen_hashable_values() -> None:
    """Equal settings make equal, hashable values; changing one means making another."""
    options = ServerOptions(origins=["https://a.example", None], max_connections=5)
    assert options == ServerOptions(origins=(None, "https://a.example"), max_connections=5)
    assert options.origins == frozenset({"https://a.example", None})
    assert hash(options) == hash(ServerOptions(origins=[None, "https://a.example"], max_connections=5))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.max_connections = 6  # type: ignore[misc]
    assert attrs.evolve(options, max_connections=6).max_connections == 6
    client = ClientOptions(subprotocols=["v1", "v2"], extra_headers=[("x-a", "1")])
    assert (client.subprotocols, client.extra_headers) == (("v1", "v2"), (("x-a", "1"),))
    assert ClientOptions(extra_headers=None).extra_headers == ()
    assert Heartbeat(10, 20) == Heartbeat(interval=10, timeout=20)


S, C, H = ServerOptions, ClientOptions, Heartbeat


@pytest.mark.parametrize(
    ("cls", "settings", "error", "message"),
    [
        (S, {"max_message_size": 0}, ValueError, "ServerOptions max_message_size must be at least 1, got 0"),
        (
            S,
            {"max_connections": True},
            TypeError,
            "ServerOptions max_connections must be a whole number, got True",
        ),
        (S, {"max_connections_per_address": 0}, ValueError, "max_connections_per_address must be at least 1"),
        (
            S,
            {"handshake_timeout": "10"},
            TypeError,
            "handshake_timeout must be a number of seconds, got '10'",
        ),
        (
            S,
            {"close_timeout": 0},
            ValueError,
            "close_timeout must be a positive, finite number of seconds, got 0",
        ),
        (S, {"compression": "gzip"}, ValueError, "compression must be None or 'deflate', got 'gzip'"),
        (
            S,
            {"compression_context_takeover": 1},
            TypeError,
            "'compression_context_takeover' must be <class 'bool'>",
        ),
        (
            S,
            {"forwarded_allow_ips": "10.0.0.0/8,proxy.example"},
            ValueError,
            "networks (10.0.0.0/8) or '*', got 'proxy.example'",
        ),
        (
            S,
            {"origins": "https://a.example"},
            TypeError,
            "origins must be a list of origins, got the single string",
        ),
        (S, {"heartbeat": 30}, TypeError, "ServerOptions heartbeat must be a Heartbeat or None, got 30"),
        (C, {"subprotocols": "chat"}, TypeError, "expected a list of strings, got the single string 'chat'"),
        (
            C,
            {"connect_timeout": math.inf},
            ValueError,
            "ClientOptions connect_timeout must be a positive, finite",
        ),
        (
            C,
            {"message_queue_size": 0},
            ValueError,
            "ClientOptions message_queue_size must be at least 1, got 0",
        ),
        (
            H,
            {"interval": math.nan},
            ValueError,
            "Heartbeat interval must be a positive, finite number of seconds",
        ),
        (H, {"timeout": "60"}, TypeError, "Heartbeat timeout must be a number of seconds, got '60'"),
    ],
)
def test_wrong_settings_are_refused_saying_which_and_what(
    cls: type[object], settings: dict[str, object], error: type[Exception], message: str
) -> None:
    """A wrong setting fails at construction, naming the class, the setting and the value."""
    with pytest.raises(error, match=re.escape(message)):
        cls(**settings)


def test_the_keyword_forms_name_every_option_with_its_type() -> None:
    """The **keywords annotations list exactly the value objects' fields, in the same order."""
    for keywords, options in ((ServerOptionKeywords, ServerOptions), (ClientOptionKeywords, ClientOptions)):
        assert list(typing.get_type_hints(keywords)) == [field.name for field in attrs.fields(options)]
        assert not keywords.__required_keys__


def test_server_takes_options_or_keywords_alike() -> None:
    """Server(h, max_connections=5) and Server(h, options=ServerOptions(max_connections=5)) agree."""
    by_keyword = trionos.Server(echo, max_connections=5, heartbeat=None)
    by_value = trionos.Server(echo, options=ServerOptions(max_connections=5, heartbeat=None))
    assert by_keyword.options == by_value.options == ServerOptions(max_connections=5, heartbeat=None)
    assert trionos.Server(echo).options == ServerOptions()


def test_options_and_keywords_together_are_a_type_error() -> None:
    """Giving options= and an option keyword is ambiguous, so it is refused; so is an unknown keyword."""
    both = "Server() takes options= or the option keyword arguments, not both: got options= and heartbeat, "
    with pytest.raises(TypeError, match=re.escape(both + "max_connections")):
        trionos.Server(echo, options=ServerOptions(), max_connections=5, heartbeat=None)
    with pytest.raises(TypeError, match=r"Server\(\) got an unexpected keyword argument 'max_conections'"):
        trionos.Server(echo, max_conections=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"Server\(\) options must be a ServerOptions, got ClientOptions"):
        trionos.Server(echo, options=ClientOptions())  # type: ignore[arg-type]


async def test_serve_refuses_options_and_keywords_before_listening() -> None:
    """serve(options=..., max_connections=...) raises TypeError at once, binding nothing."""
    with pytest.raises(TypeError, match=r"got options= and max_connections"):
        await trionos.serve(0, echo, host="127.0.0.1", options=ServerOptions(), max_connections=5)


async def test_connect_refuses_options_and_keywords() -> None:
    """connect(url, options=..., connect_timeout=...) raises TypeError before connecting."""
    with pytest.raises(TypeError, match=r"connect\(\) takes options= or the option keyword arguments"):
        async with trionos.connect("ws://127.0.0.1:1/", options=ClientOptions(), connect_timeout=1):
            pass  # pragma: no cover


async def test_the_test_kit_refuses_options_and_keywords() -> None:
    """The memory server, open_app and their clients apply the same rule as serve and connect."""
    with pytest.raises(TypeError, match=r"got options= and max_connections"):
        async with open_memory_server(echo, options=ServerOptions(), max_connections=5):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"open_app\(\) takes options="):
        async with open_app(echo, options=ServerOptions(), heartbeat=None):
            pass  # pragma: no cover
    async with open_memory_server(echo) as app:
        with pytest.raises(TypeError, match=r"connect\(\) takes options= .*got options= and subprotocols"):
            async with app.connect("/", options=ClientOptions(), subprotocols=["v1"]):
                pass  # pragma: no cover


async def test_server_options_take_effect_in_either_form() -> None:
    """max_message_size given as a value or a keyword closes an oversized message with 1009."""
    for form in ({"options": ServerOptions(max_message_size=100)}, {"max_message_size": 100}):
        async with open_memory_server(echo, **form) as app, app.connect("/") as ws:
            assert app.server.options.max_message_size == 100
            await ws.send("x" * 100)
            assert await ws.recv() == "x" * 100
            await ws.send("x" * 101)
            with pytest.raises(trionos.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.code == 1009


async def test_connect_takes_client_options(nursery: trio.Nursery) -> None:
    """connect(url, options=ClientOptions(subprotocols=...)) offers them, as the keyword does."""
    async with open_loopback_server(offer_v2) as app:
        async with trionos.connect(app.url, options=ClientOptions(subprotocols=("v1", "v2"))) as ws:
            assert await ws.recv() == "subprotocol=v2"
            assert ws.subprotocol == "v2"
        async with trionos.connect(app.url, subprotocols=["v2"], heartbeat=None) as ws:
            assert await ws.recv() == "subprotocol=v2"
        async with app.connect("/", options=ClientOptions(subprotocols=("v2",))) as ws:
            assert await ws.recv() == "subprotocol=v2"


async def test_reconnecting_clients_pass_client_options_through() -> None:
    """run_reconnecting and connect_with_retry hand options= to the connect they use."""
    seen: list[str | bytes] = []

    async def on_connect(ws: trionos.WebSocket) -> None:
        seen.append(await ws.recv())

    async with open_memory_server(offer_v2) as app:
        options = ClientOptions(subprotocols=("v2",), heartbeat=None)
        assert await trionos.run_reconnecting("/", on_connect, connect=app.connect, options=options) is None
        async with trionos.connect_with_retry("/", 1, connect=app.connect, options=options) as ws:
            assert ws is not None
            seen.append(await ws.recv())
    assert seen == ["subprotocol=v2", "subprotocol=v2"]


def test_server_option_attributes_still_read_with_a_warning() -> None:
    """server.max_connections (before Server.options) still works for a release, and warns."""
    server = trionos.Server(echo, max_connections=7)
    deprecated = trionos.TrionosDeprecationWarning
    with pytest.warns(deprecated, match="use Server.options.max_connections") as record:
        assert server.max_connections == 7  # type: ignore[attr-defined]
    assert record[0].filename == __file__
    with pytest.raises(AttributeError, match="'Server' object has no attribute 'nonsense'"):
        server.nonsense  # type: ignore[attr-defined]  # noqa: B018


def test_app_client_is_the_deprecated_name_of_app_server() -> None:
    """trionos.testing.AppClient still resolves, to AppServer, with a warning."""
    with pytest.warns(trionos.TrionosDeprecationWarning, match="use trionos.testing.AppServer"):
        old: Any = trionos.testing.AppClient
    assert old is trionos.testing.AppServer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trionos.testing.AppServer is not None
