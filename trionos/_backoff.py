"""The reconnect schedule: exponential backoff with jitter, as a pure object (never imports trio).

Attempt ``n`` (counting from 0 since the last reset) waits at most::

    bound(n) = min(maximum, initial * factor**n)

and, with the default *full jitter*, a uniformly random time in ``[0, bound(n)]``. Full jitter spreads
the clients of a server that just restarted over the whole window instead of letting them return in
synchronised waves (see "Exponential Backoff And Jitter" on the AWS Architecture Blog).

The random source is passed in, so a test (or a simulation) can seed it and replay the same delays.
Nothing here sleeps: :func:`trionos.run_reconnecting` asks for a delay and sleeps with ``trio.sleep``.
"""

from __future__ import annotations

import math
from random import Random
from typing import Literal, Protocol

import attrs

from ._options import positive_seconds

__all__ = ["JITTERS", "Backoff", "Jitter", "RandomSource"]

Jitter = Literal["full", "equal", "none"]

#: The jitter strategies: ``"full"`` waits ``uniform(0, bound)``, ``"equal"`` waits
#: ``bound / 2 + uniform(0, bound / 2)`` and ``"none"`` waits exactly ``bound``.
JITTERS: tuple[Jitter, ...] = ("full", "equal", "none")


class RandomSource(Protocol):
    """What :class:`Backoff` needs from a random source: ``random.Random(seed)`` is one."""

    def random(self) -> float:
        """A number in ``[0, 1]``."""
        ...


def _at_least_initial(instance: Backoff, attribute: attrs.Attribute[float], value: float) -> None:
    positive_seconds(instance, attribute, value)
    # attrs runs validators once every field is set, so ``initial`` is already there.
    if value < instance.initial:
        raise ValueError(f"Backoff maximum must be at least initial ({instance.initial!r}), got {value!r}")


def _factor(instance: Backoff, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Backoff factor must be a number, got {value!r}")
    if not (1 <= value < math.inf):
        raise ValueError(f"Backoff factor must be a finite number of at least 1, got {value!r}")


def _jitter(instance: Backoff, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in JITTERS:
        raise ValueError(f"Backoff jitter must be one of {', '.join(map(repr, JITTERS))}, got {value!r}")


def _random_source(instance: Backoff, attribute: attrs.Attribute[RandomSource], value: RandomSource) -> None:
    if not callable(getattr(value, "random", None)):
        raise TypeError(
            f"Backoff random must have a random() method returning a float in [0, 1], got {value!r}"
        )


_frozen = attrs.setters.frozen


@attrs.define
class Backoff:
    """An exponential backoff schedule with jitter: ask :meth:`next_delay` after each failure.

    ``Backoff(initial=1.0, maximum=30.0, factor=2.0, jitter="full", random=random.Random())``

    The ``n``-th delay since the last :meth:`reset` (``n`` from 0) lies in
    ``[0, min(maximum, initial * factor**n)]``: with the defaults, up to 1, 2, 4, 8, 16 s, then up to
    30 s for every further attempt. ``jitter`` chooses where in that window: ``"full"`` waits
    ``uniform(0, bound)``, ``"equal"`` waits ``bound / 2 + uniform(0, bound / 2)`` and ``"none"``
    waits exactly ``bound``.

    The settings are fixed once created (assigning one raises ``attrs.exceptions.FrozenAttributeError``);
    the only state is the attempt counter, so give each reconnecting client its own ``Backoff``.
    ``random`` is anything with a ``random()`` method returning a float in ``[0, 1]``, e.g.
    ``random.Random(42)`` for a reproducible schedule; the default is a fresh, unseeded
    ``random.Random()``, never the module-level one.

    Bounds: every delay is finite and at most ``maximum``, however many attempts have been made
    (``factor**n`` is never allowed to overflow).

    Args:
        initial: the first delay's bound, in seconds (1).
        maximum: the longest delay, in seconds (30); at least *initial*.
        factor: how much the bound grows per attempt (2); at least 1.
        jitter: ``"full"``, ``"equal"`` or ``"none"``.
        random: the random source.

    Raises:
        TypeError: a setting has the wrong type, saying which and what was given.
        ValueError: a setting is out of range, saying which and what was given.
    """

    initial: float = attrs.field(default=1.0, validator=positive_seconds, on_setattr=_frozen)
    maximum: float = attrs.field(default=30.0, validator=_at_least_initial, on_setattr=_frozen)
    factor: float = attrs.field(default=2.0, validator=_factor, on_setattr=_frozen)
    jitter: Jitter = attrs.field(default="full", validator=_jitter, on_setattr=_frozen)
    random: RandomSource = attrs.field(
        factory=Random, validator=_random_source, repr=False, on_setattr=_frozen
    )
    _attempts: int = attrs.field(default=0, init=False)

    @property
    def attempts(self) -> int:
        """How many delays :meth:`next_delay` has handed out since the last :meth:`reset`."""
        return self._attempts

    def bound(self, attempt: int) -> float:
        """The longest delay an attempt may get: ``min(maximum, initial * factor**attempt)``.

        Never overflows: far past the cap it is ``maximum``.

        Args:
            attempt: the attempt's number since the last :meth:`reset`, from 0.

        Returns:
            The bound, in seconds.

        Raises:
            ValueError: *attempt* is negative.
        """
        if attempt < 0:
            raise ValueError(f"attempt must be 0 or more, got {attempt!r}")
        try:
            grown = self.initial * float(self.factor) ** attempt
        except OverflowError:
            # Far past the cap: the minimum is the cap itself.
            return self.maximum
        return min(self.maximum, grown)

    def next_delay(self) -> float:
        """Count an attempt and return the delay before it.

        Returns:
            The delay, in seconds: at most :meth:`bound` of this attempt.

        Raises:
            ValueError: the random source returned a number outside ``[0, 1]`` (nothing is
                counted then).
        """
        bound = self.bound(self._attempts)
        if self.jitter == "none":
            delay = bound
        else:
            u = self.random.random()
            if not (0.0 <= u <= 1.0):
                raise ValueError(f"Backoff random source must return a float in [0, 1], got {u!r}")
            half = bound / 2
            delay = u * bound if self.jitter == "full" else half + u * half
        self._attempts += 1
        return delay

    def reset(self) -> None:
        """Start the schedule again from ``initial`` (call it once a connection has proved stable)."""
        self._attempts = 0
