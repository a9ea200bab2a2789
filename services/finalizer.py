"""The finalizer process: archives what is finished into Postgres (see DESIGN.md).

For now it only connects to Redis and Postgres, applies the migrations, and
writes a heartbeat (``{prefix}:finalizer:heartbeat`` = its clock in ms, expiring
after 10 s) every couple of seconds while both stores answer. Archiving closed
segments into ``archived_segments`` and trimming them from Redis arrives in a
later issue. It stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import asyncpg
import redis.asyncio as aioredis

from results_store.migrate import migrate
from services.settings import Settings
from session_store.connect import connect_redis
from session_store.keys import Keys

HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_TTL_MS = 10_000

log = logging.getLogger("cohort.finalizer")


def run(settings: Settings) -> None:
    asyncio.run(serve(settings))


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or, when not given, until SIGTERM/SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await migrate(settings.database_url)
    redis = connect_redis(settings.redis_url)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    key = Keys(settings.key_prefix, settings.partitions).finalizer_heartbeat()
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
        await redis.aclose()
        await pool.close()
        log.info("finalizer stopped")
