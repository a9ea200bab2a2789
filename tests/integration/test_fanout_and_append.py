"""The load paths of issue 9: the gateway's tick coalescing and shared last-seen marks,
appends split into capped scripts, and the Redis pool that waits instead of failing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from redis.exceptions import ConnectionError

from gateway import hub as hub_module
from gateway.connection import Connection
from gateway.hub import Hub
from services.settings import Settings
from session_store.commands import Outcome, decode_outcome, encode
from session_store.connect import connect_redis, open_redis
from session_store.events import BATCH_SESSION, BatchOpened, encode_event
from session_store.keys import Keys
from session_store.store import EventStore, PlannedCommand, PlannedEvent
from tests.append_plans import patch_plan

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def store(redis_url: str, make_prefix: Callable[[], str]) -> AsyncIterator[EventStore]:
    redis = connect_redis(redis_url)
    yield EventStore(redis, Keys(make_prefix(), 4))
    await redis.aclose()


class PipelineCounter:
    """Counts the pipelines a client opens (each is one round trip here)."""

    def __init__(self, redis) -> None:
        self.calls = 0
        real = redis.pipeline

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        redis.pipeline = counting


async def own(store: EventStore, batch: str) -> tuple[int, int]:
    partition = store.keys.partition(batch)
    epoch = await store.acquire(partition, "w1", 10_000)
    assert epoch > 0
    return partition, epoch


# -- appends in capped slices ----------------------------------------------------


async def test_a_large_append_is_split_and_reads_as_one(store: EventStore):
    batch = "split"
    partition, epoch = await own(store, batch)
    rejection = encode(Outcome(cmd="bad", ok=False, code="test_failed", message="no"))
    plans = [patch_plan(batch, f"r{i % 7}", f"c{i}", i + 1) for i in range(450)]
    # A rejection, and a repeat of c5 in a later slice (its first copy committed here).
    plans.insert(300, PlannedCommand(batch, "r1", "bad", [], rejected=rejection))
    plans.append(PlannedCommand(batch, "r5", "c5", []))
    result = await store.append(partition, epoch, "9-0", plans, 60, chunk=100)

    kinds = [kind for kind, _ in result.results]
    assert kinds == ["new"] * 300 + ["rejected"] + ["new"] * 150 + ["dup"]
    assert result.results[-1][1] == [b"same-iteration"]
    entries = await store.redis.xrange(store.keys.events(batch))
    assert len(entries) == 450
    assert [r[1][-1] for r in result.results[:300]] == [e[0] for e in entries[:300]]
    assert await store.redis.hget(store.keys.versions(batch), BATCH_SESSION) == b"450"
    assert await store.redis.get(store.keys.cursor(partition)) == b"9-0"
    # Every dedupe record was written, once per command, with its position.
    stored = await store.dedupe_lookup([(batch, f"r{i % 7}", f"c{i}") for i in range(450)])
    assert [decode_outcome(s).version for s in stored if s] == list(range(1, 451))
    assert decode_outcome(stored[449]).pos == entries[-1][0].decode()
    assert await store.dedupe_lookup([(batch, "r1", "bad")]) == [rejection]
    for run in range(7):
        assert await store.redis.ttl(store.keys.dedupe(batch, f"r{run}")) > 0

    # Retried as a whole (a crash before the cursor moved): every command is a repeat.
    again = await store.append(partition, epoch, "9-0", plans, 60, chunk=100)
    assert {kind for kind, _ in again.results} == {"dup"}
    assert await store.redis.xlen(store.keys.events(batch)) == 450


async def test_one_script_writes_each_scope_version_once(store: EventStore):
    batch = "versions"
    partition, epoch = await own(store, batch)
    group = "group_session:1"
    plans = []
    for i in range(1, 41):
        plans.append(patch_plan(batch, "r1", f"b{i}", i))
        plans.append(patch_plan(batch, "r2", f"g{i}", i, scope=group))
    await store.append(partition, epoch, "", plans, 60)
    assert await store.redis.hgetall(store.keys.versions(batch)) == {
        BATCH_SESSION.encode(): b"40", group.encode(): b"40"}
    # The next append checks against those versions.
    result = await store.append(partition, epoch, "", [patch_plan(batch, "r1", "b41", 41)], 60)
    assert result.results[0][0] == "new"


# -- the pool --------------------------------------------------------------------


async def test_the_pool_waits_for_a_connection_instead_of_failing(redis_url: str,
                                                                  make_prefix: Callable[[], str]):
    redis = connect_redis(redis_url, max_connections=3)
    key = f"{make_prefix()}:pool"
    try:
        await asyncio.gather(*(redis.hset(key, str(i), i) for i in range(500)))
        assert await redis.hlen(key) == 500
        assert len(redis.connection_pool._available_connections) <= 3
    finally:
        await redis.delete(key)
        await redis.aclose()


# -- the gateway ---------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.frames: list[dict] = []

    async def send(self, frame: str) -> None:
        self.frames.append(msgspec.json.decode(frame))


async def hub_with_batch(settings: Settings, redis_url: str, batch: str
                         ) -> tuple[Hub, EventStore, int, int]:
    redis = connect_redis(redis_url)
    hub = Hub(settings, redis, gateway_id="gw-test")
    store = hub.store
    partition, epoch = await own(store, batch)
    opened = BatchOpened(scope="batch", version=1)
    await store.append(partition, epoch, "", [PlannedCommand(batch, "admin", "open", [
        PlannedEvent(batch, "batch", 1, encode_event(opened))], template=b"%POS%")], 60)
    return hub, store, partition, epoch


def subscribe(hub: Hub, view, count: int) -> list[tuple[Connection, Recorder, asyncio.Task]]:
    out = []
    for i in range(count):
        recorder = Recorder()
        conn = Connection(f"c{i}", f"run{i}", view, set(), recorder.send, 1 << 22, 3, 60.0, 1000)
        hub.attach(conn, None)
        out.append((conn, recorder, asyncio.create_task(conn.run_sender())))
    return out


async def test_a_wide_batch_gets_one_frame_per_tick_with_every_version_in_order(
        settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hub_module, "TICK_S", 0.05)  # long enough to see on a busy machine
    batch = "tick-wide"
    hub, store, partition, epoch = await hub_with_batch(settings, redis_url, batch)
    view = await hub.open_view(batch)
    assert view is not None
    subs = subscribe(hub, view, hub_module.WIDE_FANOUT)
    reader = asyncio.create_task(hub._read_partition(partition))
    try:
        total = 120
        started = time.monotonic()
        for v in range(1, total + 1):  # one event per append, ~1 ms apart
            await store.append(partition, epoch, "", [patch_plan(batch, "w", f"p{v}", v)], 60)
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 10
        # Polled: the recorders have no event to wait on.
        while any(not r.frames or r.frames[-1].get("changes", [{}])[-1].get("v") != total  # noqa: ASYNC110
                  for _, r, _ in subs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        for _, recorder, _ in subs:
            assert recorder.frames[0]["type"] == "state"
            updates = [f for f in recorder.frames[1:] if f["type"] == "update"]
            versions = [c["v"] for f in updates for c in f["changes"]]
            assert versions == list(range(1, total + 1)), "every version once, in order"
            # At most one frame per tick (plus the one right after the idle wait).
            assert len(updates) <= elapsed / 0.05 + 2
            assert len(updates) < total / 3
    finally:
        reader.cancel()
        for conn, _, task in subs:
            task.cancel()
            hub.detach(conn)
        await asyncio.gather(reader, *(t for _, _, t in subs), return_exceptions=True)
        await hub.redis.aclose()


async def test_narrow_frames_are_not_held_back(settings: Settings, redis_url: str,
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hub_module, "TICK_S", 5.0)  # a held-back read would time out
    batch = "tick-narrow"
    hub, store, partition, epoch = await hub_with_batch(settings, redis_url, batch)
    view = await hub.open_view(batch)
    assert view is not None
    [(conn, recorder, task)] = subscribe(hub, view, 1)
    reader = asyncio.create_task(hub._read_partition(partition))
    try:
        for v in range(1, 6):
            await store.append(partition, epoch, "", [patch_plan(batch, "w", f"p{v}", v)], 60)
            deadline = time.monotonic() + 2
            while not any(c["v"] == v for f in recorder.frames if f["type"] == "update"
                          for c in f["changes"]):
                assert time.monotonic() < deadline, f"version {v} was held back"
                await asyncio.sleep(0.005)
    finally:
        reader.cancel()
        task.cancel()
        hub.detach(conn)
        await asyncio.gather(reader, task, return_exceptions=True)
        await hub.redis.aclose()


async def test_marks_of_many_channels_share_one_write(settings: Settings, redis_url: str):
    redis = connect_redis(redis_url, max_connections=2)
    hub = Hub(settings, redis, gateway_id="gw-marks")
    batch = "marks"
    pipelines = PipelineCounter(redis)
    try:
        before = int(time.time() * 1000)
        await asyncio.gather(*(hub.mark_seen(batch, f"run{i}", force=True) for i in range(300)),
                             hub.mark_seen(batch, "gone", force=True))
        await hub.mark_seen(batch, "gone", force=True, gone=True)
        marks = await redis.hgetall(hub.keys.last_seen(batch))
        assert len(marks) == 301
        assert all(int(marks[f"run{i}".encode()]) >= before for i in range(300))
        assert int(marks[b"gone"]) <= -before
        assert pipelines.calls <= 3, "one pipeline per round, not one write per mark"
        # The hash expires well after every limit marks are judged by (a mark written
        # after its batch left Redis does not stay).
        ttl = await redis.ttl(hub.keys.last_seen(batch))
        assert 3 * settings.run_timeout_s - 5 <= ttl <= 3 * settings.run_timeout_s
        # Throttled: a mark within SEEN_EVERY_S of the last one is not written again.
        await hub.mark_seen(batch, "run1")
        assert pipelines.calls <= 3
    finally:
        await redis.delete(hub.keys.last_seen(batch))
        await redis.aclose()


async def test_a_failed_mark_write_is_one_warning_and_no_failure(settings: Settings,
                                                                  caplog: Any) -> None:
    # Marks are best effort: a join storm whose shared write fails logs it once (not
    # once per channel), and the channels it came from are not failed by it.
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis = connect_redis(f"redis://127.0.0.1:{port}/0", max_connections=2)
    hub = Hub(settings, redis, gateway_id="gw-marks-down")
    try:
        written = [hub.note_seen("b", f"run{i}", force=True) for i in range(50)]
        assert len({id(w) for w in written}) == 1, "one shared write"
        error = await asyncio.wait_for(asyncio.shield(written[0]), 30)
        assert isinstance(error, Exception)
        await hub.mark_seen("b", "run-awaited", force=True)  # returns, does not raise
        warnings = [r for r in caplog.records if r.message == "could not record last seen"]
        assert len(warnings) == 2, "one per failed write: the 50 marks', the awaited one's"
    finally:
        await redis.aclose()


# -- commands: one script call per partition and flush -----------------------------


def patch_command(i: int):
    from session_store.commands import Patch

    return Patch(id=f"c{i}", batch="b", run="r", gw="gw", scope="batch_session",
                 ops=[{"op": "add", "path": f"/k{i}", "value": i}])


async def command_stats(redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): fields["calls"] for name, fields in stats.items()}


async def wait_until(check: Callable[[], Awaitable[object]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_commands_reach_each_partition_stream_in_order_in_one_round_trip(
        redis62_url: str, make_prefix: Callable[[], str]):
    """Against the embedded Redis of this test session: it reads the server's command
    counters and flushes its scripts, which must not meet anybody else's work."""
    from gateway.hub import CommandSender
    from session_store.commands import decode_command

    redis = connect_redis(redis62_url)
    keys = Keys(make_prefix(), 4)
    sender = CommandSender(redis, keys)
    errors: list[Exception] = []
    pipelines = PipelineCounter(redis)
    # After a SCRIPT FLUSH (as after a restart) the first flush must still work
    # with no load-and-retry step: the sender sends the script itself.
    await redis.script_flush()
    before = await command_stats(redis)
    try:
        # One flush: 1,200 commands over three partitions, partition 2 past one slice.
        sent: dict[int, list[str]] = {0: [], 2: [], 3: []}
        for i in range(1200):
            partition = 2 if i % 2 else (0 if i % 4 else 3)
            command = patch_command(i)
            sender.send(partition, command, errors.append)
            sent[partition].append(command.id)
        task = asyncio.create_task(sender.run())
        await wait_until(lambda: _total_is(redis, keys, sent, 1200))
        after = await command_stats(redis)
        for partition, ids in sent.items():
            entries = await redis.xrange(keys.commands(partition))
            assert [decode_command(f[b"c"]).id for _, f in entries] == ids
        assert await redis.xlen(keys.commands(1)) == 0
        assert pipelines.calls == 1 and not errors
        # Four script calls (partition 2 in two slices), and nothing else asked of Redis
        # on the way: no SCRIPT EXISTS / LOAD round trip, no EVALSHA refused.
        assert after.get("eval", 0) - before.get("eval", 0) == 4
        for name in ("script", "script|exists", "script|load", "evalsha"):
            assert after.get(name, 0) == before.get(name, 0), name
        # Every connection went back to the pool.
        assert not redis.connection_pool._in_use_connections
    finally:
        await _stop_sender(task, redis, keys, sender)


