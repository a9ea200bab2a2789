"""DESIGN guarantee 1: an acknowledged change is never lost. With ``appendfsync
always`` an append is acknowledged only after Redis wrote it to its AOF and
fsynced it, so killing Redis (SIGKILL: no shutdown, no final flush) right after
the acknowledgements loses none of them. (``everysec``, the default, differs
only when the machine itself crashes: up to about a second; not testable here.)"""

from __future__ import annotations

import msgspec
from service_fixtures import scratch_dir

from services.embedded import start_redis
from session_store.connect import connect_redis
from session_store.projector import encode_state
from session_store.store import EventStore
from tests.timeline_driver import Driver, RandomSession, drive


async def test_acknowledged_appends_survive_a_killed_redis(settings, make_prefix):
    with scratch_dir("durability") as path:
        server = start_redis(path, appendfsync="always")
        try:
            redis = connect_redis(server.url)
            own = msgspec.structs.replace(settings, key_prefix=make_prefix(),
                                          redis_url=server.url)
            driver = Driver(own, redis)
            # Every iteration returns after its append script answered: the ack.
            await drive(driver, RandomSession("durable", seed=21), 1500, samples=1)
            acknowledged = await driver.state("durable")
            keys = driver.keys
            entries = await redis.xrange(keys.events("durable"))
            versions = await redis.hgetall(keys.versions("durable"))
            assert len(entries) == sum(acknowledged.versions.values()) >= 1500
            server.process.kill()
            server.process.wait()
            await redis.aclose(close_connection_pool=True)
        finally:
            server.stop()
        server = start_redis(path, appendfsync="always")
        try:
            redis = connect_redis(server.url)
            assert await redis.xrange(keys.events("durable")) == entries
            assert await redis.hgetall(keys.versions("durable")) == versions
            state, _ = await EventStore(redis, keys).load_batch("durable")
            assert encode_state(state) == encode_state(acknowledged)
            await redis.aclose()
        finally:
            server.stop()
