"""``python -m trionos MODULE:ATTR [options]``: the ``trionos`` command (see docs/running.md)."""

from ._cli import main

if __name__ == "__main__":
    main()
