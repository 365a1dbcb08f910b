"""trionos.testing's public surface: a sorted, complete ``__all__`` and lazy hypothesis."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import trionos.testing


def test_all_is_sorted_and_complete() -> None:
    """trionos.testing.__all__ is sorted, every name resolves, and no public name is left out."""
    names = trionos.testing.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(trionos.testing, name) is not None
    helpers = {"annotations", "importlib", "TYPE_CHECKING", "Any"}  # what the module itself imports
    # ("@..." names are pytest's: it rewrites the asserts of packages that register a pytest plugin.)
    public = {n for n in vars(trionos.testing) if not n.startswith(("_", "@"))} - helpers
    assert public <= set(names)


def test_importing_the_kit_does_not_import_hypothesis() -> None:
    """hypothesis is loaded only when a strategy or the state machine is used."""
    code = "import sys, trionos.testing; assert 'hypothesis' not in sys.modules; trionos.testing.messages"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_module_of_the_kit_imports_another_modules_private_name() -> None:
    """Each module of trionos.testing uses only the public names of the others (one job each)."""
    package = Path(trionos.testing.__file__).parent
    borrowed = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                borrowed += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert borrowed == []