async def _total(redis, keys: Keys, partitions) -> int:
    return sum([await redis.xlen(keys.commands(p)) for p in partitions])


async def _total_is(redis, keys: Keys, partitions, total: int) -> bool:
    return await _total(redis, keys, partitions) == total


async def test_a_failing_partition_fails_only_its_own_commands(
        redis_url: str, make_prefix: Callable[[], str]):
    from gateway.hub import CommandSender

    redis = connect_redis(redis_url)
    keys = Keys(make_prefix(), 4)
    # Partition 1's command stream is not a stream: its XADDs fail (WRONGTYPE).
    await redis.set(keys.commands(1), "not a stream")
    sender = CommandSender(redis, keys)
    failed: dict[str, Exception] = {}

    def on_error(command_id: str) -> Callable[[Exception], None]:
        def record(exc: Exception) -> None:
            failed[command_id] = exc
            if command_id == "c1":
                raise RuntimeError("a broken callback")  # must not stop the others
        return record

    task = asyncio.create_task(sender.run())
    try:
        for i in range(9):
            sender.send(i % 3, patch_command(i), on_error(f"c{i}"))
        await wait_until(lambda: _settled(redis, keys, failed))
        assert sorted(failed) == ["c1", "c4", "c7"]
        assert all("WRONGTYPE" in str(exc) for exc in failed.values())
        assert await redis.xlen(keys.commands(0)) == 3 and await redis.xlen(keys.commands(2)) == 3
        # The sender goes on.
        sender.send(0, patch_command(9), on_error("c9"))
        await wait_until(lambda: _length_is(redis, keys.commands(0), 4))
        assert not task.done() and "c9" not in failed
        assert not redis.connection_pool._in_use_connections
    finally:
        await _stop_sender(task, redis, keys, sender)


