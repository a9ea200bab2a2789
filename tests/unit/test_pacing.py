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


def pacer(clock: FakeClock, duty: float, spread_s: float, backlog: int = 0) -> Pacer:
    return Pacer(duty, spread_s, backlog, clock=clock, sleep=clock.sleep)


async def archive(pacer: Pacer, clock: FakeClock, events: int, *, counted: int | None = None,
                  per_segment: int = 100, segment_s: float = 0.1,
                  overhead_s: float = 0.0) -> None:
    """One batch as the archiver goes through it: found, segments, end."""
    pacer.begin(events if counted is None else counted)
    clock.now += overhead_s  # snapshots, watermark, trim: outside any segment
    pacer.found(events)
    for _ in range(events // per_segment):
        clock.now += segment_s
        await pacer.after_segment(per_segment)
    pacer.end()


@pytest.mark.parametrize("duty", [0.1, 0.25, 0.5])
async def test_with_time_to_spare_archiving_takes_its_duty_of_the_time(duty: float):
    clock = FakeClock()
    paced = pacer(clock, duty, 1000.0, 4000)
    await archive(paced, clock, 4000)
    busy = 4.0
    # No pause after the last segment: 39 of 40 segments are followed by one.
    assert clock.now == pytest.approx(busy + 39 * 0.1 * (1 / duty - 1))
    assert paced.paused_s == pytest.approx(clock.now - busy)
    assert busy / clock.now == pytest.approx(duty, rel=0.1)
    assert paced.backlog == 0


async def test_a_pass_ends_by_its_deadline_however_many_batches_share_it():
    # Four batches of 1,000 events, 4 s of work in all, a 5 s interval at duty 0.25:
    # the pauses take only the one spare second, spread over the pass.
    clock = FakeClock()
    paced = pacer(clock, 0.25, 5.0, 4000)
    for _ in range(4):
        await archive(paced, clock, 1000)
    assert clock.now == pytest.approx(5.0)
    assert paced.paused_s == pytest.approx(1.0)


async def test_work_outside_segments_counts_toward_the_rate():
    # 0.25 s per batch besides its segments: 5 s of work in a 5.5 s interval.
    clock = FakeClock()
    paced = pacer(clock, 0.25, 5.5, 4000)
    for _ in range(4):
        await archive(paced, clock, 1000, overhead_s=0.25)
    assert paced.paused_s > 0
    # The last batch's overhead was not foreseen: at most that much late.
    assert clock.now <= 5.5 + 0.25 + 1e-9


async def test_no_pause_when_the_backlog_needs_all_the_time():
    clock = FakeClock()
    paced = pacer(clock, 0.25, 2.0, 4000)
    await archive(paced, clock, 4000)
    assert paced.paused_s == 0 and clock.now == pytest.approx(4.0)


async def test_a_batch_archiving_less_than_counted_frees_its_time():
    clock = FakeClock()
    paced = pacer(clock, 0.5, 3.0, 4000)
    await archive(paced, clock, 1000)  # 1 s busy, 3,000 left at 1 s per 1,000: no pause
    assert paced.paused_s == 0
    await archive(paced, clock, 500, counted=3000)  # the rest: below the watermark only
    assert paced.backlog == 0
    assert paced.paused_s > 0 and clock.now <= 3.0 + 1e-9
    unpaced = pacer(clock, 1.0, 100.0, 1000)
    clock.now += 1.0
    assert await unpaced.after_segment(100) == 0


@pytest.mark.parametrize("duty", [0, -0.5, 1.5])
async def test_a_duty_outside_zero_to_one_is_refused(duty: float):
    with pytest.raises(ValueError, match="duty must be in"):
        Pacer(duty, 1.0, 10)
