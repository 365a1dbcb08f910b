"""Run a bench server script with the cyclic GC's first threshold changed.

``python bench/servers/_launch.py --gc-threshold N SCRIPT [ARGS...]`` calls
``gc.set_threshold(N, ...)`` (Python's default first threshold is 700) and then runs ``SCRIPT``
as ``__main__`` with ``ARGS``, exactly as ``python SCRIPT ARGS...`` would. ``bench/run.py
--gc-threshold N`` starts every server this way, so that the effect of the setting can be
compared across servers in one run.
"""

from __future__ import annotations

import gc
import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[1] != "--gc-threshold":
        sys.exit("usage: _launch.py --gc-threshold N SCRIPT [ARGS...]")
    threshold, script = int(sys.argv[2]), sys.argv[3]
    gc.set_threshold(threshold, *gc.get_threshold()[1:])
    sys.argv = [script, *sys.argv[4:]]
    sys.path[0] = str(Path(script).resolve().parent)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
