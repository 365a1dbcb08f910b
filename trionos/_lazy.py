"""Module attributes resolved on first access (PEP 562): optional extras and deprecated aliases.

One implementation for ``trionos`` and ``trionos.testing``. A *lazy* name is imported from its
private module the first time it is used, so importing the package does not need an optional extra
(coredis, prometheus_client, trio-websocket, hypothesis). A *deprecated* name still works for one
release but warns with :class:`TrionosDeprecationWarning`, naming its replacement.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["TrionosDeprecationWarning", "module_getattr"]


class TrionosDeprecationWarning(DeprecationWarning):
    """A trionos name or argument that still works but will be removed in the next release."""


def module_getattr(
    package: str,
    lazy: Mapping[str, str],
    deprecated: Mapping[str, tuple[str, str]] | None = None,
) -> Callable[[str], Any]:
    """Build a module ``__getattr__`` for *package*.

    Args:
        package: the importing package's ``__name__`` (relative module names resolve against it).
        lazy: public name -> private module (``"._redis"``) that defines it.
        deprecated: old name -> ``(new public name, version it goes away in)``; the new name is
            looked up on the package itself, so it may be lazy too.
    """
    renamed = dict(deprecated or {})

    def __getattr__(name: str) -> Any:
        package_module = importlib.import_module(package)
        if name in renamed:
            new, removal = renamed[name]
            warnings.warn(
                f"{package}.{name} is deprecated and will be removed in {removal}; use {package}.{new}",
                TrionosDeprecationWarning,
                stacklevel=2,
            )
            return getattr(package_module, new)
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        # Cache it, so the import (and this function) runs once per name.
        setattr(package_module, name, value)
        return value

    return __getattr__
