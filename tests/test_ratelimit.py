"""The per-connection token bucket: pure, synchronous, property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trionos._ratelimit import RateLimit, RateVerdict

PROPERTY = settings(derandomize=True, database=None, max_examples=200, deadline=None)

limits = st.builds(
    RateLimit,
    rate=st.floats(0.1, 1000.0),
    burst=st.integers(1, 50),
    close_after=st.integers(1, 100),
)
#: Gaps between arrivals, in seconds (0: several messages at the same instant).
gaps = st.lists(st.one_of(st.just(0.0), st.floats(0.0, 2.0)), min_size=1, max_size=200)


def arrivals(start: float, steps: list[float]) -> list[float]:
    times, now = [], start
    for step in steps:
        now += step
        times.append(now)
    return times


@PROPERTY
@given(limit=limits, start=st.floats(0.0, 1e6), steps=gaps)
def test_no_window_admits_more_than_burst_plus_rate_times_its_length(
    limit: RateLimit, start: float, steps: list[float]
) -> None:
    """Between any two arrivals, accepted messages <= burst + rate * elapsed."""
    times = arrivals(start, steps)
    bucket = limit.bucket(start)
    accepted = [t for t in times if bucket.take(t) is RateVerdict.ACCEPT]
    for i, first in enumerate(accepted):
        for j in range(i, len(accepted)):
            count = j - i + 1
            assert count <= limit.burst + limit.rate * (accepted[j] - first) + count * 1e-6


@PROPERTY
@given(limit=limits, start=st.floats(0.0, 1e6), count=st.integers(1, 300))
def test_a_client_that_keeps_to_the_rate_is_never_refused(limit: RateLimit, start: float, count: int) -> None:
    """Messages spaced 1/rate apart (after any burst allowance) are all accepted."""
    bucket = limit.bucket(start)
    interval = 1.0 / limit.rate * (1 + 1e-9)
    assert all(bucket.take(start + i * interval) is RateVerdict.ACCEPT for i in range(count))


@PROPERTY
@given(limit=limits, start=st.floats(0.0, 1e6))
def test_a_full_bucket_admits_exactly_a_burst_at_once(limit: RateLimit, start: float) -> None:
    """`burst` messages at the same instant are accepted, the next one is not."""
    bucket = limit.bucket(start)
    assert [bucket.take(start) for _ in range(limit.burst)] == [RateVerdict.ACCEPT] * limit.burst
    assert bucket.take(start) is not RateVerdict.ACCEPT


@PROPERTY
@given(limit=limits, start=st.floats(0.0, 1e6), steps=gaps)
def test_close_comes_exactly_after_close_after_refusals_in_a_row(
    limit: RateLimit, start: float, steps: list[float]
) -> None:
    """The verdict is CLOSE once close_after messages in a row were refused, never before; an
    accepted message starts the count again."""
    bucket = limit.bucket(start)
    in_a_row = 0
    for t in arrivals(start, steps):
        verdict = bucket.take(t)
        if verdict is RateVerdict.ACCEPT:
            in_a_row = 0
        else:
            in_a_row += 1
            assert (verdict is RateVerdict.CLOSE) == (in_a_row >= limit.close_after)


@PROPERTY
@given(limit=limits, start=st.floats(0.0, 1e6), steps=gaps)
def test_retry_after_is_when_the_next_message_is_accepted(
    limit: RateLimit, start: float, steps: list[float]
) -> None:
    """Waiting retry_after() seconds is enough, and (when it is over a millisecond) necessary."""
    bucket = limit.bucket(start)
    now = start
    for now in arrivals(start, steps):
        bucket.take(now)
    wait = bucket.retry_after(now)
    if wait > 1e-3:
        probe = limit.bucket(0.0)
        probe.tokens, probe.updated = bucket.tokens, bucket.updated
        assert probe.take(now + wait * 0.9) is not RateVerdict.ACCEPT
    assert bucket.take(now + wait) is RateVerdict.ACCEPT


def test_a_flooding_client_is_refused_then_closed() -> None:
    """10 per second, bursts of 3, close after 4: a flood at one instant goes A A A R R R C."""
    bucket = RateLimit(rate=10.0, burst=3, close_after=4).bucket(100.0)
    verdicts = [bucket.take(100.0).value for _ in range(7)]
    assert verdicts == ["accept"] * 3 + ["refuse"] * 3 + ["close"]
    assert bucket.take(100.1) is RateVerdict.ACCEPT  # a token came back: the client may go on


def test_time_going_backwards_adds_no_tokens() -> None:
    """A clock that steps back does not refill the bucket."""
    bucket = RateLimit(rate=1.0, burst=1).bucket(10.0)
    assert bucket.take(10.0) is RateVerdict.ACCEPT
    assert bucket.take(5.0) is RateVerdict.REFUSE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": 0}, "rate must be a positive finite number, got 0"),
        ({"rate": float("inf")}, "rate must be a positive finite number, got inf"),
        ({"burst": 0}, "burst must be an integer of at least 1, got 0"),
        ({"burst": 2.5}, "burst must be an integer of at least 1, got 2.5"),
        ({"close_after": True}, "close_after must be an integer of at least 1, got True"),
    ],
)
def test_limits_are_validated(options: dict[str, object], message: str) -> None:
    """Nonsense limits fail when built, saying what was expected and what came."""
    with pytest.raises(ValueError, match=message):
        RateLimit(**options)  # type: ignore[arg-type]
