"""Pacing of the finalizer's archiving, so that it yields to live traffic.

Archiving a backlog at full speed took whole cores away from the gateways and
workers for seconds at a time (issue 9: the group scenario's p99 went from
56-86 ms to 430-870 ms while the finalizer ran). A ``Pacer`` pauses after each
segment so that archiving runs for about ``duty`` of the wall time, with one
limit: the pass's whole backlog, counted when it began, must still be done by its
deadline (one pass interval after it began) at the rate the pass has shown so
far, counting everything it did besides copying segments (snapshots, trims, gap
fills). Pauses shrink, down to none, when the backlog needs the time. Events
written after the pass began are left to the next pass, so that a pass's work is
known when it starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def check_duty(duty: float) -> float:
    if not 0 < duty <= 1:
        raise ValueError(f"duty must be in (0, 1], not {duty}")
    return duty


class Pacer:
    """The pacing of one pass (or of one batch archived on its own).

    The pass announces each batch with ``begin(counted)`` (its share of the backlog
    counted when the pass began), the archiver reports what it will archive of it
    with ``found(events)`` and every segment with ``after_segment(copied)``, and
    the pass closes the batch with ``end()``. A batch archived on its own gets a
    pacer of its own, its backlog given at once."""

    def __init__(self, duty: float, spread_s: float, backlog: int = 0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.duty = check_duty(duty)
        self.clock = clock
        self.sleep = sleep
        self.started = clock()
        self.deadline = self.started + spread_s
        # Events still to archive in this pass, over every batch it covers.
        self.backlog = max(0, backlog)
        self.archived = 0
        self.paused_s = 0.0
        self._worked_since = self.started
        # The current batch: its share of the backlog, and what it archived so far.
        self._share = 0
        self._done = 0

    def begin(self, counted: int) -> None:
        self._share, self._done = max(0, counted), 0

    def found(self, events: int) -> None:
        """The current batch has ``events`` to archive in this pass (never more than
        counted: what came after the pass began waits for the next one). Fewer
        than counted frees their time at once."""
        events = max(0, events)
        self.backlog = max(0, self.backlog - max(0, self._share - events))
        self._share = events

    def end(self) -> None:
        """What the current batch was counted for but did not archive (not yet below
        the worker's watermark, or it failed) leaves the backlog."""
        self.backlog = max(0, self.backlog - max(0, self._share - self._done))
        self._share = self._done = 0

    async def after_segment(self, copied: int) -> float:
        """A segment of ``copied`` events is done: pause if there is time to, and
        return the pause."""
        now = self.clock()
        worked = now - self._worked_since
        self.archived += copied
        self._done += copied
        self.backlog = max(0, self.backlog - copied)
        pause = 0.0
        if self.duty < 1 and self.backlog and self.archived:
            # The rest of the backlog at the pass's own rate so far (pauses excluded).
            busy = now - self.started - self.paused_s
            needed = busy * self.backlog / self.archived
            pause = min(worked * (1 / self.duty - 1), self.deadline - now - needed)
        if pause > 0:
            self.paused_s += pause
            await self.sleep(pause)
        else:
            pause = 0.0
        self._worked_since = self.clock()
        return pause
