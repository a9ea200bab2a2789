"""Archive and replay against real Redis and Postgres.

The timelines are written by the real worker code in this process
(``tests/timeline_driver.py``: ``PartitionLoop.handle``, i.e. decide, plan, the
fenced Lua append and snapshots, without the XREAD of the command stream), which
makes 10,000 events take seconds. ``tests/e2e/test_archive_e2e.py`` does the same
through real gateway, worker and finalizer processes.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from results_store.archive import Archiver, BatchReport
from results_store.jsondiff import same
from results_store.migrate import migrate
from results_store.replay import (
    ALL,
    EventFilter,
    Replay,
    before,
    encode_scope_state,
    key_of,
    parse_at,
    scope_state,
    scopes_of,
)
from services.settings import Settings
from services.worker import SYSTEM
from session_store.commands import CloseBatch
from session_store.events import Event
from session_store.jsonpatch import apply_patch
from session_store.keys import Keys
from session_store.projector import decode_state, encode_state
from session_store.store import EventStore
from tests.timeline_driver import Driver, RandomSession, drive, recorded_state

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "timeline_schema1"
EVENT_KINDS = {cls.__struct_config__.tag for cls in typing.get_args(Event)}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def own(settings: Settings, make_prefix) -> Settings:
    """Settings with a key prefix of this test's own and small snapshot intervals;
    archiving unpaced (pacing has its own test)."""
    return msgspec.structs.replace(settings, key_prefix=make_prefix(), snapshot_every=200,
                                   resume_window=400, archive_keep=0, archive_batch=1000,
                                   archive_duty=1.0)


async def all_entries(redis, keys: Keys, batch: str) -> list[tuple[str, bytes]]:
    return [(i.decode(), f[b"e"]) for i, f in await redis.xrange(keys.events(batch))]


async def replayed(replay: Replay, batch: str, flt: EventFilter = ALL
                   ) -> list[tuple[str, bytes]]:
    return [(item.pos, item.raw) async for item in replay.iter_items(batch, flt)]


async def check_replay(replay: Replay, batch: str, live, samples, entries) -> None:
    """Final state, every scope, sampled past states and the event list: all exact."""
    final = await replay.state_at(batch)
    assert encode_state(final) == encode_state(live)
    for scope in scopes_of(live):
        assert encode_scope_state(final, scope) == encode_scope_state(live, scope), scope
    for pos, expected in samples:
        state = await replay.state_at(batch, key_of(pos))
        assert encode_state(state) == expected, pos
        past = decode_state(expected)
        for scope in scopes_of(past):
            assert encode_scope_state(state, scope) == encode_scope_state(past, scope)
    assert await replayed(replay, batch) == entries


async def test_a_random_10000_event_timeline_replays_exactly_before_and_after_archiving(
        own, redis, pool):
    driver = Driver(own, redis)
    keys = driver.keys
    batch = "big"
    samples = await drive(driver, RandomSession(batch, seed=1), 10_000)
    assert len(samples) == 20
    live = await driver.state(batch)
    total = sum(live.versions.values())
    assert total >= 10_000
    kinds = {msgspec.json.decode(raw)["kind"] for _, raw in await all_entries(redis, keys, batch)}
    # Every kind of event but group-by-arrival's (the other tests' batches have those).
    assert kinds == EVENT_KINDS - {"arrival_queued", "arrival_ended", "batch_closed"}, kinds
    entries = await all_entries(redis, keys, batch)
    assert len(entries) == total
    # Study session contents as Redis holds them now (aborted runs' are erased).
    side: dict[tuple[str, int], bytes] = {}
    for run_id in live.runs:
        for version, data in (await redis.hgetall(keys.study_session(batch, run_id))).items():
            side[(run_id, int(version))] = data
    erased = {r for r, run in live.runs.items() if run.study_session_erased}
    assert erased and side

    replay = Replay(redis, pool, keys)
    # 1. Everything in Redis.
    await check_replay(replay, batch, live, samples, entries)

    # 2. Half of it archived and trimmed.
    archiver = Archiver.from_settings(redis, pool, own)
    report = await archiver.archive_batch(batch, keep=total // 2)
    archived = await pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE batch_id = $1", batch)
    assert report.events == archived
    assert 0.45 * total <= archived <= 0.55 * total
    assert await redis.xlen(keys.events(batch)) == total - archived
    assert await pool.fetchval("SELECT sum(events) FROM archived_segments WHERE batch_id = $1",
                               batch) == archived
    first_in_redis = (await redis.xrange(keys.events(batch), count=1))[0][0].decode()
    assert first_in_redis == entries[archived][0]
    assert report.filled_snapshots > 0  # Redis had only the last 20 of 50 snapshots
    await check_replay(replay, batch, live, samples, entries)
    # A new worker (newest snapshot) and a gateway (K snapshots back) still load.
    store = EventStore(redis, keys)
    state, _ = await store.load_batch(batch)
    assert encode_state(state) == encode_state(live)
    back = 1 + own.resume_window // own.snapshot_every
    state, tail = await store.load_batch(batch, keep_tail=True, snapshots_back=back)
    assert encode_state(state) == encode_state(live) and tail

    # Study session contents: archived with their writes, never an erased run's.
    rows = await pool.fetch(
        "SELECT run_id, version, data FROM archived_study_sessions WHERE batch_id = $1", batch)
    assert rows
    archived_positions = {pos for pos, _ in entries[:archived]}
    for row in rows:
        assert row["run_id"] not in erased
        assert side[(row["run_id"], row["version"])] == row["data"].encode()
    writes = [(msgspec.json.decode(raw)["scope"][4:], msgspec.json.decode(raw)["version"])
              for pos, raw in entries if pos in archived_positions
              and b'"study_session_written"' in raw]
    expected = {w for w in writes if w[0] not in erased}
    assert {(r["run_id"], r["version"]) for r in rows} == expected
    # Every write's contents stay readable, wherever they are now.
    found = await replay.study_sessions(batch, list(side), erased)
    assert found == side

    # 3. As much as may be archived (keep 0): the tail after the K-th snapshot stays.
    await archiver.archive_batch(batch, keep=0)
    left = await redis.xlen(keys.events(batch))
    assert left < total // 10
    await check_replay(replay, batch, live, samples, entries)
    # Replaying to any position folds at most about N events from a snapshot.
    positions = [pos for pos, _ in entries]
    for pos in random.Random(3).sample(positions, 10):
        snap = await pool.fetchrow(
            "SELECT events FROM archived_snapshots WHERE batch_id = $1 AND (ms, seq) <= ($2, $3) "
            "ORDER BY ms DESC, seq DESC LIMIT 1", batch, *key_of(pos))
        assert positions.index(pos) + 1 - (snap["events"] if snap else 0) <= (
            2 * own.snapshot_every + own.command_batch)

    # 4. Closed (forced: runs still active end as failed): archived to its end, then
    # every key of the batch leaves Redis; replay is the same from Postgres alone.
    assert any(run.is_active for run in live.runs.values())
    await driver.send([CloseBatch(id="close", batch=batch, run="admin", gw=SYSTEM,
                                  force=True)])
    closed = await driver.state(batch)  # reloaded: the worker dropped the closed batch
    assert closed.closed and not any(run.is_active for run in closed.runs.values())
    before_close = entries
    entries = await replayed(replay, batch)
    assert entries[:len(before_close)] == before_close
    assert msgspec.json.decode(entries[-1][1])["kind"] == "batch_closed"
    seen: list[tuple[str, bytes]] = []

    async def on_closed(batch_id, final):
        seen.append((batch_id, encode_state(final)))

    archiver = Archiver.from_settings(redis, pool, own, on_closed=on_closed)
    reports = await archiver.run_once()
    assert [(r.batch, r.removed) for r in reports] == [(batch, True)]
    assert seen == [(batch, encode_state(closed))]
    left = [k async for k in redis.scan_iter(match=f"{own.key_prefix}:*:b:{batch}:*")]
    assert left == []
    assert batch not in await archiver.batch_ids()
    row = await pool.fetchrow("SELECT * FROM archived_batches WHERE batch_id = $1", batch)
    assert row["closed_pos"] == entries[-1][0] and row["events"] == len(entries)
    assert row["removed_at"] is not None and row["runs_ended"] > 0
    assert await replay.exists(batch)
    await check_replay(replay, batch, closed, samples, entries)
    assert await archiver.run_once() == []  # gone: nothing left to do


async def test_filters_and_pages_match_a_plain_scan_across_the_archive_boundary(
        own, redis, pool):
    driver = Driver(own, redis)
    batch = "filters"
    await drive(driver, RandomSession(batch, seed=2, arrival=2), 3000, samples=1)
    keys = driver.keys
    entries = await all_entries(redis, keys, batch)
    await driver.snapshot_all()
    await Archiver.from_settings(redis, pool, own).archive_batch(batch, keep=1500)
    assert 0 < await redis.xlen(keys.events(batch)) < len(entries)
    heads = [(pos, raw, msgspec.json.decode(raw)) for pos, raw in entries]
    assert {"arrival_queued", "arrival_ended"} <= {h["kind"] for _, _, h in heads}
    rng = random.Random(5)
    run = rng.choice([h["run"] for _, _, h in heads if h.get("run", "admin") != "admin"])
    mid_ms = key_of(entries[len(entries) // 2][0])[0]
    lo, hi = entries[400][0], entries[2600][0]
    cases = [
        (EventFilter.build(scopes=["batch_session"]), lambda p, h: h["scope"] == "batch_session"),
        (EventFilter.build(kinds=["member_joined", "group_message"]),
         lambda p, h: h["kind"] in ("member_joined", "group_message")),
        (EventFilter.build(run=run), lambda p, h: run in (
            h.get("run"), h.get("member"), h.get("to")) or h["scope"] == f"run:{run}"),
        (EventFilter.build(from_ms=mid_ms - 200, to_ms=mid_ms + 200),
         lambda p, h: mid_ms - 200 <= key_of(p)[0] <= mid_ms + 200),
        (EventFilter.build(after=lo, until=hi), lambda p, h: key_of(lo) < key_of(p) <= key_of(hi)),
        (EventFilter.build(scopes=["batch_session", "group:1"], after=lo),
         lambda p, h: h["scope"] in ("batch_session", "group:1") and key_of(p) > key_of(lo)),
    ]
    for chunk in (7, 100, 5000):
        replay = Replay(redis, pool, keys, chunk=chunk)
        for flt, keep in cases:
            expected = [(p, raw) for p, raw, h in heads if keep(p, h)]
            assert expected, flt
            assert await replayed(replay, batch, flt) == expected, (chunk, flt)
            # Pages of 37, each continued from the last position, add up to the same.
            got: list[tuple[str, bytes]] = []
            after = flt.after
            while True:
                page = await replay.page(batch, msgspec.structs.replace(flt, after=after), 37)
                got += [(i.pos, i.raw) for i in page.items]
                if page.next is None:
                    break
                after = key_of(page.next)
            assert got == expected


class Adversary(Replay):
    """After every read, the finalizer archives and trims the next events past the
    reader's position: the worst moment for a reader that merges two stores."""

    def __init__(self, *args, archiver: Archiver, batch: str, keys_in_order, **kwargs):
        super().__init__(*args, **kwargs)
        self.archiver = archiver
        self.batch = batch
        self.order = keys_in_order
        self.squeezed = 0

    async def squeeze(self, lo) -> None:
        i = bisect.bisect_right(self.order, lo)
        if i + 2 < len(self.order):
            copied = await self.archiver.archive_segment(
                self.batch, self.order[i + 2], 1000, BatchReport(self.batch))
            self.squeezed += copied

    async def _pg_range(self, batch_id, lo, *args, **kwargs):
        rows = await super()._pg_range(batch_id, lo, *args, **kwargs)
        await self.squeeze(lo)
        return rows

    async def _redis_range(self, batch_id, lo, *args, **kwargs):
        entries = await super()._redis_range(batch_id, lo, *args, **kwargs)
        await self.squeeze(lo)
        return entries


