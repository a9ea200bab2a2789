"""A channel's token bucket: a second's worth as a burst, then the rate."""

from __future__ import annotations

from gateway.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def takes(bucket: TokenBucket, n: int) -> int:
    return sum(bucket.take() for _ in range(n))


def test_a_burst_of_one_second_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock)
    assert takes(bucket, 25) == 10  # the burst, then nothing at the same instant
    clock.now += 0.5
    assert takes(bucket, 25) == 5
    clock.now += 0.05
    assert not bucket.take()  # half a token is not one


def test_a_long_pause_saves_up_at_most_one_second() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock)
    takes(bucket, 10)
    clock.now += 3600
    assert takes(bucket, 100) == 10


def test_take_past_the_limit_spends_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(4, clock)
    takes(bucket, 4)
    assert takes(bucket, 50) == 0
    clock.now += 0.25
    assert bucket.take() and not bucket.take()


def test_a_rate_below_one_still_allows_one_at_a_time() -> None:
    clock = Clock()
    bucket = TokenBucket(0.5, clock)
    assert bucket.take() and not bucket.take()
    clock.now += 1.0
    assert not bucket.take()
    clock.now += 1.0
    assert bucket.take()


def test_zero_means_no_limit() -> None:
    bucket = TokenBucket(0, Clock())
    assert takes(bucket, 100_000) == 100_000


def test_wait_says_how_long_until_the_next_token() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock)
    assert bucket.wait() == 0.0
    takes(bucket, 10)
    assert abs(bucket.wait() - 0.1) < 1e-9
    clock.now += 0.04
    assert abs(bucket.wait() - 0.06) < 1e-9
    clock.now += 0.06
    assert bucket.wait() == 0.0 and bucket.take() and bucket.wait() > 0.0
    assert TokenBucket(0, clock).wait() == 0.0