async def _settled(redis, keys: Keys, failed: dict) -> bool:
    return len(failed) == 3 and await _total_is(redis, keys, (0, 2), 6)


async def _length_is(redis, key: str, length: int) -> bool:
    return await redis.xlen(key) == length


async def test_a_failed_command_write_is_reported_for_every_command(
        make_prefix: Callable[[], str]):
    from gateway.hub import CommandSender

    redis = connect_redis("redis://127.0.0.1:9")  # nothing listens there
    sender = CommandSender(redis, Keys(make_prefix(), 4))
    errors: list[Exception] = []
    task = asyncio.create_task(sender.run())
    try:
        for i in range(3):
            sender.send(i, patch_command(i), errors.append)
        for _ in range(200):
            if len(errors) == 3:
                break
            await asyncio.sleep(0.02)
        assert len(errors) == 3 and not task.done()
    finally:
        await _stop_sender(task, redis)


async def test_commands_go_to_each_shard_of_a_cluster_in_order(
        redis_cluster_url: str, make_prefix: Callable[[], str]):
    """Cluster pipelines refuse scripts: the sender calls each partition's shard."""
    from gateway.hub import CommandSender
    from session_store.commands import decode_command

    redis = await open_redis(redis_cluster_url)
    keys = Keys(make_prefix(), 8)
    sender = CommandSender(redis, keys)
    errors: list[Exception] = []
    task = asyncio.create_task(sender.run())
    try:
        sent: dict[int, list[str]] = {p: [] for p in range(8)}
        for i in range(1700):  # partition 0 gets more than one slice
            partition = 0 if i < 600 else i % 8
            sender.send(partition, patch_command(i), errors.append)
            sent[partition].append(f"c{i}")
        await wait_until(lambda: _total_is(redis, keys, sent, 1700), timeout=10)
        assert not errors and not task.done()
        for partition, ids in sent.items():
            entries = await redis.xrange(keys.commands(partition))
            assert [decode_command(f[b"c"]).id for _, f in entries] == ids
        assert len({redis.get_node_from_key(keys.commands(p)).name for p in sent}) >= 2
    finally:
        await _stop_sender(task, redis, keys, sender)


