"""The whole stack on Redis Cluster: real gateways, workers and the finalizer
against three embedded primaries (DESIGN "Scaling out": partitions spread over
the shards by hash tag, nothing else changes).

Participants on two gateways drive batch-session patches, groups, group sessions
and chat through two workers while the finalizer archives and trims; what they
were sent equals the replay, the partitions' keys sit on more than one shard,
and a forced close leaves no key of the batch on any shard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import msgspec
import pytest

from results_store.replay import Replay
from session_store.connect import open_redis
from session_store.keys import Keys
from tests.e2e.stack import Stack
from tests.e2e.test_archive_e2e import ARCHIVING, drive_until, enter, live_versions
from tests.e2e.test_close_batch import keys_of, wait_removed

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster_stack(redis_cluster_url: str, database_url: str, make_prefix: Callable[[], str]
                  ) -> Iterator[Stack]:
    stack = Stack(redis_cluster_url, database_url, make_prefix(), gateways=2, workers=2,
                  **{**ARCHIVING, "archive_keep": 200}).start()
    try:
        yield stack
    finally:
        stack.stop()


async def test_the_stack_runs_on_redis_cluster(cluster_stack: Stack, new_batch_id,
                                              redis_cluster_url: str, database_url: str):
    stack = cluster_stack
    stack._spawn("finalizer", "finalizer")
    keys = Keys(stack.env["COHORT_KEY_PREFIX"], int(stack.env["COHORT_PARTITIONS"]))
    redis = await open_redis(redis_cluster_url)  # knows which shard holds which slot
    # One batch on each shard, so that every shard takes part.
    by_shard: dict[str, str] = {}
    while len(by_shard) < 3:
        batch = new_batch_id()
        by_shard.setdefault(redis.get_node_from_key(keys.events(batch)).name, batch)
    batches = list(by_shard.values())
    for batch in batches:
        await stack.create_batch(batch, max_active_members=3, max_total_members=5)
    people = [await enter(stack, batch, i % 2) for i, batch in
              enumerate(b for b in batches for _ in range(4))]
    await drive_until(stack, people, batches, 800, seed=5, limit_s=120)

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        replay = Replay(redis, pool, keys)
        for index, batch in enumerate(batches):
            versions = await live_versions(stack, batch)
            mine = people[4 * index:4 * index + 4]
            for person in mine:
                await person.wait_version(versions["batch_session"])
            final = await replay.state_at(batch)
            assert final.versions == versions
            for person in mine:
                assert msgspec.json.encode(person.data) == msgspec.json.encode(
                    final.sessions["batch_session"])
            seen: dict[str, int] = {}
            async for item in replay.iter_items(batch):
                assert item.version == seen.get(item.scope, 0) + 1
                seen[item.scope] = item.version
            assert seen == versions
        # The finalizer archives (and trims) every batch, whichever shard it is on.
        count = "SELECT count(*) FROM archived_events WHERE batch_id = $1"
        for batch in batches:
            for _ in range(100):
                if await pool.fetchval(count, batch) > 0:
                    break
                await asyncio.sleep(0.1)
            assert await pool.fetchval(count, batch) > 0, stack.log("finalizer")[-3000:]

        # A forced close ends the channels and removes every key of the batch.
        closing = batches[0]
        async with httpx.AsyncClient(base_url=stack.gateway_urls[1], headers={
                "Authorization": f"Bearer {stack.admin_token}"}) as client:
            closed = await client.post(f"/api/batches/{closing}/close", json={"force": True})
        assert closed.status_code == 200, closed.text
        for person in people[:4]:
            assert await asyncio.wait_for(person.closed, 10) == (4410, "batch_closed")
        await wait_removed(stack, database_url, closing)
        assert await keys_of(stack, closing) == []
        # Replay of the closed batch comes from Postgres alone and ends where they were.
        after = await replay.state_at(closing)
        assert msgspec.json.encode(after.sessions["batch_session"]) == msgspec.json.encode(
            people[0].data)
        # The other batches go on.
        survivor = people[4]
        await survivor.patch([{"op": "add", "path": "/after_close", "value": 1}])
        assert "failed" not in stack.log("finalizer"), stack.log("finalizer")[-3000:]
        for name in ("gateway0", "gateway1", "worker0", "worker1", "finalizer"):
            assert stack.procs[name].poll() is None, stack.log(name)[-3000:]
        # No command was written twice (a worker would rebuild on it) or failed.
        for name in ("worker0", "worker1"):
            assert "version conflict" not in stack.log(name), stack.log(name)[-3000:]
        for name in ("gateway0", "gateway1"):
            assert "command write failed" not in stack.log(name), stack.log(name)[-3000:]
    finally:
        await asyncio.gather(*(p.close() for p in people))
        await pool.close()
        await redis.aclose()
