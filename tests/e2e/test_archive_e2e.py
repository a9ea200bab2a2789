"""Archive and replay with real processes: gateways, workers and the finalizer.

1. Participants on two gateways drive about 10,000 events (batch session patches,
   groups, group sessions, chat) through two workers while a finalizer process
   archives and trims; the replayed states equal what participants were sent,
   at the end and at 20 random moments they recorded; a gateway started after the
   trims still loads the batch.
2. The finalizer process is killed (``os._exit`` via COHORT_FINALIZER_CRASH_AT)
   between copy and commit, and between commit and trim: nothing is lost, nothing
   is copied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import time
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from results_store.replay import Replay, key_of, scope_state
from services.participant import CommandFailed, Participant
from services.settings import Settings
from session_store.connect import connect_redis
from session_store.keys import Keys
from session_store.projector import encode_state
from session_store.store import EventStore
from tests.e2e.stack import Stack
from tests.timeline_driver import Driver, RandomSession, drive, random_json, random_ops

pytestmark = pytest.mark.e2e

ARCHIVING = {"snapshot_every": 200, "resume_window": 400, "archive_keep": 1000,
             "archive_interval_s": 0.3, "archive_batch": 2000}


class Recorder(Participant):
    """A participant that keeps (pos, version, data) after every frame of its scopes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[tuple[str, str, int, bytes]] = []

    def _handle(self, frame: dict[str, Any]) -> None:
        super()._handle(frame)
        if frame["type"] not in ("state", "update"):
            return
        scope = frame["scope"]
        if scope == "batch_session" and self.data is not None:
            self.records.append((self.pos, scope, self.version, msgspec.json.encode(self.data)))
        elif scope.startswith("group_session:") and self.group_session["data"] is not None:
            self.records.append((frame["pos"], scope, self.group_session["version"],
                                 msgspec.json.encode(self.group_session["data"])))


async def enter(stack: Stack, batch: str, gateway: int) -> Recorder:
    ticket = await stack.participant(batch, gateway)
    person = await Recorder(ticket["ws_url"], run_id=ticket["run_id"]).connect()
    await person.wait_ready()
    return person


async def act(person: Recorder, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        pick = rng.random()
        try:
            if pick < 0.55:
                await person.patch(random_ops(rng, person.data or {}))
            elif person.group is None:
                await person.join_group()
            elif pick < 0.75:
                scope = f"group_session:{person.group['group']}"
                await person.patch(random_ops(rng, person.group_session["data"] or {}),
                                   scope=scope)
            elif pick < 0.95:
                await person.command("group_msg", msg=random_json(rng))
            else:
                await person.command("leave_group")
        except CommandFailed:
            pass  # a failing test op, a stale group: rejected, nothing written


async def drive_until(stack: Stack, people: list[Recorder], batches: list[str], events: int,
                      seed: int, limit_s: float) -> None:
    """Everybody acts at random until each of ``batches`` holds ``events`` events."""
    stop = asyncio.Event()
    rng = random.Random(seed)
    workers = [asyncio.create_task(act(p, random.Random(rng.random()), stop)) for p in people]
    started = time.monotonic()
    try:
        while min([sum((await live_versions(stack, b)).values()) for b in batches]) < events:
            assert time.monotonic() - started < limit_s, "too slow"
            assert not any(w.done() for w in workers), [w.exception() for w in workers if w.done()]
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*workers)


async def live_versions(stack: Stack, batch: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=stack.gateway_urls[0], headers={
            "Authorization": f"Bearer {stack.admin_token}"}) as client:
        return (await client.get(f"/api/batches/{batch}")).json()["versions"]


