"""The version is written once, in trionos/__init__.py, and the package metadata reads it from there."""

from __future__ import annotations

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
    assert importlib.metadata.version("trionos") == trionos.__version__


def test_version_is_a_valid_release_number() -> None:
    """``__version__`` is a PEP 440 version, so installers and ``packaging`` can compare it."""
    assert str(Version(trionos.__version__)) == trionos.__version__
