"""An app module that needs a package that is not installed (the "missing extra" case)."""

from __future__ import annotations

import trionos_test_package_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401

import trionos


async def handler(req: trionos.Request) -> None:
    """Never served."""
    await req.respond_text("unreachable")
