"""The public surface: one ``__all__``, sorted and complete, documented, and pure modules free of trio."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import trionos
import trionos.testing
from trionos._lazy import module_getattr

PACKAGE = Path(trionos.__file__).parent
DOCS = PACKAGE.parent / "docs"
PURE_MODULES = [
    "_errors",
    "_frames",
    "_binary",
    "_http",
    "_rooms",
    "_codec",
    "_explain",
    "_json",
    "_schema",
    "_strict",
    "_wire",
    "_backoff",
    "_forwarded",
    "_options",
    "_deflate",
    "_broker",
    "_presence",
    "_ratelimit",
    "_inflation",
    "_history",
    "_lazy",
    "_metrics",
    "chat",
]


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
    """Each exported class and function has a docstring; a type alias has a ``#:`` comment."""
    value = getattr(trionos, name)
    if typing.get_origin(value) is not None:
        assert _alias_comment(name), f"trionos.{name} (a type alias) has no #: comment above it"
        return
    assert inspect.getdoc(value), f"trionos.{name} has no docstring"


def _alias_comment(name: str) -> bool:
    for path in PACKAGE.glob("_*.py"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.startswith(f"{name} = ") and number and lines[number - 1].startswith("#:"):
                return True
    return False


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


@pytest.fixture(scope="module")
def reference_names(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The Python objects the built documentation site documents (its objects.inv): name -> anchor.

    ``make docs`` (which ``make test`` runs first) leaves the site in docs/_build/html; without it,
    the site is built here.
    """
    sphobjinv = pytest.importorskip("sphobjinv", reason="the docs extra is not installed")
    inventory = DOCS / "_build" / "html" / "objects.inv"
    if not inventory.exists():
        out = tmp_path_factory.mktemp("html")
        subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(DOCS), str(out)], check=True)
        inventory = out / "objects.inv"
    items = [item for item in sphobjinv.Inventory(inventory).objects if item.domain == "py"]
    return {item.name: item.uri.partition("#")[2].replace("$", item.name) for item in items}


@pytest.mark.parametrize("package", [trionos, trionos.testing], ids=lambda p: p.__name__)
def test_reference_documents_every_public_name(
    package: types.ModuleType, reference_names: dict[str, str]
) -> None:
    """The built reference (docs/reference/, autodoc) has an entry for every name in ``__all__``."""
    missing = [name for name in package.__all__ if f"{package.__name__}.{name}" not in reference_names]
    assert not missing, f"add these to a page under docs/reference/, then `make docs`: {missing}"


def test_reference_documents_no_private_module(reference_names: dict[str, str]) -> None:
    """Names are documented where users import them (trionos.Hub), never under a private module.

    (The inventory also lists each class's canonical private path, pointing at the public entry.)
    """
    private = re.compile(r"trionos(\.testing)?\._[a-z]")
    assert not sorted(anchor for anchor in reference_names.values() if private.match(anchor))
    assert reference_names["trionos._hub.Hub"] == "trionos.Hub"


def test_a_deprecated_name_warns_and_resolves_to_its_replacement() -> None:
    """A deprecated alias still works for one release, warning with the name to use instead."""
    getattr_ = module_getattr("trionos", {}, {"OldHub": ("Hub", "0.3")})
    with pytest.warns(trionos.TrionosDeprecationWarning, match=r"trionos\.OldHub .* 0\.3; use trionos\.Hub"):
        assert getattr_("OldHub") is trionos.Hub
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        getattr_("Nothing")
