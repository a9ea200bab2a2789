"""The finalizer process: archives batch timelines into Postgres (docs/archive.md).

It applies the migrations, then runs two loops until SIGTERM or SIGINT:

- a heartbeat (``{prefix}:finalizer:heartbeat`` = its clock in ms, expiring after
  10 s) every couple of seconds while both stores answer;
- every ``COHORT_ARCHIVE_INTERVAL_S``, an archive pass over every batch
  (``results_store.archive.Archiver``): snapshots and closed segments of each
  batch stream are copied into Postgres exactly once, and only then trimmed from
  Redis.

Test hook: ``COHORT_FINALIZER_CRASH_AT=after_copy|after_commit`` makes the process
exit at once (``os._exit``, status 17) at that point of its first archived segment:
after the copy, before the commit; or after the commit, before the trim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from results_store import results
from results_store.archive import Archiver
from results_store.migrate import migrate
from services.logs import run_loop
from services.settings import Settings
from session_store.connect import open_redis
from session_store.keys import Keys
from session_store.projector import BatchState
from session_store.store import EventStore

HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_TTL_MS = 10_000
CRASH_ENV = "COHORT_FINALIZER_CRASH_AT"
CRASH_POINTS = ("after_copy", "after_commit")
CRASH_STATUS = 17

log = logging.getLogger("cohort.finalizer")


def run(settings: Settings) -> None:
    if settings.finalizer_nice > 0:
        # Archiving can wait a moment; the gateways and workers beside it cannot.
        with contextlib.suppress(OSError):
            os.nice(settings.finalizer_nice)
    # uvloop's transports are C: the plain asyncio ones were a third of the
    # worker's busy time under load (py-spy).
    run_loop(serve(settings))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or, when not given, until SIGTERM/SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await migrate(settings.database_url)
    redis = await open_redis(settings.redis_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=3)
    key = Keys(settings.key_prefix, settings.partitions).finalizer_heartbeat()
    async def on_closed(batch_id: str, final: BatchState) -> None:
        await close_in_postgres(pool, batch_id, final)

    archiver = Archiver.from_settings(redis, pool, settings, checkpoint=crash_hook(),
                                      on_closed=on_closed)
    archiving = asyncio.create_task(archive_loop(archiver, settings, stop))
    log.info("finalizer up", extra={"key_prefix": settings.key_prefix})
    try:
        while not stop.is_set():
            try:
                await pool.fetchval("SELECT 1")
                await redis.set(key, int(time.time() * 1000), px=HEARTBEAT_TTL_MS)
            except Exception as exc:  # a store is down for a moment: keep going, say so
                log.warning("heartbeat failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_EVERY_S)
        with contextlib.suppress(aioredis.RedisError, OSError):
            await redis.delete(key)  # stopped on purpose: no stale heartbeat
    finally:
        archiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await archiving
        await redis.aclose()
        await pool.close()
        log.info("finalizer stopped")


async def archive_loop(archiver: Archiver, settings: Settings, stop: asyncio.Event) -> None:
    """A pass every ``archive_interval_s``: a pass that took part of the interval
    (paced passes may take up to all of it) is followed by the rest of it only."""
    while not stop.is_set():
        began = time.monotonic()
        try:
            await archiver.run_once()
            await close_ended_runs(archiver.redis, archiver.pool, settings)
            rest = settings.archive_interval_s - (time.monotonic() - began)
        except Exception as exc:  # a store is down for a moment: the next pass retries
            log.warning("archive pass failed", extra={"error": repr(exc)})
            rest = settings.archive_interval_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(rest, 0.05 * settings.archive_interval_s))


async def close_ended_runs(redis: Any, pool: asyncpg.Pool, settings: Settings) -> int:
    """Runs the log ended on its own (a timeout, an idle group member) take no more
    result writes: record their end in Postgres as the participant routes do for
    ends they see. Reads each batch's newest snapshot; returns how many it closed."""
    keys = Keys(settings.key_prefix, settings.partitions)
    store = EventStore(redis, keys)
    closed = 0
    for partition in range(settings.partitions):
        for raw in await redis.smembers(keys.batches(partition)):
            batch_id = raw.decode()
            if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM runs WHERE batch_id = $1 "
                                       "AND end_state IS NULL)", batch_id):
                continue
            state = await store.latest_snapshot(batch_id)
            if state is not None:
                closed += await record_run_ends(pool, batch_id, state)
    return closed


async def close_in_postgres(pool: asyncpg.Pool, batch_id: str, final: BatchState) -> None:
    """Postgres follows the log once a batch is closed there: the batch takes nobody
    (also when the request that closed it timed out before it saw the answer), and
    every run it holds has ended, including one that entered while the batch was
    being closed and was refused by the log before it started."""
    await pool.execute("UPDATE batches SET closed_at = coalesce(closed_at, now()), "
                       "active = false WHERE id = $1", batch_id)
    for row in await pool.fetch("SELECT id FROM runs WHERE batch_id = $1 AND "
                                "end_state IS NULL", batch_id):
        run = final.runs.get(row["id"])  # a closed batch has no active run
        await results.mark_run_ended(pool, row["id"], run.state if run else "failed",
                                     run.reason if run else "batch_closed")


async def record_run_ends(pool: asyncpg.Pool, batch_id: str, state: BatchState) -> int:
    """Mark the runs that ``state`` shows ended, and Postgres still open, as ended."""
    closed = 0
    open_runs = await pool.fetch(
        "SELECT id FROM runs WHERE batch_id = $1 AND end_state IS NULL", batch_id)
    for row in open_runs:
        run = state.runs.get(row["id"])
        if run is not None and not run.is_active:
            await results.mark_run_ended(pool, row["id"], run.state, run.reason)
            closed += 1
    return closed


def crash_hook() -> Callable[[str], None] | None:
    """The test-only crash point from the environment, as an archiver checkpoint."""
    point = os.environ.get(CRASH_ENV, "")
    if not point:
        return None
    if point not in CRASH_POINTS:
        raise SystemExit(f"{CRASH_ENV} must be one of {', '.join(CRASH_POINTS)}")

    def checkpoint(step: str) -> None:
        if step == point:
            log.warning("crashing on purpose", extra={"at": step})
            logging.shutdown()
            os._exit(CRASH_STATUS)

    return checkpoint
