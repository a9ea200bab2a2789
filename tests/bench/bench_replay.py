"""Replay and archive of one big batch: replay to any position, archive throughput,
and the storage an event takes in Redis and in Postgres.

Run: python tests/bench/bench_replay.py [--events 1000000] [--snapshot-every 500]
     [--positions 20] [--export] [--json out.json]     (about 2-3 minutes for 1M)

How the batch is built (fast, but real events): commands of a realistic mix
(55% batch-session patches, group joins and leaves, group-session patches,
group chat, runs moving through components with study-session writes, runs
ending) go through ``session_store.domain.decide`` against the in-memory state,
as in the worker; the events are encoded with the real encoder and written with
pipelined XADDs (explicit IDs, 10,000 per round trip), study session contents
with pipelined HSETs, and the state is snapshotted every N events into the
snapshot stream (all of them kept, as if the finalizer had copied each in time).

Phases:
1. Build (reports decide+fold and XADD rates) and measure Redis memory per event
   (MEMORY USAGE of the stream).
2. Archive: ``Archiver.archive_batch`` copies everything but the last
   ``resume window`` events into Postgres (events/s), trims Redis; table sizes
   per event.
3. Replay: the state at ``--positions`` random positions (old ones come from
   archived snapshots and Postgres events, recent ones from Redis), one scope's
   state, a diff; with ``--export`` the whole timeline as JSON Lines.

Servers: $COHORT_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0) and
$COHORT_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test): the
run creates its own database there and a fresh key prefix, and removes both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from results_store.archive import Archiver, BatchReport  # noqa: E402
from results_store.migrate import migrate  # noqa: E402
from results_store.replay import Replay, key_of  # noqa: E402
from session_store.commands import (  # noqa: E402
    Command,
    EndRun,
    JoinGroup,
    LeaveGroup,
    OpenBatch,
    Patch,
    RetrieveData,
    SendGroupMessage,
    StartComponent,
    StartRun,
    WriteStudySession,
)
from session_store.decisions import Rejected  # noqa: E402
from session_store.domain import Limits, SizeTracker, decide  # noqa: E402
from session_store.events import GroupLimits, encode_event  # noqa: E402
from session_store.keys import Keys  # noqa: E402
from session_store.projector import BatchState, encode_state  # noqa: E402

BATCH = "big"
WORDS = ["yes", "no", "maybe", "left", "right", "cooperate", "defect", "ready", "done"]


class Mix:
    """Commands like a busy lab session's: about 12 runs at once, each in a group of up
    to 3 (5 in all), patching the batch and group sessions and chatting."""

    def __init__(self, seed: int = 1, active: int = 12) -> None:
        self.rng = random.Random(seed)
        self.active = active
        self.runs = 0
        self.ids = 0

    def command(self, state: BatchState) -> Command:
        rng = self.rng
        self.ids += 1
        base: dict[str, Any] = {"id": f"c{self.ids}", "batch": BATCH, "gw": "bench"}
        live = [r for r, run in state.runs.items() if run.is_active]
        if len(live) < self.active:
            self.runs += 1
            return StartRun(**base, run=f"run{self.runs:04d}", link_type="general_multiple",
                            reloadable=[True] * 4, active=[True] * 4)
        run_id = rng.choice(live)
        run = state.runs[run_id]
        base["run"] = run_id
        pick = rng.random()
        if pick < 0.55:
            key = f"/k{rng.randrange(200)}"
            value = rng.choice([rng.randrange(10_000), rng.choice(WORDS),
                                {"choice": rng.choice(WORDS), "rt": rng.randrange(3000)}])
            return Patch(**base, scope="batch_session", ops=[
                {"op": "add", "path": key, "value": value}])
        if pick < 0.75:
            if not run.group:
                return JoinGroup(**base)
            if rng.random() < 0.01:
                return LeaveGroup(**base)
            return Patch(**base, scope=f"group_session:{run.group}", ops=[
                {"op": "add", "path": f"/{run_id}", "value": {"round": rng.randrange(10),
                                                              "move": rng.choice(WORDS)}}])
        if pick < 0.95:
            if not run.group:
                return JoinGroup(**base)
            return SendGroupMessage(**base, msg={"text": " ".join(rng.choices(WORDS, k=5))})
        # A run's own steps: about 300 runs over a million events.
        if run.pos >= 0 and run.components[run.pos] == "started":
            return RetrieveData(**base, pos=run.pos)
        if rng.random() < 0.97:
            return WriteStudySession(**base, data={"answers": rng.choices(WORDS, k=8),
                                                   "page": run.pos})
        if run.pos + 1 < len(run.active):
            return StartComponent(**base, pos=run.pos + 1)
        return EndRun(**base)


async def build(redis: aioredis.Redis, keys: Keys, events: int, every: int) -> dict[str, Any]:
    state = BatchState(batch_id=BATCH)
    limits, sizes = Limits(), SizeTracker()
    mix = Mix()
    base_ms = int(time.time() * 1000) - events // 20  # 20 events per ms, ending now
    made = 0
    since = 0
    decide_s = xadd_s = 0.0
    snapshots = 0
    pipe = redis.pipeline(transaction=False)
    queued = 0
    commands: list[Command] = [OpenBatch(id="open", batch=BATCH, run="admin", gw="bench",
                                         groups=GroupLimits(max_active_members=3,
                                                            max_total_members=5))]
    while made < events:
        started = time.perf_counter()
        command = commands.pop() if commands else mix.command(state)
        try:
            decision = decide(state, command, limits, sizes)
        except Rejected:
            continue
        for event in decision.events:
            pos = f"{base_ms + made // 20}-{made % 20}"
            pipe.xadd(keys.events(BATCH), {"e": encode_event(event)}, id=pos)
            queued += 1
            made += 1
            since += 1
            state.pos = pos
        if decision.study_session is not None:
            last = decision.events[-1]
            pipe.hset(keys.study_session(BATCH, command.run), str(last.version),
                      decision.study_session)
        if since >= every:
            since = 0
            pipe.xadd(keys.snapshots(BATCH), {"s": encode_state(state)}, id=state.pos)
            snapshots += 1
        decide_s += time.perf_counter() - started
        if queued >= 10_000:
            started = time.perf_counter()
            await pipe.execute()
            xadd_s += time.perf_counter() - started
            queued = 0
    pipe.hset(keys.versions(BATCH), mapping=state.versions)
    pipe.sadd(keys.batches(keys.partition(BATCH)), BATCH)
    started = time.perf_counter()
    await pipe.execute()
    xadd_s += time.perf_counter() - started
    return {"events": made, "base_ms": base_ms, "snapshots": snapshots,
            "decide_fold_per_s": made / decide_s,
            "xadd_per_s": made / xadd_s, "state_bytes": len(encode_state(state)),
            "runs": len(state.runs), "groups": len(state.groups), "final": state}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = os.environ.get("COHORT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    server_url = os.environ.get("COHORT_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/test")
    name = f"cohort_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    database_url = urllib.parse.urlunsplit(
        urllib.parse.urlsplit(server_url)._replace(path="/" + name))
    prefix = f"bench{secrets.token_hex(4)}"
    keys = Keys(prefix, 16)
    redis = aioredis.Redis.from_url(redis_url)
    results: dict[str, Any] = {"events": args.events, "snapshot_every": args.snapshot_every}
    pool = None
    try:
        await migrate(database_url)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        say(f"building {args.events:,} events (snapshot every {args.snapshot_every}) ...")
        started = time.perf_counter()
        built = await build(redis, keys, args.events, args.snapshot_every)
        final = built.pop("final")
        results["build"] = {**built, "seconds": time.perf_counter() - started}
        stream_bytes = await redis.memory_usage(keys.events(BATCH), samples=0)
        snaps_bytes = await redis.memory_usage(keys.snapshots(BATCH), samples=0)
        results["redis"] = {
            "stream_bytes": stream_bytes, "bytes_per_event": stream_bytes / built["events"],
            "events_per_gb": int(2**30 / (stream_bytes / built["events"])),
            "snapshot_stream_bytes": snaps_bytes,
        }
        say(f"built in {results['build']['seconds']:.1f} s: decide+fold "
            f"{built['decide_fold_per_s']:,.0f} events/s, XADD {built['xadd_per_s']:,.0f}/s; "
            f"{built['runs']} runs, {built['groups']} groups, state "
            f"{built['state_bytes']:,} bytes")
        say(f"Redis: {stream_bytes / built['events']:.0f} bytes/event in the stream "
            f"({results['redis']['events_per_gb']:,} events/GB); snapshots "
            f"{snaps_bytes / 2**20:.1f} MiB")

        keep = 2000
        archiver = Archiver(redis, pool, keys, keep=keep, batch_size=args.archive_batch,
                            keep_snapshots=5, snapshot_every=args.snapshot_every)
        started = time.perf_counter()
        report = BatchReport(BATCH)
        await archiver.copy_snapshots(BATCH, report)
        snap_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = await archiver.archive_batch(BATCH, fill_gaps=False)
        seconds = time.perf_counter() - started
        results["archive"] = {"events": report.events, "segments": report.segments,
                              "seconds": seconds, "events_per_s": report.events / seconds,
                              "snapshot_copy_seconds": snap_seconds,
                              "left_in_redis": await redis.xlen(keys.events(BATCH))}
        say(f"archived {report.events:,} events in {report.segments} segments of "
            f"{args.archive_batch} in {seconds:.1f} s: {report.events / seconds:,.0f} events/s "
            f"(copying the {args.events // args.snapshot_every} snapshots before took "
            f"{snap_seconds:.1f} s)")
        await pool.execute("VACUUM ANALYZE archived_events")
        sizes = {}
        for table in ("archived_events", "archived_snapshots", "archived_study_sessions"):
            sizes[table] = {
                "total": await pool.fetchval("SELECT pg_total_relation_size($1)", table),
                "heap": await pool.fetchval("SELECT pg_relation_size($1)", table),
            }
        indexes = await pool.fetchval("SELECT pg_indexes_size('archived_events')")
        per = sizes["archived_events"]["total"] / report.events
        results["postgres"] = {"tables": sizes, "events_index_bytes": indexes,
                               "bytes_per_event": per, "events_per_gb": int(2**30 / per),
                               "bytes_per_event_with_snapshots": (
                                   sizes["archived_events"]["total"]
                                   + sizes["archived_snapshots"]["total"]) / report.events}
        say(f"Postgres: {per:.0f} bytes/event with indexes ({int(2**30 / per):,} events/GB; "
            f"heap {sizes['archived_events']['heap'] / report.events:.0f}, indexes "
            f"{indexes / report.events:.0f}); snapshots add "
            f"{sizes['archived_snapshots']['total'] / report.events:.0f} bytes/event")

        replay = Replay(redis, pool, keys)
        rng = random.Random(4)
        total = built["events"]
        # The IDs are dense (20 per ms from base_ms), so random positions are easy to name.
        positions = []
        for _ in range(args.positions):
            n = rng.randrange(total)
            positions.append(f"{built['base_ms'] + n // 20}-{n % 20}")
        positions.append(final.pos)
        timings = []
        for pos in positions:
            started = time.perf_counter()
            state = await replay.state_at(BATCH, key_of(pos))
            timings.append(time.perf_counter() - started)
            assert state.pos == pos, (state.pos, pos)
        assert encode_state(state) == encode_state(final)
        results["replay"] = {"positions": len(positions), "max_s": max(timings),
                             "median_s": statistics.median(timings), "min_s": min(timings)}
        say(f"state at {len(positions)} random positions: median "
            f"{statistics.median(timings) * 1000:.0f} ms, max {max(timings) * 1000:.0f} ms "
            f"(target < 1 s)")
        started = time.perf_counter()
        mid = positions[0]
        await replay.scope_state(BATCH, "batch_session", key_of(mid))
        diff = await replay.diff(BATCH, "batch_session", key_of(positions[1]), key_of(mid))
        results["replay"]["scope_and_diff_s"] = time.perf_counter() - started
        say(f"one scope's state and a diff: {results['replay']['scope_and_diff_s'] * 1000:.0f} "
            f"ms ({len(diff['ops'])} ops)")
        if args.export:
            started = time.perf_counter()
            lines = 0
            size = 0
            async for chunk in replay.export(BATCH):
                lines += chunk.count(b"\n")
                size += len(chunk)
            seconds = time.perf_counter() - started
            assert lines == total
            results["export"] = {"events_per_s": lines / seconds, "bytes": size,
                                 "seconds": seconds}
            say(f"timeline export: {lines:,} lines, {size / 2**20:.0f} MiB in {seconds:.1f} s "
                f"({lines / seconds:,.0f} events/s)")
        return results
    finally:
        if pool is not None:
            await pool.close()
        cursor = 0
        while True:
            cursor, found = await redis.scan(cursor, match=f"{prefix}:*", count=1000)
            if found:
                await redis.unlink(*found)
            if cursor == 0:
                break
        await redis.aclose()
        conn = await asyncpg.connect(server_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def say(text: str) -> None:
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--snapshot-every", type=int, default=500)
    parser.add_argument("--archive-batch", type=int, default=5000)
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--export", action="store_true", help="also time a full export")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