async def test_readers_miss_nothing_while_the_finalizer_archives_and_trims(own, redis, pool):
    driver = Driver(own, redis)
    batch = "race"
    await drive(driver, RandomSession(batch, seed=3, arrival=2), 3000, samples=1)
    await driver.snapshot_all()
    keys = driver.keys
    entries = await all_entries(redis, keys, batch)
    order = [key_of(pos) for pos, _ in entries]
    live = await driver.state(batch)
    archiver = Archiver(redis, pool, keys, keep=0, batch_size=25, keep_snapshots=1,
                        snapshot_every=200)

    async def reset() -> None:
        """Everything back in Redis only."""
        await pool.execute("DELETE FROM archived_events WHERE batch_id = $1", batch)
        await pool.execute("DELETE FROM archived_segments WHERE batch_id = $1", batch)
        pipe = redis.pipeline(transaction=False)
        pipe.delete(keys.events(batch))
        for pos, raw in entries:
            pipe.xadd(keys.events(batch), {"e": raw}, id=pos)
        await pipe.execute()

    # Adversarial: every read of the merge is followed by a commit and trim right
    # past the reader (a reader that read Postgres before Redis would miss events).
    for chunk, start in ((10, 0), (57, len(order) // 2)):
        await reset()
        replay = Adversary(redis, pool, keys, chunk=chunk, archiver=archiver, batch=batch,
                           keys_in_order=order)
        after = order[start - 1] if start else (0, 0)
        got = await replayed(replay, batch, EventFilter(after=after))
        assert got == entries[start:]
        assert replay.squeezed > len(entries) // 3
    # And concurrently, with passes of 25-event segments.
    await reset()
    assert await redis.xlen(keys.events(batch)) == len(entries)
    done = asyncio.Event()

    async def archive() -> None:
        while not done.is_set():
            await archiver.archive_batch(batch, fill_gaps=False)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(archive())
    try:
        rounds = 0
        while rounds < 5 or await redis.xlen(keys.events(batch)) > len(entries) // 10:
            replay = Replay(redis, pool, keys, chunk=random.choice([10, 33, 200]))
            assert await replayed(replay, batch) == entries
            assert encode_state(await replay.state_at(batch)) == encode_state(live)
            rounds += 1
            assert rounds < 500
    finally:
        done.set()
        await task
    assert await pool.fetchval("SELECT count(*) FROM archived_events WHERE batch_id = $1",
                               batch) == len(entries) - await redis.xlen(keys.events(batch))


async def test_a_crash_between_commit_and_trim_copies_nothing_twice(own, redis, pool):
    driver = Driver(own, redis)
    batch = "crash"
    await drive(driver, RandomSession(batch, seed=4), 2500, samples=1)
    await driver.snapshot_all()
    keys = driver.keys
    entries = await all_entries(redis, keys, batch)

    class Crash(Exception):
        pass

    def crash_at(point: str):
        def checkpoint(step: str) -> None:
            if step == point:
                raise Crash(step)
        return checkpoint

    count = "SELECT count(*) FROM archived_events WHERE batch_id = $1"
    with pytest.raises(Crash):
        await Archiver.from_settings(redis, pool, own, crash_at("after_copy")).archive_batch(batch)
    assert await pool.fetchval(count, batch) == 0
    assert await redis.xlen(keys.events(batch)) == len(entries)
    with pytest.raises(Crash):
        await Archiver.from_settings(redis, pool, own, crash_at("after_commit")).archive_batch(
            batch)
    assert await pool.fetchval(count, batch) == own.archive_batch
    assert await redis.xlen(keys.events(batch)) == len(entries), "not trimmed yet"
    report = await Archiver.from_settings(redis, pool, own).archive_batch(batch)
    # What follows a commit (the trim, dropping ended runs' study sessions from
    # Redis) was done for the crashed segment too.
    ended = {msgspec.json.decode(raw)["scope"][4:] for _, raw in entries[:own.archive_batch]
             if b'"run_ended"' in raw}
    assert ended
    for run_id in ended:
        assert not await redis.exists(keys.study_session(batch, run_id)), run_id
    left = await redis.xlen(keys.events(batch))
    assert report.events == len(entries) - left - own.archive_batch
    assert await pool.fetchval(count, batch) == len(entries) - left
    rows = await pool.fetch("SELECT pos FROM archived_events WHERE batch_id = $1 "
                            "ORDER BY ms, seq", batch)
    assert [r["pos"] for r in rows] == [p for p, _ in entries[: len(rows)]]
    assert await replayed(Replay(redis, pool, keys), batch) == entries


async def test_an_abort_erases_archived_study_session_contents(own, redis, pool):
    from services.worker import SYSTEM
    from session_store.commands import AbortRun, OpenBatch, StartRun, WriteStudySession

    driver = Driver(own, redis)
    keys = driver.keys
    batch = "erase"
    common = {"batch": batch, "gw": SYSTEM}
    await driver.send([OpenBatch(id="o", run="admin", **common)])
    for run in ("keep", "gone", "late"):
        await driver.send([StartRun(id="s", run=run, reloadable=[True], active=[True], **common)])
        for i in range(3):
            await driver.send([WriteStudySession(id=f"w{i}", run=run, data={"secret": run, "i": i},
                                                 **common)])
    await driver.snapshot_all()
    archiver = Archiver(redis, pool, keys, keep=0, batch_size=1000, keep_snapshots=1)
    await archiver.archive_batch(batch)
    rows = "SELECT run_id, version FROM archived_study_sessions WHERE batch_id = $1 ORDER BY 1, 2"
    assert [tuple(r) for r in await pool.fetch(rows, batch)] == [
        (run, v) for run in ("gone", "keep", "late") for v in (2, 3, 4)]
    # Older versions left Redis once archived; the newest stays for live reads.
    assert await redis.hkeys(keys.study_session(batch, "keep")) == [b"4"]
    # The abort is seen in the newest snapshot before its event is archived...
    await driver.send([AbortRun(id="a", run="gone", **common)])
    await driver.snapshot_all()
    assert await redis.exists(keys.study_session(batch, "gone")) == 0
    report = await Archiver(redis, pool, keys, keep=10_000, keep_snapshots=1).archive_batch(batch)
    assert report.events == 0 and report.erased_runs == 1
    assert {r["run_id"] for r in await pool.fetch(rows, batch)} == {"keep", "late"}
    # ... or when its event is archived (no snapshot after it).
    await driver.send([AbortRun(id="a", run="late", **common)])
    await driver.send([WriteStudySession(id="w9", run="keep", data={"last": 1}, **common)])
    await driver.snapshot_all()
    archiver = Archiver(redis, pool, keys, keep=0, keep_snapshots=1)
    archiver._erased[batch] = {"late"}  # as if it had seen the snapshot: the event must do
    report = await archiver.archive_batch(batch)
    assert report.events == 3
    assert {r["run_id"] for r in await pool.fetch(rows, batch)} == {"keep"}
    replay = Replay(redis, pool, keys)
    state = await replay.state_at(batch)
    assert await replay.study_session_at(state, "keep") == {"last": 1}
    assert await replay.study_session_at(state, "late") is None
    # Before its abort the run had a study session; replay shows it erased all the same.
    abort = [i async for i in replay.iter_items(batch, EventFilter.build(
        scopes=["run:gone"], kinds=["run_ended"]))]
    past = await replay.state_at(batch, before(abort[0].key))
    assert past.runs["gone"].study_session_version == 4
    assert await replay.study_session_at(past, "gone") is None
    assert await replay.study_session_at(past, "keep") == {"secret": "keep", "i": 2}
    lines = b"".join([chunk async for chunk in replay.export(batch)]).splitlines()
    assert not any(b'"secret":"gone"' in line or b'"secret":"late"' in line for line in lines)
    assert sum(b'"study_session":{"secret":"keep"' in line for line in lines) == 3


async def test_states_at_times_and_diffs_between_positions(own, redis, pool):
    driver = Driver(own, redis)
    batch = "diffs"
    await drive(driver, RandomSession(batch, seed=6, arrival=2), 1500, samples=1)
    keys = driver.keys
    await driver.snapshot_all()
    await Archiver.from_settings(redis, pool, own).archive_batch(batch, keep=700)
    replay = Replay(redis, pool, keys)
    entries = [(i.pos, i.raw) async for i in replay.iter_items(batch)]
    rng = random.Random(8)
    live = await driver.state(batch)
    scopes = scopes_of(live)
    for _ in range(25):
        a, b = sorted(rng.sample(range(len(entries)), 2))
        scope = rng.choice(["batch_session", *rng.sample(scopes, 3)])
        result = await replay.diff(batch, scope, key_of(entries[a][0]), key_of(entries[b][0]))
        _, sa = await replay.scope_state(batch, scope, key_of(entries[a][0]))
        _, sb = await replay.scope_state(batch, scope, key_of(entries[b][0]))
        assert result["from"] == {"pos": entries[a][0], "version": sa["version"]}
        assert result["to"] == {"pos": entries[b][0], "version": sb["version"]}
        patched = apply_patch(msgspec.json.decode(msgspec.json.encode(sa["data"])),
                              result["ops"])
        assert same(patched, sb["data"]), scope
    # "State at time t" is the state after the last event at or before t.
    ms = key_of(entries[len(entries) // 2][0])[0]
    last_before = max(i for i, (pos, _) in enumerate(entries) if key_of(pos)[0] <= ms)
    at_time = await replay.state_at(batch, parse_at(str(ms)))
    assert at_time.pos == entries[last_before][0]
    iso = (await replay.stats(batch))["minutes"]
    assert sum(iso.values()) == len(entries)
    assert scope_state(at_time, "batch")["data"]["opened"] is True


async def test_the_schema_1_fixture_replays_from_postgres_and_redis(own, redis, pool):
    """The frozen timeline of schema 1, half as archived rows and half in Redis."""
    lines = [msgspec.json.decode(line) for line in
             (FIXTURE / "events.jsonl").read_bytes().splitlines()]
    raws = [line[len(b'{"pos":"' + p["pos"].encode() + b'","event":'):-1]
            for line, p in zip((FIXTURE / "events.jsonl").read_bytes().splitlines(), lines,
                               strict=True)]
    keys = Keys(own.key_prefix, own.partitions)
    batch = "fixture"
    half = len(lines) // 2
    async with pool.acquire() as conn:
        from results_store.archive import EVENT_COLUMNS
        from session_store.upgrade import decode_head
        records = []
        for line, raw in zip(lines[:half], raws[:half], strict=True):
            head = decode_head(raw)
            ms, seq = key_of(line["pos"])
            records.append((batch, ms, seq, line["pos"], head.scope, head.kind, head.version,
                            head.schema, head.run, head.member or head.to, raw.decode()))
        await conn.copy_records_to_table("archived_events", records=records,
                                         columns=EVENT_COLUMNS)
    pipe = redis.pipeline(transaction=False)
    for line, raw in zip(lines[half:], raws[half:], strict=True):
        pipe.xadd(keys.events(batch), {"e": raw}, id=line["pos"])
    await pipe.execute()
    replay = Replay(redis, pool, keys)
    state = await replay.state_at(batch)
    assert encode_state(state) == recorded_state("state.json")
    mid = await replay.state_at(batch, key_of(lines[149]["pos"]))
    assert encode_state(mid) == recorded_state("state_mid.json")
    assert [i.raw async for i in replay.iter_items(batch)] == raws


async def test_a_pass_covers_every_batch_and_skips_quiet_ones(own, redis, pool, monkeypatch):
    from results_store import archive
    from services.worker import SYSTEM
    from session_store.commands import Patch

    driver = Driver(own, redis)
    for batch in ("p1", "p2"):
        await drive(driver, RandomSession(batch, seed=7), 600, samples=1)
    await driver.snapshot_all()
    archiver = Archiver(redis, pool, driver.keys, keep=100, keep_snapshots=1,
                        snapshot_every=200)
    assert await archiver.batch_ids() == ["p1", "p2"]
    monkeypatch.setattr(archive, "QUIET_MS", 0)
    reports = await archiver.run_once()
    assert [r.batch for r in reports] == ["p1", "p2"] and all(r.events for r in reports)
    assert await archiver.run_once() == []  # nothing new: both skipped
    await driver.send([Patch(id="x", batch="p2", run="admin", gw=SYSTEM,
                             scope="batch_session", ops=[{"op": "add", "path": "/x",
                                                          "value": 1}])])
    assert [r.batch for r in await archiver.run_once()] == ["p2"]


async def test_archiving_paces_itself_but_never_falls_behind(own, redis, pool):
    driver = Driver(own, redis)
    for batch in ("paced", "behind", "unpaced"):
        await drive(driver, RandomSession(batch, seed=11), 600, samples=1)
    await driver.snapshot_all()
    keys = driver.keys

    def archiver(**pacing: float) -> Archiver:
        return Archiver(redis, pool, keys, keep=0, batch_size=150, keep_snapshots=1, **pacing)

    # A quarter of the time: after each segment but the last, a pause of 3x its time.
    entries = await all_entries(redis, keys, "paced")
    report = await archiver(duty=0.25, spread_s=60).archive_batch("paced")
    assert report.segments >= 4 and report.events == len(entries)
    assert report.paused_s > 0
    # Pausing would not leave time for the rest of the backlog: no pause at all.
    report = await archiver(duty=0.25, spread_s=0).archive_batch("behind")
    assert report.segments >= 4 and report.paused_s == 0
    report = await archiver(duty=1.0, spread_s=60).archive_batch("unpaced")
    assert report.segments >= 4 and report.paused_s == 0
    # Paced or not, every event was archived once and replays as it was written.
    assert await replayed(Replay(redis, pool, keys), "paced") == entries
    with pytest.raises(ValueError, match="duty"):
        archiver(duty=0)
    with pytest.raises(ValueError, match="duty"):
        archiver(duty=1.5)


async def test_one_pass_over_many_busy_batches_ends_within_its_interval(own, redis, pool):
    """The pacing deadline is the pass's, not each batch's: with a per-batch deadline
    a pass over N busy batches took up to N intervals."""
    driver = Driver(own, redis)
    batches = [f"busy{i}" for i in range(4)]
    for batch in batches:
        await drive(driver, RandomSession(batch, seed=3), 500, samples=1)
    await driver.snapshot_all()
    keys = driver.keys
    archiver = Archiver(redis, pool, keys, keep=0, batch_size=50, keep_snapshots=1,
                        duty=0.05, spread_s=1.0)
    began = time.monotonic()
    reports = {r.batch: r for r in await archiver.run_once()}
    elapsed = time.monotonic() - began
    assert set(batches) <= set(reports)
    assert all(reports[b].segments >= 5 and not reports[b].more for b in batches)
    assert sum(reports[b].paused_s for b in batches) > 0.2  # it did pause
    # At duty 0.05 each batch alone would pause up to its own full second.
    assert elapsed < 1.0 + 0.5, elapsed
    for batch in batches:
        assert await redis.xlen(keys.events(batch)) == 0


async def test_closing_picks_up_after_a_crash_at_any_step(own, redis, pool, monkeypatch):
    driver = Driver(own, redis)
    keys = driver.keys
    batch = "closing"
    await drive(driver, RandomSession(batch, seed=11), 800, samples=1)
    await driver.send([CloseBatch(id="close", batch=batch, run="admin", gw=SYSTEM,
                                  force=True)])
    final = await driver.state(batch)
    total = sum(final.versions.values())
    replay = Replay(redis, pool, keys)

    async def crash_before_record(batch_id, state):
        raise RuntimeError("finalizer died before writing archived_batches")

    archiver = Archiver.from_settings(redis, pool, own, on_closed=crash_before_record)
    assert await archiver.run_once() == []  # logged; the batch stays as it was
    assert await redis.xlen(keys.events(batch)) == total  # nothing trimmed while closing
    assert await pool.fetchval("SELECT count(*) FROM archived_batches WHERE batch_id = $1",
                               batch) == 0

    archiver = Archiver.from_settings(redis, pool, own)
    remove = archiver._remove

    async def crash_mid_removal(batch_id, state):
        await redis.delete(keys.events(batch_id))
        raise RuntimeError("finalizer died after deleting the stream")

    monkeypatch.setattr(archiver, "_remove", crash_mid_removal)
    assert await archiver.run_once() == []
    assert not await redis.exists(keys.events(batch)) and await redis.exists(keys.versions(batch))
    assert batch in await archiver.batch_ids()
    # The stream is gone: the archive record tells the next pass what to finish.
    monkeypatch.setattr(archiver, "_remove", remove)
    reports = await archiver.run_once()
    assert [(r.batch, r.removed) for r in reports] == [(batch, True)]
    assert [k async for k in redis.scan_iter(match=f"{own.key_prefix}:*:b:{batch}:*")] == []
    assert batch not in await archiver.batch_ids()
    # Every event once, and the replayed end equals the live end.
    assert await pool.fetchval("SELECT count(*) FROM archived_events WHERE batch_id = $1",
                               batch) == total
    assert encode_state(await replay.state_at(batch)) == encode_state(final)
