"""The finalizer's pacing (results_store/pacing.py) on a fake clock."""

from __future__ import annotations

import pytest

from results_store.pacing import Pacer

pytestmark = pytest.mark.asyncio


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def archive(pacer: Pacer, clock: FakeClock, segments: int, segment_s: float,
                  per_segment: int) -> float:
    """Archive ``segments`` segments of equal cost; return the busy time."""
    for _ in range(segments):
        clock.now += segment_s
        await pacer.after_segment(segment_s, per_segment)
    return segments * segment_s


@pytest.mark.parametrize("duty", [0.1, 0.25, 0.5])
async def test_with_time_to_spare_archiving_takes_its_duty_of_the_time(duty: float):
    clock = FakeClock()
    pacer = Pacer(duty, 1000.0, 4000, clock=clock, sleep=clock.sleep)
    busy = await archive(pacer, clock, 40, 0.1, 100)
    # No pause after the last segment: 39 of 40 segments are followed by one.
    assert clock.now == pytest.approx(busy + 39 * 0.1 * (1 / duty - 1))
    assert pacer.paused_s == pytest.approx(clock.now - busy)
    assert busy / clock.now == pytest.approx(duty, rel=0.1)
    assert pacer.backlog == 0


async def test_a_pass_ends_by_its_deadline_however_many_batches_share_it():
    # Four batches of 1,000 events, 4 s of work in all, a 5 s interval at duty 0.25:
    # pauses fill only the one spare second, spread over the pass.
    clock = FakeClock()
    pacer = Pacer(0.25, 5.0, 4000, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await archive(pacer, clock, 10, 0.1, 100)
    assert clock.now == pytest.approx(5.0)
    assert pacer.paused_s == pytest.approx(1.0)


async def test_no_pause_when_the_backlog_needs_all_the_time():
    clock = FakeClock()
    pacer = Pacer(0.25, 2.0, 4000, clock=clock, sleep=clock.sleep)
    await archive(pacer, clock, 40, 0.1, 100)
    assert pacer.paused_s == 0 and clock.now == pytest.approx(4.0)


async def test_events_skipped_free_their_time_and_duty_one_never_pauses():
    clock = FakeClock()
    pacer = Pacer(0.5, 3.0, 4000, clock=clock, sleep=clock.sleep)
    await archive(pacer, clock, 10, 0.1, 100)  # 1 s busy, 3,000 left at 1 s per 1,000
    assert pacer.paused_s == 0
    pacer.skip(2500)  # another batch had less than counted
    pacer.skip(-50)  # more than counted: never grows the backlog
    assert pacer.backlog == 500
    await archive(pacer, clock, 4, 0.1, 100)
    assert pacer.paused_s > 0 and clock.now <= 3.0 + 1e-9
    unpaced = Pacer(1.0, 100.0, 1000, clock=clock, sleep=clock.sleep)
    assert await unpaced.after_segment(1.0, 100) == 0


@pytest.mark.parametrize("duty", [0, -0.5, 1.5])
async def test_a_duty_outside_zero_to_one_is_refused(duty: float):
    with pytest.raises(ValueError, match="duty must be in"):
        Pacer(duty, 1.0, 10)
