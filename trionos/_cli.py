"""The ``trionos`` command's arguments: the runner's flags, and one per ServerOptions setting.

The settings' flags are generated from :class:`~trionos.ServerOptions`' attrs fields, so a setting
added there gets its flag with no change here: ``max_message_size`` becomes
``--max-message-size``, with the field's type, default and the docstring line that documents it.
A ``bool`` is ``--name/--no-name``; a ``... | None`` takes ``none``; a collection takes a
comma-separated list. The heartbeat is ``--heartbeat-interval``, ``--heartbeat-timeout`` and
``--no-heartbeat``.
"""

from __future__ import annotations

import argparse
import collections.abc
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._options import Heartbeat, ServerOptions

__all__ = ["build_parser", "main", "parse", "server_options"]

_DEFAULTS = ServerOptions()
_HEARTBEAT = Heartbeat()
# Settings with flags of their own (not generated), and the command's own defaults where they
# differ from the library's.
_SPECIAL = frozenset({"heartbeat", "access_log"})


def _field_help() -> dict[str, str]:
    """Each setting's description, from the ``Attributes:`` section of ServerOptions' docstring."""
    doc = inspect.getdoc(ServerOptions) or ""
    section = doc.split("Attributes:", 1)[-1].split("\n\n", 1)[0]
    helps: dict[str, str] = {}
    for match in re.finditer(r"^    (\w+): (.*?)(?=^    \w+: |\Z)", section, re.M | re.S):
        text = " ".join(match.group(2).split())
        helps[match.group(1)] = re.sub(r":\w+:`~?(?:[\w.]+ <)?([\w.]+?)>?`", r"\1", text).replace("``", "")
    return helps


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parser_for(annotation: Any, name: str = "") -> tuple[Callable[[str], Any], str] | None:
    """How to parse a flag's text for a field of this type (and *name*), and its metavar; None for a bool."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        annotation = inner[0] if len(inner) == 1 else str
    origin = typing.get_origin(annotation) or annotation
    if annotation is bool:
        return None
    if isinstance(origin, type) and issubclass(origin, collections.abc.Collection) and origin is not str:
        convert: Callable[[str], Any] = _split
        metavar = "A,B,..."
    elif annotation is int:
        convert, metavar = int, "N"
    elif annotation is float:
        convert, metavar = float, "PER_SECOND" if name.endswith("_rate") else "SECONDS"
    else:
        convert, metavar = str, "TEXT"
    if not optional:
        return convert, metavar

    def convert_optional(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    return convert_optional, metavar


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server settings (trionos.ServerOptions; docs/reference/server.md)")
    helps = _field_help()
    hints = typing.get_type_hints(ServerOptions)
    for field in attrs.fields(ServerOptions):
        if field.name in _SPECIAL:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(_DEFAULTS, field.name)
        shown = ",".join(map(str, default)) if isinstance(default, frozenset | tuple | list) else default
        text = f"{helps.get(field.name, field.name)} [default: {shown}]".replace("%", "%%")
        how = _parser_for(hints[field.name], field.name)
        if how is None:
            group.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            convert, metavar = how
            group.add_argument(
                flag, dest=field.name, type=convert, metavar=metavar, default=argparse.SUPPRESS, help=text
            )
    group.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        default=_HEARTBEAT.interval,
        help=f"seconds between pings [default: {_HEARTBEAT.interval:g}]",
    )
    group.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="SECONDS",
        default=_HEARTBEAT.timeout,
        help=f"seconds of silence after which a client is dead [default: {_HEARTBEAT.timeout:g}]",
    )
    group.add_argument("--no-heartbeat", action="store_true", help="send no pings, never time out")


def build_parser(prog: str = "trionos") -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a trionos app: a handler or an App (see docs/running.md).",
        epilog="SIGINT/SIGTERM drain (WebSockets get 1001) and exit 0; a second one stops at once. "
        "With --workers, SIGHUP replaces the workers one at a time.",
    )
    parser.add_argument("app", metavar="MODULE:ATTR", help="the app, e.g. examples.room_chat:app")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--app-dir", metavar="DIR", help="import MODULE from DIR (default: the current one)")
    where = parser.add_argument_group("where to listen")
    where.add_argument("--host", default="127.0.0.1", help="address to bind; '' for all [default: 127.0.0.1]")
    where.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one [default: 8000]")
    where.add_argument("--uds", metavar="PATH", help="listen on this Unix socket instead")
    where.add_argument(
        "--fd", type=int, metavar="N", help="serve on this inherited listening socket (systemd: LISTEN_FDS)"
    )
    where.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT, so that independent processes can share the port (Linux)",
    )
    where.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="worker processes [default: 1]"
    )
    logs = parser.add_argument_group("logging and health")
    logs.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    logs.add_argument("--log-config", metavar="FILE", help="a JSON logging.config.dictConfig file")
    logs.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per request and WebSocket session in the trionos.access logger [default: on]",
    )
    logs.add_argument(
        "--health", metavar="PATH", help="serve PATH/live (liveness) and PATH/ready (readiness)"
    )
    _add_option_flags(parser)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def server_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerOptions:
    """The ServerOptions the parsed flags ask for (a bad value exits with status 2)."""
    values = {
        field.name: getattr(args, field.name)
        for field in attrs.fields(ServerOptions)
        if hasattr(args, field.name)
    }
    for name in _SPECIAL:
        values.pop(name, None)
    try:
        heartbeat = (
            None
            if args.no_heartbeat
            else Heartbeat(interval=args.heartbeat_interval, timeout=args.heartbeat_timeout)
        )
        return attrs.evolve(_DEFAULTS, heartbeat=heartbeat, access_log=args.access_log, **values)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))


def parse(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, ServerOptions]:
    """Parse the command line (``sys.argv[1:]``); bad arguments exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return args, server_options(args, parser)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``trionos`` command (and ``python -m trionos``): parse, then :func:`trionos.run`."""
    from ._runner import run

    args, options = parse(argv)
    run(
        args.app,
        host=args.host or None,
        port=args.port,
        uds=args.uds,
        fd=args.fd,
        workers=args.workers,
        reuse_port=args.reuse_port,
        app_dir=args.app_dir,
        options=options,
        health=args.health,
        log_level=args.log_level,
        log_config=args.log_config,
    )
