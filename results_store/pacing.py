"""Pacing of the finalizer's archiving, so that it yields to live traffic.

Archiving a backlog at full speed took whole cores away from the gateways and
workers for seconds at a time (issue 9: the group scenario's p99 went from
56-86 ms to 430-870 ms while the finalizer ran). A ``Pacer`` pauses after each
segment so that archiving runs for about ``duty`` of the wall time, with one
limit: the pass's whole backlog must still be done by its deadline (the pass
interval) at the rate measured so far. Pauses shrink, down to none, when the
backlog needs the time, so a paced finalizer never archives less per interval
than an unpaced one could have within that interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    """The pacing of one pass (or of one batch archived on its own)."""

    def __init__(self, duty: float, spread_s: float, backlog: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"duty must be in (0, 1], not {duty}")
        self.duty = duty
        self.clock = clock
        self.sleep = sleep
        self.deadline = clock() + spread_s
        # Events still to archive in this pass, over every batch it covers.
        self.backlog = max(0, backlog)
        self.paused_s = 0.0

    def skip(self, events: int) -> None:
        """Events counted in the backlog that this pass will not archive after all."""
        self.backlog = max(0, self.backlog - max(0, events))

    async def after_segment(self, spent_s: float, copied: int) -> float:
        """A segment of ``copied`` events took ``spent_s``: pause if there is time
        to, and return the pause."""
        self.skip(copied)
        if self.duty >= 1 or not self.backlog or copied <= 0:
            return 0.0
        wanted = spent_s * (1 / self.duty - 1)
        # What the rest of the backlog needs at this segment's rate.
        needed = spent_s * self.backlog / copied
        pause = min(wanted, self.deadline - self.clock() - needed)
        if pause <= 0:
            return 0.0
        self.paused_s += pause
        await self.sleep(pause)
        return pause
