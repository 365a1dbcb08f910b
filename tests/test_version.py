"""The version is written once, in trionos/__init__.py; the supported Pythons agree everywhere."""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from pathlib import Path

from packaging.version import Version

import trionos

ROOT = Path(trionos.__file__).parent.parent


def test_pyproject_reads_the_version_from_the_package() -> None:
    """pyproject.toml declares no version of its own: setuptools takes ``trionos.__version__``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "trionos.__version__"}


def test_installed_metadata_has_the_package_version() -> None:
    """What pip reports is what ``trionos.__version__`` says (reinstall after changing it)."""
    installed = importlib.metadata.version("trionos")
    assert installed == trionos.__version__, "stale install: rerun `pip install -e .` (or `make clean test`)"


def test_version_is_a_valid_release_number() -> None:
    """``__version__`` is a PEP 440 version, so installers and ``packaging`` can compare it."""
    assert str(Version(trionos.__version__)) == trionos.__version__


def _nox_pythons() -> list[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["PYTHONS"]:
            return list(ast.literal_eval(node.value))
    raise AssertionError("noxfile.py defines no PYTHONS")


def test_supported_pythons_agree() -> None:
    """The classifiers list the Pythons `make test-all` runs, the oldest being ``requires-python``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prefix = "Programming Language :: Python :: "
    classified = [c.removeprefix(prefix) for c in project["classifiers"] if c.startswith(prefix + "3.")]
    tested = _nox_pythons()
    assert classified == tested
    assert project["requires-python"] == f">={tested[0]}"