async def test_a_cluster_shard_failing_fails_only_its_partitions_commands(
        redis_cluster_url: str, make_prefix: Callable[[], str]):
    from gateway.hub import CommandSender

    redis = await open_redis(redis_cluster_url)
    keys = Keys(make_prefix(), 8)
    await redis.set(keys.commands(3), "not a stream")  # partition 3's calls fail
    sender = CommandSender(redis, keys)
    failed: list[str] = []
    task = asyncio.create_task(sender.run())
    try:
        for i in range(1600):  # partition 3 gets 600: two calls, both fail
            partition = 3 if i < 600 else i % 8
            sender.send(partition, patch_command(i),
                        lambda exc, i=i: failed.append(f"c{i}"))
        others = [p for p in range(8) if p != 3]
        await wait_until(lambda: _total_is(redis, keys, others, 1000 - 1000 // 8), timeout=10)
        await wait_until(lambda: _length_of(failed, 600 + 1000 // 8))
        assert set(failed) == {f"c{i}" for i in range(1600) if i < 600 or i % 8 == 3}
        assert not task.done() and not sender._writers
    finally:
        await _stop_sender(task, redis, keys, sender)


async def _length_of(items: list, length: int) -> bool:
    return len(items) == length


async def test_a_cluster_call_sent_again_appends_nothing_twice(
        redis_cluster_url: str, make_prefix: Callable[[], str]):
    """The cluster client re-sends a call after a dropped connection (the first may
    have run): slots moved between shards under a busy sender (every fifth MOVED
    makes redis-py drop all its connections) gave thousands of duplicates before
    calls were named."""
    from redis.cluster import key_slot

    from session_store.commands import decode_command

    redis = await open_redis(redis_cluster_url)
    keys = Keys(make_prefix(), 8)
    busy = BusySender(redis, keys, per_tick=2000)
    try:
        await busy.start()
        nodes = list(redis.get_primaries())
        ids = {node.name: (await redis.execute_command("CLUSTER MYID", target_nodes=node)
                           ).decode() for node in nodes}
        used = {key_slot(keys.commands(p).encode()) for p in range(8)}
        slot = moved = 0
        while moved < 25:  # empty slots only: the commands' own slots stay put
            slot += 97
            if slot in used:
                continue
            owner = redis.nodes_manager.get_node_from_slot(slot)
            target = next(node for node in nodes if node.name != owner.name)
            for node in nodes:
                await _retried(lambda node=node, slot=slot, to=ids[target.name]:
                               redis.execute_command("CLUSTER SETSLOT", slot, "NODE", to,
                                                     target_nodes=node))
            key = next(f"k{i}" for i in range(100_000) if key_slot(f"k{i}".encode()) == slot)
            with contextlib.suppress(Exception):
                await redis.get(key)  # MOVED: the client updates (or drops) its map
            moved += 1
            await asyncio.sleep(0.02)
        await busy.stop_feeding()
        await wait_until(lambda: _written_or_failed(redis, keys, busy.count, busy.errors),
                         timeout=30)
        seen: list[str] = []
        for p in range(8):
            seen += [decode_command(f[b"c"]).id for _, f in await redis.xrange(keys.commands(p))]
        assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} commands twice"
        assert len(seen) >= busy.count - len(busy.errors)
    finally:
        await busy.close()
        await redis.aclose()


async def _retried(call: Callable[[], Awaitable[object]]) -> object:
    """The test's own commands, through connections the client may drop."""
    for _ in range(4):
        try:
            return await call()
        except ConnectionError:
            await asyncio.sleep(0.05)
    return await call()


async def _written_or_failed(redis, keys: Keys, sent: int, errors: list) -> bool:
    written = sum([await redis.xlen(keys.commands(p)) for p in range(8)])
    return written + len(errors) >= sent


async def test_commands_ride_through_a_migration_of_their_partitions_slot(
        redis_cluster_url: str, make_prefix: Callable[[], str]):
    """While the slot of a partition's command stream moves to another shard, key by
    key (Redis answers ASK meanwhile, and TRYAGAIN to a call whose stream and mark
    are on different sides, or whose mark does not exist yet: a sender started in
    the middle of it), busy senders lose and reorder nothing and no command fails.
    Outside the moving slot nothing is repeated either. Inside it, a call that had to
    go out unnumbered (its keys split) and was sent again after a dropped connection
    may have run the first time: it can be there twice, as a whole; the worker drops
    the repeat by command id (docs/decisions.md)."""
    from redis.cluster import key_slot

    from gateway.hub import CommandSender
    from session_store.commands import decode_command

    redis = await open_redis(redis_cluster_url)
    keys = Keys(make_prefix(), 8)
    busy = BusySender(redis, keys, per_tick=500)
    # A second gateway's sender, started mid-migration: it has no mark in that slot
    # yet, and it retries for less time than the migration takes.
    late = CommandSender(redis, keys, retry_s=1.0)
    late_task: asyncio.Task[None] | None = None
    try:
        await busy.start()
        await asyncio.sleep(0.3)  # every partition has had calls (and marks) by now
        slot = key_slot(keys.commands(3).encode())
        source = redis.nodes_manager.get_node_from_slot(slot)
        target = next(node for node in redis.get_primaries() if node.name != source.name)
        ids = {node.name: (await redis.execute_command("CLUSTER MYID", target_nodes=node)
                           ).decode() for node in (source, target)}

        def on(node, *command):  # the test's own commands, through dropped connections too
            return _retried(lambda: redis.execute_command(*command, target_nodes=node))

        await on(target, "CLUSTER SETSLOT", slot, "IMPORTING", ids[source.name])
        await on(source, "CLUSTER SETSLOT", slot, "MIGRATING", ids[target.name])
        await asyncio.sleep(1.0)  # calls meet the slot migrating, their keys still here
        late_task = asyncio.create_task(late.run())
        for i in range(200):
            late.send(3, msgspec.structs.replace(patch_command(i), id=f"late{i}"),
                      busy.errors.append)
        # One key per MIGRATE, the mark moved well after the stream (or before it).
        while moving := await on(source, "CLUSTER GETKEYSINSLOT", slot, 1):
            await on(source, "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *moving)
            await asyncio.sleep(0.3)  # commands keep arriving meanwhile
        await asyncio.sleep(1.0)  # the keys moved, the slot not yet handed over
        for node in redis.get_primaries():
            await on(node, "CLUSTER SETSLOT", slot, "NODE", ids[target.name])
        await asyncio.sleep(0.3)
        await busy.stop_feeding()
        async def written() -> bool:
            return (not busy.sender._writers and not late._writers
                    and await _total(redis, keys, busy.sent) >= busy.count + 200)

        await wait_until(written, timeout=30)
        assert not busy.errors, busy.errors[:3]
        for partition, ids_sent in busy.sent.items():
            entries = await redis.xrange(keys.commands(partition))
            got = [decode_command(f[b"c"]).id for _, f in entries]
            if partition == 3:
                assert _repeats_are_whole_calls(got), got
                got = list(dict.fromkeys(got))  # first copies, in order
                # The late sender's commands, in order, among the others.
                assert [c for c in got if c.startswith("late")] == [
                    f"late{i}" for i in range(200)]
                got = [c for c in got if not c.startswith("late")]
            assert got == ids_sent
        assert redis.get_node_from_key(keys.commands(3)).name == target.name
    finally:
        if late_task is not None:
            late_task.cancel()
            await asyncio.gather(late_task, return_exceptions=True)
        await busy.close()
        await _delete_commands(redis, keys, late)
        await redis.aclose()


async def test_a_call_split_by_a_migration_goes_out_unnumbered_even_past_its_deadline(
        redis_cluster_url: str, make_prefix: Callable[[], str]):
    """A sender with no mark yet in a migrating slot meets TRYAGAIN (its stream is
    still on the source, its mark nowhere). redis-py tries such a call 16 times,
    sleeping before the last 8, before it gives up, which can use up the sender's
    whole retry time; the unnumbered form, a different call, still gets its try."""
    from redis.cluster import key_slot

    from gateway.hub import CommandSender

    redis = await open_redis(redis_cluster_url)
    keys = Keys(make_prefix(), 8)
    stream = keys.commands(3)
    await redis.xadd(stream, {"c": b"before"})
    slot = key_slot(stream.encode())
    source = redis.nodes_manager.get_node_from_slot(slot)
    target = next(node for node in redis.get_primaries() if node.name != source.name)
    ids = {node.name: (await redis.execute_command("CLUSTER MYID", target_nodes=node)
                       ).decode() for node in (source, target)}
    sender = CommandSender(redis, keys, retry_s=0.01)  # less than redis-py's own retries
    task = asyncio.create_task(sender.run())
    errors: list[Exception] = []
    try:
        await redis.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source.name],
                                    target_nodes=target)
        await redis.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target.name],
                                    target_nodes=source)
        for i in range(5):
            sender.send(3, patch_command(i), errors.append)

        async def settled() -> bool:
            return bool(errors) or await redis.xlen(stream) == 6
        await wait_until(settled, timeout=10)
        assert not errors, errors[:1]
        assert await redis.xlen(stream) == 6
    finally:
        for node in (source, target):
            await _retried(lambda node=node: redis.execute_command(
                "CLUSTER SETSLOT", slot, "STABLE", target_nodes=node))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _delete_commands(redis, keys, sender)
        await redis.aclose()


