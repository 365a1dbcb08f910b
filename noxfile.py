"""The suite on every supported Python: ``make test-all`` (or ``nox``; ``nox -s tests-3.12`` for one).

Each session installs trionos from a built wheel with its test and redis extras into its own
virtualenv under .nox/, then runs the suite (from the source tree, as ``make test`` does) and the
example tests (against the installed wheel). The interpreters are found on
PATH (``python3.12``) or, where pyenv installed them, in ``$(pyenv root)/versions/3.12.*/bin``.
redis-server and chromium come from the system, as for ``make test`` (which installs them).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nox

PYTHONS = ["3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True


def _pyenv_root() -> Path | None:
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    try:
        found = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(found.stdout.strip())


def _add_pyenv_interpreters() -> None:
    """Put each pyenv-installed ``pythonX.Y`` of PYTHONS on PATH, where nox looks for it.

    (pyenv's own shims answer only for the versions selected with ``pyenv global``/``local``.)
    """
    root = _pyenv_root()
    if root is None:
        return
    found = []
    for version in PYTHONS:
        candidates = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
        if candidates:
            found.append(str(candidates[-1].parent))
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_add_pyenv_interpreters()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The suite, and the example tests against trionos installed from a wheel."""
    session.install(".[test,redis]")
    # `python -m`: the suite imports its helpers as `tests.*`, from the working directory.
    # The longer property runs (tests/conftest.py): e.g. the fast path's differential test runs
    # 2,000 examples per property instead of 400.
    session.run(
        "python", "-m", "pytest", "-q", *session.posargs, env={"TRIONOS_HYPOTHESIS_PROFILE": "thorough"}
    )
    session.chdir("examples/tests")
    session.run("pytest", "-q", ".")
