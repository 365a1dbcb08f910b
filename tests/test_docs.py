"""The docs' code blocks: every Python block is tagged so that Sybil runs it (docs/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)
# Pygments' other names for Python: a block tagged with one would render as Python but not run.
PYTHON_ALIASES = {"py", "py3", "python3", "pycon", "ipython", "{code-block}", "{code}", "{sourcecode}"}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(DOCS)))
def test_python_blocks_are_tagged_python(page: Path) -> None:
    """A Python block says ```python (run by Sybil, or skipped explicitly), never another alias."""
    languages = re.findall(r"^\s*```(\S*)", page.read_text(), re.M)
    assert not PYTHON_ALIASES & set(languages), f"{page.name}: tag Python blocks as ```python"
