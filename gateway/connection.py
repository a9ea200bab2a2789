"""One participant socket: who it is, what it listens to, and its capped outbound queue.

Frames are queued by the fan-out (never awaited there) and written by the
connection's own sender task, so a client that stops reading only fills its own
queue. When the queue would pass its byte cap, the queued changes are dropped
and the next frame the client gets is a full state marked as a resync; acks and
failures are small and are kept. A connection that overflows too often within
a window is closed.

Answers (acks, fails, errors, pongs) are never dropped, so they are bounded
another way: once ``max_unsent_answers`` of them wait unwritten (the client
sends but does not read), the channel stops reading the client's messages until
half of them have been taken to be written. The client's further sends then wait
in TCP, and the answers kept for it stay bounded (commands read and not yet
answered are bounded by the channel's rate instead: gateway/channel.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.view import BatchView

Send = Callable[[str], Awaitable[None]]

CLOSE_OVERFLOW = 4408
CLOSE_BATCH_CLOSED = 4410


class Connection:
    def __init__(
        self,
        conn_id: str,
        run: str,
        view: BatchView,
        scopes: set[str],
        send: Send,
        cap_bytes: int,
        overflows_before_close: int,
        overflow_window_s: float,
        max_unsent_answers: int,
    ) -> None:
        self.id = conn_id
        self.run = run
        self.view = view
        self.scopes = scopes
        self._send = send
        self._cap = cap_bytes
        self._max_overflows = overflows_before_close
        self._window = overflow_window_s
        # (frame, essential): essential frames (acks, fails) survive an overflow.
        self._queue: deque[tuple[str, bool]] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._overflows: deque[float] = deque()
        self.needs_resync = False
        self.close_code: int | None = None
        self.close_reason = "overflow"
        # Set by ``finish``: close with this code once the queue is written.
        self._finish_code: int | None = None
        self.frames_sent = 0
        self.resyncs = 0
        # Essential frames queued and not yet written; reading pauses at the cap. The
        # event to wait on exists only during a pause (10,000 idle channels would
        # otherwise hold 10,000 of them: about 1 KB each with its deque).
        self._answers = 0
        self._answers_cap = max(1, max_unsent_answers)
        self._paused = False
        self._resumed: asyncio.Event | None = None

    def push(self, frame: str, essential: bool = False) -> None:
        if self.close_code is not None:
            return
        if self.needs_resync and not essential:
            return  # the coming resync covers it
        # The cap bounds the backlog: one frame into an empty queue always fits,
        # so a large coalesced frame is never undeliverable.
        if not essential and self._queue and self._queued + len(frame) > self._cap:
            self._overflow()
        else:
            self._queue.append((frame, essential))
            self._queued += len(frame)
            if essential:
                self._answers += 1
                if self._answers >= self._answers_cap:
                    self._paused = True
        self._wake.set()

    def _overflow(self) -> None:
        kept = deque(item for item in self._queue if item[1])
        self._queue = kept
        self._queued = sum(len(f) for f, _ in kept)
        self.needs_resync = True
        now = time.monotonic()
        self._overflows.append(now)
        while self._overflows and now - self._overflows[0] > self._window:
            self._overflows.popleft()
        if len(self._overflows) >= self._max_overflows:
            self.close_code = CLOSE_OVERFLOW

    @property
    def may_read(self) -> bool:
        """False while too many answers wait unwritten (see the module's docstring)."""
        return not self._paused

    async def answers_written(self) -> None:
        """Return once reading the client's messages may go on."""
        if not self._paused:
            return
        if self._resumed is None:
            self._resumed = asyncio.Event()
        await self._resumed.wait()

    def finish(self, code: int, reason: str) -> None:
        """Write what is queued (the error frame saying why), then close."""
        self._finish_code = code
        self.close_reason = reason
        self._wake.set()

    def request_resync(self) -> None:
        """The client asked (or the gateway decided) to send full state again."""
        self._queue = deque(item for item in self._queue if item[1])
        self._queued = sum(len(f) for f, _ in self._queue)
        self.needs_resync = True
        self._wake.set()

    async def send_queued(self, most: int | None = None) -> None:
        """Write what is queued now (at most ``most`` frames), in order, up to a
        pending resync or close."""
        sent = 0
        while self._queue and (most is None or sent < most):
            if self.needs_resync or self.close_code is not None:
                self._wake.set()
                break
            frame, essential = self._queue.popleft()
            self._queued -= len(frame)
            if essential:
                self._answers -= 1
                if self._paused and self._answers <= self._answers_cap // 2:
                    self._paused = False
                    if self._resumed is not None:
                        self._resumed.set()
                        self._resumed = None
            await self._send(frame)
            self.frames_sent += 1
            sent += 1

    async def run_sender(self) -> None:
        """Write queued frames until the connection closes; returns the close code if any."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.close_code is not None:
                return
            if self.needs_resync:
                # Built synchronously from the current projection: every change
                # pushed after this point is newer than the state we send.
                frames = self.view.state_frames(self.scopes, resync=True)
                self.needs_resync = False
                self.resyncs += 1
                for frame in frames:
                    await self._send(frame)
            await self.send_queued()
            if self._finish_code is not None and not self._queue:
                self.close_code = self._finish_code
                return
