"""The docs' Python code blocks, run as tests by Sybil (``make test`` collects docs/ too).

Every ```` ```python ```` block in a page is a complete program: it runs as shown, as a script (its
``__name__`` is ``"__main__"``), in a namespace of its own, so that no block depends on an earlier
one; it must be fast, use only loopback, and end by itself. A block that is a fragment (part of a
program, a server that runs until Ctrl-C, a test that pytest would run) says so with a
``<!-- skip: next -->`` line just before it, which Sybil's MyST skip parser reads. Blocks in other
languages (``sh``, ``nginx``, ``ini``, ...) are not run.
"""

from __future__ import annotations

from sybil import Example, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.myst import CodeBlockParser, SkipParser


def run_as_script(example: Example) -> None:
    """Run one block as its own program: a fresh namespace, ``__name__ == "__main__"``.

    (Sybil's own Python evaluator shares one namespace across a page's blocks.) The source is
    padded so that a traceback gives the line in the page.
    """
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    exec(compile(source, example.path, "exec", dont_inherit=True), {"__name__": "__main__"})


pytest_collect_file = Sybil(
    parsers=[SkipParser(), CodeBlockParser(language="python", evaluator=run_as_script)],
    patterns=["*.md"],
    excludes=["_build/*", "_inventories/*"],
).pytest()