def _repeats_are_whole_calls(ids: list[str]) -> bool:
    """Every repeated id sits in a run of repeats that copies, in order, a run of
    consecutive entries seen earlier (one call's commands, appended again)."""
    first: dict[str, int] = {}
    previous: tuple[int, int] | None = None  # (position, its original's position)
    for position, command_id in enumerate(ids):
        if command_id not in first:
            first[command_id] = position
            previous = None
            continue
        original = first[command_id]
        if previous is not None and previous[0] == position - 1 and (
                original != previous[1] + 1):
            return False
        previous = (position, original)
    return True


async def _stop_sender(task: asyncio.Task, redis, keys: Keys | None = None,
                       sender=None) -> None:
    """End a sender's task, remove its command streams and marks, close the client."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if keys is not None:
        await _delete_commands(redis, keys, sender)
    await redis.aclose()


async def _delete_commands(redis, keys: Keys, sender) -> None:
    """The command streams and the sender's marks (which would stay for a day)."""
    for p in range(keys.partitions):
        await redis.delete(keys.commands(p))
        await redis.delete(keys.submitted(p, sender._name))


class BusySender:
    """A command sender kept busy: ``per_tick`` commands every 10 ms, spread over the
    partitions in turn, each recorded (``sent``) under its partition."""

    def __init__(self, redis, keys: Keys, per_tick: int) -> None:
        from gateway.hub import CommandSender

        self.redis = redis
        self.keys = keys
        self.per_tick = per_tick
        self.sender = CommandSender(redis, keys)
        self.errors: list[Exception] = []
        self.sent: dict[int, list[str]] = {p: [] for p in range(keys.partitions)}
        self.count = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.sender.run()),
                       asyncio.create_task(self._feed())]

    async def _feed(self) -> None:
        while not self._stop.is_set():
            for _ in range(self.per_tick):
                partition = self.count % self.keys.partitions
                self.sender.send(partition, patch_command(self.count), self.errors.append)
                self.sent[partition].append(f"c{self.count}")
                self.count += 1
            await asyncio.sleep(0.01)

    async def stop_feeding(self) -> None:
        self._stop.set()
        if len(self._tasks) > 1:
            await self._tasks[1]

    async def close(self) -> None:
        """Stop, and delete the command streams and the sender's marks."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await _delete_commands(self.redis, self.keys, self.sender)

