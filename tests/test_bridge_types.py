"""The documented trio-websocket bridge usage type-checks under mypy --strict, with no ignore."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "trio-websocket.md"


def documented_bridge_program() -> str:
    """The first Python block of docs/trio-websocket.md (the bridge's step 1)."""
    match = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, f"no Python block in {DOC}"
    return match.group(1)


def test_the_documented_bridge_usage_passes_mypy_strict(tmp_path: Path) -> None:
    """hub.client takes a BridgedWebSocket: the docs' program passes mypy --strict as shown."""
    program = documented_bridge_program()
    assert "bridge_trio_websocket" in program and "hub.client(ws)" in program
    assert "type: ignore" not in program
    path = tmp_path / "bridge_usage.py"
    path.write_text(program)
    # In a process of its own: mypy raises the interpreter's recursion limit for good.
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"), str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
