"""Write docs/api.md from the public API's signatures and docstrings: ``python docs/gen_api.py``."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import trionos
import trionos.testing

SECTIONS = [
    ("trionos", trionos),
    ("trionos.testing", trionos.testing),
]


#: A default that is a function prints with its memory address, which changes on every run.
_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


def _signature(obj: object) -> str:
    try:
        return _ADDRESS.sub(">", str(inspect.signature(obj)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _members(cls: type) -> list[str]:
    lines = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        doc = inspect.getdoc(member)
        if isinstance(member, property):
            lines.append(f"- `{name}` (property): {(doc or '').splitlines()[0] if doc else ''}")
        elif inspect.isfunction(member):
            first = doc.splitlines()[0] if doc else ""
            lines.append(f"- `{name}{_signature(member)}`: {first}")
    return lines


def render() -> str:
    out = ["# API reference", "", "Generated from the docstrings by `python docs/gen_api.py`.", ""]
    for title, module in SECTIONS:
        out += [f"## `{title}`", ""]
        for name in module.__all__:
            if name == "__version__":
                continue
            obj = getattr(module, name)
            if inspect.isclass(obj):
                out += [f"### `{title}.{name}{_signature(obj)}`", ""]
            elif callable(obj):
                out += [f"### `{title}.{name}{_signature(obj)}`", ""]
            else:
                out += [f"### `{title}.{name}` = `{obj!r}`", ""]
                continue
            doc = inspect.getdoc(obj)
            if doc:
                out += [doc, ""]
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                members = _members(obj)
                if members:
                    out += members + [""]
    return "\n".join(out)


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    target.write_text(render())
    sys.stdout.write(f"wrote {target}\n")
