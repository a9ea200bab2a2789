"""Contract tests of the Redis layer (append script, leases, snapshots, reads).

Each runs against the machine's Redis 7 (or whatever COHORT_TEST_REDIS_URL names),
against an embedded Redis 6.2, the oldest version Cohort supports, and against an
embedded three-primary Redis Cluster (every key of a partition on one shard).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest

from session_store.commands import Outcome, decode_outcome, encode
from session_store.connect import open_redis
from session_store.events import (
    BATCH_SESSION,
    BatchOpened,
    decode_event,
    encode_event,
)
from session_store.keys import Keys
from session_store.projector import BatchState, encode_state, fold
from session_store.store import (
    EventStore,
    PlannedCommand,
    PlannedEvent,
    StaleEpoch,
    VersionConflict,
)
from tests.append_plans import patch_plan

pytestmark = pytest.mark.asyncio


SERVERS = {"redis7": "redis_url", "redis6.2": "redis62_url", "cluster": "redis_cluster_url"}


@pytest.fixture(params=list(SERVERS))
async def store(request: pytest.FixtureRequest, make_prefix: Callable[[], str]
                ) -> AsyncIterator[EventStore]:
    redis = await open_redis(request.getfixturevalue(SERVERS[request.param]))
    prefix = make_prefix()
    yield EventStore(redis, Keys(prefix, 4))
    # Clean up here too: the 6.2 server and the cluster are not covered by the
    # session-wide cleanup.
    async for key in redis.scan_iter(match=f"{prefix}:*", count=500):
        await redis.unlink(key)
    await redis.aclose()


async def own(store: EventStore, batch: str, worker: str = "w1") -> tuple[int, int]:
    partition = store.keys.partition(batch)
    epoch = await store.acquire(partition, worker, 10_000)
    assert epoch > 0
    return partition, epoch


async def test_twenty_concurrent_writers_one_winner_per_version(store: EventStore):
    batch = "hot"
    partition, epoch = await own(store, batch)
    winners: dict[int, str] = {}
    target = 200

    async def writer(name: str) -> None:
        attempt = 0
        while len(winners) < target:
            current = int(await store.redis.hget(store.keys.versions(batch), BATCH_SESSION) or 0)
            if current >= target:
                return
            attempt += 1
            # Between the read and the write, so that the writers really interleave
            # (without it one writer could win every version on a fast machine).
            await asyncio.sleep(random.random() * 0.001)
            plan = patch_plan(batch, name, str(attempt), current + 1, attempt)
            try:
                result = await store.append(partition, epoch, "", [plan], 60)
            except VersionConflict:
                continue
            assert result.results[0][0] == "new"
            assert current + 1 not in winners, "two winners for one version"
            winners[current + 1] = name

    await asyncio.gather(*(writer(f"w{i}") for i in range(20)))
    assert sorted(winners) == list(range(1, target + 1))
    entries = await store.redis.xrange(store.keys.events(batch))
    versions = [decode_event(fields[b"e"]).version for _, fields in entries]
    assert versions == list(range(1, target + 1)), "gaps or duplicates in the stream"
    assert len(set(winners.values())) > 1, "the writers did not actually race"


async def test_same_command_id_applies_once_and_answers_the_same(store: EventStore):
    batch = "dup"
    partition, epoch = await own(store, batch)
    first = await store.append(partition, epoch, "1-0", [patch_plan(batch, "r1", "c1", 1, 1)],
                               60)
    assert first.results[0][0] == "new"
    pos = first.results[0][1][-1].decode()
    # Retried: the script refuses to write it again and returns the remembered outcome.
    again = await store.append(partition, epoch, "2-0", [patch_plan(batch, "r1", "c1", 2, 1)],
                               60)
    kind, values = again.results[0]
    assert kind == "dup"
    outcome = decode_outcome(values[0])
    assert outcome.ok and outcome.version == 1 and outcome.pos == pos
    # Twice in one call: the second copy is marked, not written.
    both = await store.append(partition, epoch, "3-0", [
        patch_plan(batch, "r1", "c2", 2, 2), patch_plan(batch, "r1", "c2", 3, 2)], 60)
    assert [r[0] for r in both.results] == ["new", "dup"]
    assert both.results[1][1] == [b"same-iteration"]
    assert await store.redis.xlen(store.keys.events(batch)) == 2
    assert await store.redis.get(store.keys.cursor(partition)) == b"3-0"
    assert await store.redis.ttl(store.keys.dedupe(batch, "r1")) > 0


async def test_append_reads_the_commands_after_its_cursor(store: EventStore):
    """The worker's next read rides on the append: the commands after the new cursor,
    in order, as many as asked; none from a call that keeps the cursor or is fenced."""
    batch = "ahead"
    partition, epoch = await own(store, batch)
    stream = store.keys.commands(partition)
    ids = [await store.redis.xadd(stream, {"c": f"cmd{i}".encode()}) for i in range(5)]
    got = await store.append(partition, epoch, ids[1].decode(),
                             [patch_plan(batch, "r1", "a1", 1, 1)], 60, read_ahead=2)
    assert got.results[0][0] == "new"
    assert got.ahead == [(ids[2], {b"c": b"cmd2"}), (ids[3], {b"c": b"cmd3"})]
    everything = await store.append(partition, epoch, ids[3].decode(),
                                    [patch_plan(batch, "r1", "a2", 2, 2)], 60, read_ahead=100)
    assert everything.ahead == [(ids[4], {b"c": b"cmd4"})]
    assert (await store.append(partition, epoch, ids[4].decode(), [], 60,
                               read_ahead=100)).ahead == []
    assert (await store.append(partition, epoch, ids[2].decode(), [], 60)).ahead == []
    assert (await store.append(partition, epoch, "", [], 60, read_ahead=5)).ahead == []
    # Sliced into several calls: the last one, which moves the cursor, reads.
    sliced = await store.append(partition, epoch, ids[0].decode(), [
        patch_plan(batch, "r1", f"s{v}", v, v) for v in range(3, 8)], 60, chunk=2,
        read_ahead=1)
    assert [kind for kind, _ in sliced.results] == ["new"] * 5
    assert sliced.ahead == [(ids[1], {b"c": b"cmd1"})]
    assert await store.redis.get(store.keys.cursor(partition)) == ids[0]
    with pytest.raises(StaleEpoch):
        await store.append(partition, epoch + 1, ids[0].decode(), [], 60, read_ahead=5)


async def test_rejection_is_remembered_and_writes_no_event(store: EventStore):
    batch = "rej"
    partition, epoch = await own(store, batch)
    rejection = encode(Outcome(cmd="c9", ok=False, code="test_failed", message="no"))
    result = await store.append(partition, epoch, "5-0",
                                [PlannedCommand(batch, "r1", "c9", [], rejected=rejection)], 60)
    assert result.results[0][0] == "rejected"
    assert await store.redis.xlen(store.keys.events(batch)) == 0
    assert await store.dedupe_lookup([(batch, "r1", "c9")]) == [rejection]
    assert await store.redis.get(store.keys.cursor(partition)) == b"5-0"


async def test_stale_epoch_and_version_conflict_write_nothing(store: EventStore):
    batch = "fence"
    partition = store.keys.partition(batch)
    old = await store.acquire(partition, "old", 100)
    await asyncio.sleep(0.25)  # the old lease lapses
    new = await store.acquire(partition, "new", 10_000)
    assert new == old + 1
    assert not await store.renew(partition, "old", 100, old)
    assert await store.renew(partition, "new", 10_000, new)
    with pytest.raises(StaleEpoch):
        await store.append(partition, old, "9-0", [patch_plan(batch, "r", "c", 1, 1)], 60)
    with pytest.raises(VersionConflict):
        await store.append(partition, new, "9-0", [patch_plan(batch, "r", "c", 2, 1)], 60)
    # A conflict in the second command stops the first one too: all or nothing.
    with pytest.raises(VersionConflict):
        await store.append(partition, new, "9-0", [
            patch_plan(batch, "r", "a", 1, 1), patch_plan(batch, "r", "b", 5, 1)], 60)
    assert await store.redis.xlen(store.keys.events(batch)) == 0
    assert await store.redis.get(store.keys.cursor(partition)) is None
    assert await store.dedupe_lookup([(batch, "r", "c"), (batch, "r", "a")]) == [None, None]
    assert not await store.release(partition, "old", old)
    assert await store.release(partition, "new", new)
    assert await store.acquire(partition, "third", 1000) == new + 1


async def test_append_survives_script_flush(store: EventStore):
    batch = "noscript"
    partition, epoch = await own(store, batch)
    await store.append(partition, epoch, "", [patch_plan(batch, "r", "1", 1, 1)], 60)
    await store.redis.script_flush()
    result = await store.append(partition, epoch, "", [patch_plan(batch, "r", "2", 2, 2)], 60)
    assert result.results[0][0] == "new"
    await store.redis.script_flush()
    assert await store.renew(partition, "w1", 10_000, epoch)


async def test_snapshots_and_reads_from_any_position(store: EventStore):
    batch = "snap"
    partition, epoch = await own(store, batch)
    opened = BatchOpened(scope="batch", version=1, label="L")
    await store.append(partition, epoch, "", [PlannedCommand(
        batch, "admin", "open", [PlannedEvent(batch, "batch", 1, encode_event(opened))],
        template=b"{}")], 60)
    positions = []
    for v in range(1, 31):
        result = await store.append(partition, epoch, "",
                                    [patch_plan(batch, "r", str(v), v, v)], 60)
        positions.append(result.results[0][1][-1].decode())

    # The live fold of everything, and snapshots at versions 10 and 20.
    live = BatchState(batch_id=batch)
    snapshots = {}
    async for pos, event in store.read_events(batch):
        fold(live, event, pos)
        if event.scope == BATCH_SESSION and event.version in (10, 20):
            snapshots[event.version] = encode_state(live)
            assert await store.save_snapshot(batch, snapshots[event.version], pos)
    assert not await store.save_snapshot(batch, snapshots[20], positions[19])  # not newer

    loaded, tail = await store.load_batch(batch, keep_tail=True)
    assert encode_state(loaded) == encode_state(live)
    assert [e.version for _, e in tail] == list(range(21, 31))
    older, tail = await store.load_batch(batch, keep_tail=True, snapshots_back=2)
    assert encode_state(older) == encode_state(live) and len(tail) == 20

    # The snapshot at or before a position, plus the events up to it, is the state then.
    at = positions[14]  # version 15
    state = await store.latest_snapshot(batch, at=at)
    assert state is not None and state.version(BATCH_SESSION) == 10
    async for pos, event in store.read_events(batch, after=state.pos, until=at):
        fold(state, event, pos)
    assert state.version(BATCH_SESSION) == 15
    assert state.session(BATCH_SESSION) == {f"r-{v}": v for v in range(1, 16)}
    assert [e.version async for _, e in store.read_events(batch, after=positions[28])] == [30]


async def test_side_writes_and_erasure_keep_the_event(store: EventStore):
    batch = "side"
    partition, epoch = await own(store, batch)
    side = store.keys.study_session(batch, "r1")
    plan = patch_plan(batch, "r1", "w1", 1, 1)
    plan.events[0].side_key, plan.events[0].side_field = side, "1"
    plan.events[0].side_value = b'{"answer":42}'
    await store.append(partition, epoch, "", [plan], 60)
    assert await store.redis.hget(side, "1") == b'{"answer":42}'
    erase = patch_plan(batch, "r1", "w2", 2, 2)
    erase.erase_key = side
    await store.append(partition, epoch, "", [erase], 60)
    assert await store.redis.exists(side) == 0
    assert await store.redis.xlen(store.keys.events(batch)) == 2  # the events stay
