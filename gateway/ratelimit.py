"""A token bucket: how many commands one channel may send per second."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most one second's worth saved up (a burst of
    ``rate`` after a quiet second). A rate of 0 means no limit."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = max(1.0, rate)
        self._last = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means over the limit (nothing spent)."""
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
