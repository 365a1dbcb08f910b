"""The public surface: one ``__all__``, sorted and complete, documented, and pure modules free of trio."""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

import trionos

PACKAGE = Path(trionos.__file__).parent
PURE_MODULES = ["_errors", "_frames", "_binary", "_http", "_rooms", "_codec", "_backoff", "chat"]


def test_all_is_sorted_and_complete() -> None:
    """``trionos.__all__`` is sorted and lists every public name the package defines."""
    assert trionos.__all__ == sorted(trionos.__all__)
    public = {
        name
        for name, value in vars(trionos).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    lazy = set(getattr(trionos, "_LAZY", {}))
    assert public | lazy | {"__version__"} == set(trionos.__all__)


@pytest.mark.parametrize("name", [n for n in trionos.__all__ if n != "__version__"])
def test_every_public_name_is_documented(name: str) -> None:
    """Each exported class and function has a docstring."""
    value = getattr(trionos, name)
    assert inspect.getdoc(value), f"trionos.{name} has no docstring"


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_do_not_import_trio(module: str) -> None:
    """Protocol logic (codecs, frames, HTTP head, rooms, backoff) imports neither trio nor I/O layers."""
    for name in _imports(module):
        assert not name.startswith(("trio", "trio_websocket", "socket")), f"{module} imports {name}"
        if name.startswith("."):
            assert name[1:] in PURE_MODULES, f"{module} imports the non-pure module {name}"


def test_errors_have_one_root() -> None:
    """Every exception trionos exports derives from TrionosError."""
    suffixes = ("Error", "Closed", "Rejected", "Timeout")
    errors = [getattr(trionos, n) for n in trionos.__all__ if n.endswith(suffixes)]
    assert errors and all(issubclass(e, trionos.TrionosError) for e in errors)
    assert trionos.ConnectionClosed(1001).normal and not trionos.ConnectionClosed(1006).normal


def test_py_typed_is_shipped() -> None:
    """The package declares its type hints."""
    assert (PACKAGE / "py.typed").exists()
