"""Closing a batch for good: Postgres stops entries, the log stops commands.

The batch row stays locked (``FOR UPDATE``, the lock every entry takes) while the
worker decides the ``close_batch`` command, so no participant can enter in
between, and a refusal (runs still active) rolls back: nothing changed. Once the
log has its ``batch_closed`` event the finalizer archives the whole timeline and
removes the batch from Redis (results_store.archive).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import msgspec

from session_store.commands import Outcome


class CloseRefused(Exception):
    """``batch_not_found`` (404), ``runs_active`` (409), or the log's refusal."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Closed(msgspec.Struct, kw_only=True):
    batch: str
    closed_at: datetime
    # Position of the batch_closed event ("" when the batch never reached the log:
    # nobody entered it, so there is nothing to archive).
    pos: str = ""
    # Closed before this request (closing is idempotent).
    already: bool = False


# Asks the log to close; the argument is ``force``.
SendClose = Callable[[bool], Awaitable[Outcome]]


async def close_batch(pool: asyncpg.Pool, batch_id: str, send: SendClose,
                      force: bool = False) -> Closed:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT closed_at FROM batches WHERE id = $1 FOR UPDATE",
                                  batch_id)
        if row is None:
            raise CloseRefused(404, "batch_not_found", f"there is no batch {batch_id!r}")
        closed_at, already = row["closed_at"], row["closed_at"] is not None
        outcome = await send(force)
        if not outcome.ok and outcome.code not in ("batch_closed", "batch_not_found"):
            raise CloseRefused(409 if outcome.code == "runs_active" else 400, outcome.code,
                               outcome.message)
        if not already:
            closed_at = await conn.fetchval(
                "UPDATE batches SET closed_at = now(), active = false WHERE id = $1 "
                "RETURNING closed_at", batch_id)
    return Closed(batch=batch_id, closed_at=closed_at, pos=outcome.pos if outcome.ok else "",
                  already=already or outcome.code == "batch_closed")
