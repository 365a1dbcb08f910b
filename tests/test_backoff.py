"""The reconnect schedule (pure): bounds, growth, reset, reproducibility, validation."""

from __future__ import annotations

import ast
import inspect
import math
import random

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionos import _backoff
from trionos._backoff import JITTERS, Backoff

initials = st.floats(min_value=1e-3, max_value=100.0)
factors = st.floats(min_value=1.0, max_value=10.0)
jitters = st.sampled_from(JITTERS)
seeds = st.integers(min_value=0, max_value=2**32)


@st.composite
def schedules(draw: st.DrawFn) -> Backoff:
    """Any valid Backoff, with a seeded random source."""
    initial = draw(initials)
    maximum = draw(st.floats(min_value=initial, max_value=1e4))
    return Backoff(
        initial=initial,
        maximum=maximum,
        factor=draw(factors),
        jitter=draw(jitters),
        random=random.Random(draw(seeds)),
    )


class Fixed:
    """A random source that always returns ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@given(schedules(), st.integers(min_value=1, max_value=60))
def test_every_delay_lies_within_its_bound(backoff: Backoff, count: int) -> None:
    """Delay n lies in [0, min(maximum, initial * factor**n)] (and in its upper half with equal jitter)."""
    for n in range(count):
        delay = backoff.next_delay()
        bound = min(backoff.maximum, backoff.initial * backoff.factor**n)
        low = bound / 2 if backoff.jitter == "equal" else 0.0
        assert low <= delay <= bound
        if backoff.jitter == "none":
            assert delay == bound
    assert backoff.attempts == count


@given(schedules(), st.integers(min_value=0, max_value=200))
def test_bound_grows_geometrically_then_caps(backoff: Backoff, n: int) -> None:
    """The bound multiplies by factor each attempt until it reaches maximum, then stays there."""
    this, following = backoff.bound(n), backoff.bound(n + 1)
    assert backoff.initial <= this <= following <= backoff.maximum
    if following < backoff.maximum:
        assert following == pytest.approx(this * backoff.factor)
    if this == backoff.maximum:
        assert following == backoff.maximum


def test_default_schedule_doubles_from_one_second_up_to_thirty() -> None:
    """The default bounds are 1, 2, 4, 8, 16, then 30 s for ever."""
    backoff = Backoff()
    assert [backoff.bound(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


@given(st.integers(min_value=0, max_value=10**12))
def test_huge_attempt_numbers_do_not_overflow(n: int) -> None:
    """However many attempts have been made, the bound is finite and at most maximum."""
    bound = Backoff(initial=0.5, maximum=60.0, factor=3.0).bound(n)
    assert 0.5 <= bound <= 60.0


def test_full_jitter_scales_the_random_value_by_the_bound() -> None:
    """Full jitter waits random() * bound: 0 and 1 give the two ends of the window."""
    assert Backoff(initial=2.0, random=Fixed(0.0)).next_delay() == 0.0
    assert Backoff(initial=2.0, random=Fixed(1.0)).next_delay() == 2.0
    assert Backoff(initial=2.0, random=Fixed(0.25)).next_delay() == 0.5


@given(schedules(), st.integers(min_value=0, max_value=20))
def test_reset_restarts_the_schedule(backoff: Backoff, before: int) -> None:
    """After reset() the attempt count is 0 and the delays start again from initial."""
    exact = attrs.evolve(backoff, jitter="none")
    for _ in range(before):
        backoff.next_delay()
        exact.next_delay()
    backoff.reset()
    exact.reset()
    assert backoff.attempts == exact.attempts == 0
    assert [exact.next_delay() for _ in range(3)] == [backoff.bound(0), backoff.bound(1), backoff.bound(2)]
    assert exact.bound(0) == backoff.initial
    assert backoff.next_delay() <= backoff.initial


@given(schedules(), seeds, st.integers(min_value=1, max_value=30))
def test_same_seed_gives_same_delays(backoff: Backoff, seed: int, count: int) -> None:
    """Two schedules with equal settings and equally seeded random sources give the same delays."""
    first = attrs.evolve(backoff, random=random.Random(seed))
    second = attrs.evolve(backoff, random=random.Random(seed))
    assert [first.next_delay() for _ in range(count)] == [second.next_delay() for _ in range(count)]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"initial": 0}, ValueError, "initial must be a positive, finite number of seconds, got 0"),
        ({"initial": -1.0}, ValueError, "initial must be a positive"),
        ({"initial": math.nan}, ValueError, "initial must be a positive"),
        ({"initial": "1"}, TypeError, "initial must be a number of seconds, got '1'"),
        ({"maximum": math.inf}, ValueError, "maximum must be a positive, finite"),
        ({"initial": 5.0, "maximum": 2.0}, ValueError, "maximum must be at least initial (5.0), got 2.0"),
        ({"factor": 0.5}, ValueError, "factor must be a finite number of at least 1, got 0.5"),
        ({"factor": True}, TypeError, "factor must be a number, got True"),
        ({"jitter": "half"}, ValueError, "jitter must be one of 'full', 'equal', 'none', got 'half'"),
        ({"random": 42}, TypeError, "random must have a random() method"),
    ],
)
def test_invalid_settings_are_rejected_with_a_clear_error(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    """Each invalid setting raises ValueError or TypeError naming the setting and the value given."""
    with pytest.raises(error) as info:
        Backoff(**options)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_a_random_source_outside_zero_to_one_is_an_error() -> None:
    """A random() result outside [0, 1] raises ValueError and counts no attempt."""
    backoff = Backoff(random=Fixed(1.5))
    with pytest.raises(ValueError, match=r"must return a float in \[0, 1\], got 1.5"):
        backoff.next_delay()
    assert backoff.attempts == 0


def test_settings_are_frozen_but_the_schedule_advances() -> None:
    """Assigning a setting fails; next_delay() and reset() still work."""
    backoff = Backoff()
    with pytest.raises(attrs.exceptions.FrozenAttributeError):
        backoff.initial = 2.0
    backoff.next_delay()
    assert backoff.attempts == 1


def test_negative_attempt_has_no_bound() -> None:
    """bound(-1) raises ValueError."""
    with pytest.raises(ValueError, match="attempt must be 0 or more, got -1"):
        Backoff().bound(-1)


def test_module_is_pure() -> None:
    """_backoff imports nothing from trio."""
    tree = ast.parse(inspect.getsource(_backoff))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name == "trio" or name.startswith("trio.")}