async def test_participants_drive_10000_events_while_the_finalizer_archives(
        make_stack, new_batch_id, redis_url, database_url):
    stack = make_stack(gateways=2, workers=2, finalizer_nice=7, **ARCHIVING)
    stack._spawn("finalizer", "finalizer")
    batch = new_batch_id()
    await stack.create_batch(batch, max_active_members=3, max_total_members=5)
    people = [await enter(stack, batch, i % 2) for i in range(12)]
    rng = random.Random(21)
    await drive_until(stack, people, [batch], 10_000, seed=21, limit_s=180)
    versions = await live_versions(stack, batch)
    total = sum(versions.values())
    for person in people:
        await person.wait_version(versions["batch_session"])
        if person.group is not None:
            scope = f"group_session:{person.group['group']}"
            await person.wait_for(lambda p=person, s=scope: p.group_session["version"]
                                  == versions.get(s, 0))

    keys = Keys(stack.env["COHORT_KEY_PREFIX"], int(stack.env["COHORT_PARTITIONS"]))
    redis = connect_redis(redis_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        # The finalizer keeps archiving: wait until at least half is in Postgres.
        count = "SELECT count(*) FROM archived_events WHERE batch_id = $1"
        for _ in range(200):
            if await pool.fetchval(count, batch) >= total // 2:
                break
            await asyncio.sleep(0.1)
        # Every event is in Postgres or in Redis, and in both only between a
        # segment's commit and its trim: the (paced) finalizer may be there now.
        for _ in range(100):
            archived = await pool.fetchval(count, batch)
            in_redis = await redis.xlen(keys.events(batch))
            if in_redis == total - archived:
                break
            await asyncio.sleep(0.05)
        assert archived >= total // 2
        assert in_redis == total - archived
        replay = Replay(redis, pool, keys)
        final = await replay.state_at(batch)
        assert final.versions == versions
        # What the worker or a gateway would rebuild from Redis equals the replay.
        state, _ = await EventStore(redis, keys).load_batch(batch)
        assert encode_state(state) == encode_state(final)
        # What participants were sent equals the replay, now and in the past.
        for person in people:
            assert msgspec.json.encode(person.data) == msgspec.json.encode(
                final.sessions["batch_session"])
            if person.group is not None:
                scope = f"group_session:{person.group['group']}"
                assert msgspec.json.encode(person.group_session["data"]) == \
                    msgspec.json.encode(final.sessions.get(scope, {}))
        records = [r for p in people for r in p.records]
        assert len(records) > 1000
        for pos, scope, version, data in rng.sample(records, 20):
            _, part = await replay.scope_state(batch, scope, key_of(pos))
            assert part["version"] == version, (pos, scope)
            assert msgspec.json.encode(part["data"]) == data, (pos, scope)
        # Every event once, every scope's versions dense.
        seen: dict[str, int] = {}
        async for item in replay.iter_items(batch):
            assert item.version == seen.get(item.scope, 0) + 1
            seen[item.scope] = item.version
        assert seen == versions
        # A gateway started now loads the trimmed batch and serves the same state.
        url = stack.start_gateway(2)
        async with httpx.AsyncClient(base_url=url, headers={
                "Authorization": f"Bearer {stack.admin_token}"}) as client:
            ticket = (await client.post(f"/api/batches/{batch}/participants")).json()
        late = await Participant(ticket["ws_url"], run_id=ticket["run_id"]).connect()
        await late.wait_ready()
        assert late.version == versions["batch_session"]
        assert msgspec.json.encode(late.data) == msgspec.json.encode(
            scope_state(final, "batch_session")["data"])
        await late.close()
        assert stack.procs["finalizer"].poll() is None
        assert "failed" not in stack.log("finalizer"), stack.log("finalizer")[-3000:]
        # It archived all that at a lower CPU priority than the live path
        # (COHORT_FINALIZER_NICE added to what it started with).
        assert os.getpriority(os.PRIO_PROCESS, stack.procs["finalizer"].pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
        assert os.getpriority(os.PRIO_PROCESS, stack.procs["gateway0"].pid) == \
            os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        await asyncio.gather(*(p.close() for p in people))
        await pool.close()
        await redis.aclose()


def run_finalizer(stack: Stack, crash_at: str | None, timeout: float = 60) -> int | None:
    """Start a finalizer process; with ``crash_at`` wait for it to exit."""
    name = f"finalizer-{crash_at or 'normal'}"
    if crash_at:
        stack.env["COHORT_FINALIZER_CRASH_AT"] = crash_at
    try:
        proc = stack._spawn(name, "finalizer")
    finally:
        stack.env.pop("COHORT_FINALIZER_CRASH_AT", None)
    if crash_at is None:
        return None
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no crash at {crash_at}: {stack.log(name)}") from None


async def test_a_killed_finalizer_loses_nothing_and_copies_nothing_twice(
        make_stack, redis_url, database_url):
    stack = make_stack(gateways=0, workers=0, **{**ARCHIVING, "archive_keep": 500,
                                                 "archive_batch": 1000})
    keys = Keys(stack.env["COHORT_KEY_PREFIX"], int(stack.env["COHORT_PARTITIONS"]))
    settings = Settings(redis_url=redis_url, key_prefix=keys.prefix, partitions=keys.partitions,
                        snapshot_every=200)
    redis = connect_redis(redis_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    batch = "crash-" + keys.prefix
    try:
        driver = Driver(settings, redis)
        await drive(driver, RandomSession(batch, seed=12, arrival=2), 4000, samples=1)
        await driver.snapshot_all()
        live = await driver.state(batch)
        entries = [(i.decode(), f[b"e"]) for i, f in await redis.xrange(keys.events(batch))]
        count = "SELECT count(*) FROM archived_events WHERE batch_id = $1"
        segments = "SELECT count(*), coalesce(sum(events), 0) FROM archived_segments " \
                   "WHERE batch_id = $1"

        # Killed between the copy and the commit: nothing committed, nothing trimmed.
        assert run_finalizer(stack, "after_copy") == 17
        assert await pool.fetchval(count, batch) == 0
        assert tuple(await pool.fetchrow(segments, batch)) == (0, 0)
        assert await redis.xlen(keys.events(batch)) == len(entries)

        # Killed between the commit and the trim: one segment in, Redis untouched.
        assert run_finalizer(stack, "after_commit") == 17
        assert await pool.fetchval(count, batch) == 1000
        assert tuple(await pool.fetchrow(segments, batch)) == (1, 1000)
        assert await redis.xlen(keys.events(batch)) == len(entries)

        # A normal run: trims what was committed, copies the rest once.
        run_finalizer(stack, None)
        deadline = time.monotonic() + 30
        while await redis.xlen(keys.events(batch)) > 500 + 600:
            assert time.monotonic() < deadline, stack.log("finalizer-normal")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # a pass or two more: nothing changes
        stack.procs["finalizer-normal"].terminate()
        assert stack.procs["finalizer-normal"].wait(10) == 0
        assert "failed" not in stack.log("finalizer-normal")
        left = await redis.xlen(keys.events(batch))
        archived = await pool.fetchval(count, batch)
        assert archived == len(entries) - left
        n, summed = await pool.fetchrow(segments, batch)
        assert summed == archived and n >= 2
        rows = await pool.fetch("SELECT pos, payload FROM archived_events WHERE batch_id = $1 "
                                "ORDER BY ms, seq", batch)
        assert [(r["pos"], r["payload"].encode()) for r in rows] == entries[:archived]
        redis_entries = [(i.decode(), f[b"e"]) for i, f in await redis.xrange(keys.events(batch))]
        assert redis_entries == entries[archived:]
        replay = Replay(redis, pool, keys)
        assert [(i.pos, i.raw) async for i in replay.iter_items(batch)] == entries
        assert encode_state(await replay.state_at(batch)) == encode_state(live)
    finally:
        with contextlib.suppress(Exception):
            await pool.execute("DELETE FROM archived_events WHERE batch_id = $1", batch)
        await pool.close()
        await redis.aclose()
