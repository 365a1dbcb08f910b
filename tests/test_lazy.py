"""Lazy public names: imported on first use, cached, and listed like every other name."""

from __future__ import annotations

import sys

import pytest

import trionos
import trionos.testing
from trionos._lazy import module_getattr


def test_lazy_name_resolves_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazy name is imported from its private module on first use, then kept on the package."""
    monkeypatch.delattr(trionos, "RedisBroker", raising=False)
    getattr_ = module_getattr("trionos", {"RedisBroker": "._redis"})
    assert getattr_("RedisBroker") is sys.modules["trionos._redis"].RedisBroker
    assert vars(trionos)["RedisBroker"] is sys.modules["trionos._redis"].RedisBroker


def test_lazy_names_of_both_packages_are_public() -> None:
    """Every lazy name is in ``__all__`` and resolves to an object of that name."""
    for package in (trionos, trionos.testing):
        lazy = vars(package)["_LAZY"]
        assert set(lazy) <= set(package.__all__)
        for name in lazy:
            assert getattr(package, name).__name__ == name


def test_dir_of_the_test_kit_lists_its_public_names() -> None:
    """``dir(trionos.testing)`` shows the public names, including those not imported yet."""
    assert dir(trionos.testing) == sorted(trionos.testing.__all__)


def test_a_deprecated_name_warns_at_the_caller() -> None:
    """The deprecation warning points at the line that used the old name."""
    getattr_ = module_getattr("trionos", {}, {"OldHub": ("Hub", "0.3")})
    with pytest.warns(trionos.TrionosDeprecationWarning) as caught:
        getattr_("OldHub")
    assert caught[0].filename == __file__


def test_unknown_name_raises_attribute_error_naming_the_package() -> None:
    """An unknown attribute is an AttributeError that names the package, as for any module."""
    with pytest.raises(AttributeError, match=r"module 'trionos\.testing' has no attribute 'nothing'"):
        trionos.testing.nothing  # noqa: B018
