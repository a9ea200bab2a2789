"""The finalizer process's duties so far: migrate, heartbeat, stop cleanly."""

from __future__ import annotations

import asyncio

import msgspec

from services.finalizer import serve
from services.settings import Settings
from session_store.keys import Keys


async def test_finalizer_heartbeats_and_cleans_up_on_stop(settings: Settings, redis,
                                                          make_prefix):
    settings = msgspec.structs.replace(settings, key_prefix=make_prefix())
    key = Keys(settings.key_prefix, settings.partitions).finalizer_heartbeat()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    for _ in range(100):
        if await redis.get(key):
            break
        await asyncio.sleep(0.05)
    assert int(await redis.get(key)) > 0
    assert 0 < await redis.pttl(key) <= 10_000
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await redis.get(key) is None
