"""The command's flags (generated from ServerOptions), the access log line, and loading MODULE:ATTR."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

import trionos
from trionos._access_log import access_line
from trionos._app import AppError, app_lifespan, load_app
from trionos._cli import build_parser, parse


def flag(name: str) -> str:
    """The flag of the ServerOptions field *name*."""
    return "--" + name.replace("_", "-")


def test_every_server_setting_has_a_flag_with_the_fields_help() -> None:
    """Each ServerOptions field has --its-name, documented with its docstring line and default."""
    help_text = " ".join(build_parser().format_help().split())
    for field in attrs.fields(trionos.ServerOptions):
        if field.name != "heartbeat":  # --heartbeat-interval/--heartbeat-timeout/--no-heartbeat
            assert flag(field.name) in help_text, field.name
    assert "the largest message received, in bytes (1 MiB)" in help_text
    assert "[default: 1048576]" in help_text


def test_no_flags_give_the_default_settings_with_the_access_log() -> None:
    """Without flags the options are ServerOptions' defaults, plus the command's access log."""
    args, options = parse(["m:app"])
    assert options == trionos.ServerOptions(access_log=True)
    assert (args.host, args.port, args.workers, args.log_level) == ("127.0.0.1", 8000, 1, "info")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max-message-size", "1000"], {"max_message_size": 1000}),
        (["--close-timeout", "0.5"], {"close_timeout": 0.5}),
        (["--max-connections-per-address", "none"], {"max_connections_per_address": None}),
        (["--max-connections-per-address", "7"], {"max_connections_per_address": 7}),
        (["--compression", "deflate"], {"compression": "deflate"}),
        (
            ["--origins", "https://a.example, https://b.example"],
            {"origins": {"https://a.example", "https://b.example"}},
        ),
        (["--max-ping-rate", "0.5", "--max-ping-burst", "3"], {"max_ping_rate": 0.5, "max_ping_burst": 3}),
        (["--no-access-log"], {"access_log": False}),
        (["--no-heartbeat"], {"heartbeat": None}),
        (
            ["--heartbeat-interval", "5", "--heartbeat-timeout", "9"],
            {"heartbeat": trionos.Heartbeat(interval=5, timeout=9)},
        ),
    ],
)
def test_flags_set_the_settings(argv: list[str], expected: dict[str, Any]) -> None:
    """A flag's text becomes the field's type: numbers, `none`, comma-separated lists, booleans."""
    _, options = parse(["m:app", *argv])
    assert options == attrs.evolve(trionos.ServerOptions(access_log=True), **expected)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        parse(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"trionos {trionos.__version__}"


def test_an_out_of_range_setting_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """ServerOptions' validators speak through argparse: status 2 and the validator's message."""
    with pytest.raises(SystemExit) as exit_:
        parse(["m:app", "--max-head-size", "0"])
    assert exit_.value.code == 2
    assert "max_head_size must be at least 1" in capsys.readouterr().err


class _Remote:
    """What the access log reads, with settable values."""

    def __init__(self, **values: Any) -> None:
        self.method = "GET"
        self.path = "/"
        self.remote: tuple[str, int] | None = ("127.0.0.1", 5000)
        self.websocket: Any = None
        self.status: int | None = 200
        self.response_bytes = 12
        self.__dict__.update(values)


class _Session:
    def __init__(self, code: int | None) -> None:
        self.close_code = code
        self.bytes_received = 10
        self.bytes_sent = 20


def test_the_access_line_for_http_and_websocket_sessions() -> None:
    """HTTP: status and bytes out; WebSocket: close code (1006 when none) and bytes in and out."""
    assert access_line(_Remote(), 0.0012) == '127.0.0.1:5000 "GET /" 200 0.001s out=12B'
    ws = _Remote(path="/chat", websocket=_Session(1001))
    assert access_line(ws, 2.5) == '127.0.0.1:5000 "WS /chat" 1001 2.500s in=10B out=20B'
    assert '"WS /chat" 1006' in access_line(_Remote(path="/chat", websocket=_Session(None)), 1)
    assert access_line(_Remote(remote=("::1", 7), status=None), 0).startswith('[::1]:7 "GET /" - ')
    assert access_line(_Remote(remote=None), 0).startswith('- "GET /" 200')


def test_the_access_line_escapes_what_could_forge_a_line() -> None:
    """A decoded path with a newline or a quote cannot end the line or the quoted field."""
    line = access_line(_Remote(path='/a\n127.0.0.1:1 "GET /x" 200'), 0)
    assert "\n" not in line and '\\n127.0.0.1:1 \\"GET /x\\" 200' in line


async def handler(req: trionos.Request) -> None:
    """A module-level handler for load_app."""
    await req.respond_text("x")


@asynccontextmanager
async def lifespan() -> AsyncIterator[trionos.Handler]:
    """Yield the handler above."""
    yield handler


app = trionos.LifespanApp(lifespan, readiness=lambda: False)


async def test_load_app_finds_handlers_and_apps() -> None:
    """MODULE:ATTR (dots for nested attributes) gives the handler or the App; both enter a lifespan."""
    assert load_app("tests.test_cli:handler") is handler
    loaded = load_app("tests.test_cli:app")
    assert isinstance(loaded, trionos.App) and isinstance(loaded, trionos.SupportsReadiness)
    assert not loaded.ready() and trionos.LifespanApp(lifespan).ready()
    async with app_lifespan(loaded) as served:
        assert served is handler
    async with app_lifespan(handler) as served:
        assert served is handler
    nested: object = load_app("tests.test_cli:app.factory")
    assert nested is lifespan


def test_load_app_says_what_is_wrong() -> None:
    """A malformed target, a missing module or attribute, or a non-app: AppError with the reason."""
    for target, message in [
        ("nocolon", "expected MODULE:ATTR"),
        ("tests.nope:x", "cannot import module 'tests.nope'"),
        ("tests.test_cli:nope", "has no attribute 'nope'"),
        ("tests.command_apps:not_an_app", "expected a handler or an App"),
    ]:
        with pytest.raises(AppError, match=message):
            load_app(target)
    with pytest.raises(AppError, match="expected a handler"):
        app_lifespan(42)  # type: ignore[arg-type]
    with pytest.raises(ModuleNotFoundError):  # the module exists; what it imports does not
        load_app("tests.command_missing_extra:handler")


def test_run_refuses_bad_worker_settings() -> None:
    """run(workers=N) needs MODULE:ATTR (each worker imports it) and N >= 1."""
    with pytest.raises(TypeError, match="MODULE:ATTR"):
        trionos.run(handler, workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        trionos.run("tests.test_cli:handler", workers=0)


def test_run_cannot_start_is_status_1(tmp_path: Path) -> None:
    """A log config that is not JSON, or an unknown level: run() exits with status 1 before binding."""
    bad = tmp_path / "logging.json"
    bad.write_text("{not json")
    for keywords in ({"log_config": str(bad)}, {"log_level": "loud"}):
        with pytest.raises(SystemExit) as exit_:
            trionos.run(handler, port=0, **keywords)  # type: ignore[arg-type]
        assert exit_.value.code == 1
