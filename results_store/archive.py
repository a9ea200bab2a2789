"""Archiving batch timelines into Postgres exactly once, then trimming Redis.

The finalizer calls ``Archiver.run_once`` every ``archive_interval_s``; tests and
the benchmark call ``archive_batch`` directly. docs/archive.md has the why; in
short, per batch and pass:

1. **Snapshots.** Copy the worker's snapshots newer than the newest archived one
   (``archived_snapshots``, ON CONFLICT DO NOTHING). The newest one also tells
   which runs were aborted: their study session contents are deleted from
   Postgres at once (erasure).
2. **Recover.** The watermark is the last position of the newest row in
   ``archived_segments``. Events at or before it still in Redis (a crash between
   commit and trim) are trimmed now; they are never copied again.
3. **Closed segment.** Redis must keep everything after the K-th newest snapshot
   (K = 1 + resume_window // snapshot_every: the snapshot gateways load from so
   that their resume window is filled; the worker needs only the newest) and at
   least ``keep`` events. The prefix of the stream up to the K-th newest snapshot,
   minus the last ``keep`` events, is closed: it is copied in segments of at most
   ``batch_size`` events, each in one transaction that inserts the events, the
   contents of the study session writes among them, deletes the contents of runs
   aborted among them, and inserts the segment's tracking row. Only after the
   commit are the events trimmed (``XTRIM MINID``), and the Redis copies of study
   session contents that are now archived and no longer needed live (superseded
   versions, ended runs) removed.
4. **Snapshot gaps.** Where archived snapshots are more than 2N events apart (the
   worker keeps only its last 20 in Redis; a finalizer that fell behind misses
   some), fold the events in between and archive a snapshot every N events, so a
   replay to any position folds at most about N events.

5. **Closed batches.** A batch whose last event is ``batch_closed`` is archived to
   its end (no events kept in Redis), the final state is archived as a snapshot at
   that position, ``on_closed`` is called with it (the finalizer records the runs'
   ends), an ``archived_batches`` row is written, and only then are all of the
   batch's keys deleted and the batch taken out of its partition's set. A crash
   anywhere repeats the remaining steps on the next pass (the row tells a batch
   whose stream is gone already).

A per-batch advisory lock (transaction-scoped) serializes finalizers, so two may
run at once. ``checkpoint(step)`` is called at "after_copy" (the segment is in
the open transaction) and "after_commit" (committed, not trimmed): the crash
tests make the process exit there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis

from results_store.pacing import Pacer, check_duty
from results_store.replay import (
    START,
    EventFilter,
    Key,
    Replay,
    before,
    key_of,
    next_after,
    pos_of,
)
from session_store.keys import Keys
from session_store.projector import BatchState, decode_state, encode_state, fold
from session_store.upgrade import decode_head

log = logging.getLogger("cohort.archive")

# pg_advisory_xact_lock(int, int): (this class, hashtext(batch id)).
LOCK_CLASS = 0x63617263  # "carc"
EVENT_COLUMNS = ["batch_id", "ms", "seq", "pos", "scope", "kind", "version", "schema",
                 "run_id", "member", "payload"]
SNAPSHOT_READ = 20
# A batch without events for this long (its idle snapshot written long since) is
# skipped until its next event.
QUIET_MS = 30_000


class _Counts(msgspec.Struct):
    versions: dict[str, int] = {}


class _Erased(msgspec.Struct):
    study_session_erased: bool = False


class _Runs(msgspec.Struct):
    runs: dict[str, _Erased] = {}


_counts = msgspec.json.Decoder(_Counts)
_runs = msgspec.json.Decoder(_Runs)


def events_in(state_bytes: bytes) -> int:
    """Events folded into an encoded state: every event bumps one scope's version by one."""
    return sum(_counts.decode(state_bytes).versions.values())


class BatchReport(msgspec.Struct):
    batch: str
    events: int = 0
    segments: int = 0
    snapshots: int = 0
    filled_snapshots: int = 0
    study_sessions: int = 0
    erased_runs: int = 0
    trimmed: int = 0
    # Work left for the next pass (a snapshot gap bigger than this pass's budget).
    more: bool = False
    # A closed batch archived to its end and removed from Redis in this pass.
    removed: bool = False
    # Seconds spent pausing between segments (``duty``).
    paused_s: float = 0.0


class Archiver:
    def __init__(self, redis: Redis, pool: asyncpg.Pool, keys: Keys, *, keep: int = 5000,
                 batch_size: int = 5000, keep_snapshots: int = 5, snapshot_every: int = 500,
                 gap_limit: int = 0, fill_budget: int = 100_000, duty: float = 1.0,
                 spread_s: float = 10.0, checkpoint: Callable[[str], None] | None = None,
                 on_closed: Callable[[str, BatchState], Awaitable[None]] | None = None) -> None:
        self.redis = redis
        self.on_closed = on_closed
        self.pool = pool
        self.keys = keys
        self.keep = keep
        self.batch_size = max(1, batch_size)
        self.keep_snapshots = max(1, keep_snapshots)
        self.snapshot_every = max(1, snapshot_every)
        # Archived snapshots further apart than this (in events) get filled in. The
        # worker's are N apart, plus up to one iteration of commands.
        self.gap_limit = gap_limit or 2 * self.snapshot_every
        self.fill_budget = fill_budget
        self.duty = check_duty(duty)  # refused here, not at the first pass
        # A pass's backlog may take this long (the pass interval): pauses never make
        # it take longer, so batches written faster than ``duty`` allows still keep up.
        self.spread_s = spread_s
        self.checkpoint = checkpoint or (lambda _step: None)
        self.replay = Replay(redis, pool, keys)
        # Per batch: runs whose erasure was applied, snapshot gaps checked up to.
        self._erased: dict[str, set[str]] = {}
        self._gaps_checked: dict[str, tuple[Key, int]] = {}
        # Batch -> its last event ID when a pass found it quiet.
        self._quiet: dict[str, bytes] = {}

    @classmethod
    def from_settings(cls, redis: Redis, pool: asyncpg.Pool, settings: Any,
                      checkpoint: Callable[[str], None] | None = None,
                      on_closed: Callable[[str, BatchState], Awaitable[None]] | None = None,
                      ) -> Archiver:
        every = max(1, settings.snapshot_every)
        return cls(
            redis, pool, Keys(settings.key_prefix, settings.partitions),
            keep=max(settings.archive_keep, settings.resume_window),
            batch_size=settings.archive_batch,
            keep_snapshots=1 + settings.resume_window // every,
            snapshot_every=every, gap_limit=2 * every + settings.command_batch,
            duty=settings.archive_duty, spread_s=settings.archive_interval_s,
            checkpoint=checkpoint, on_closed=on_closed,
        )

    # -- passes ----------------------------------------------------------------

    async def batch_ids(self) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        for partition in range(self.keys.partitions):
            pipe.smembers(self.keys.batches(partition))
        found: set[str] = set()
        for members in await pipe.execute():
            found.update(m.decode() for m in members)
        return sorted(found)

    async def run_once(self) -> list[BatchReport]:
        """One pass over every batch, skipping those quiet since an earlier pass.

        Closing batches come first and unpaced (they are done with and leave Redis),
        then batches with no backlog; the others share one ``Pacer``, so that the
        pass as a whole, not each batch, is paced to end within the interval."""
        reports = []
        batch_ids = await self.batch_ids()
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in batch_ids:
            pipe.xrevrange(self.keys.events(batch_id), "+", "-", count=1)
            pipe.xlen(self.keys.events(batch_id))
        found = await pipe.execute()
        now_ms = int(time.time() * 1000)
        closing: list[str] = []
        live: list[tuple[str, bytes, int]] = []
        for batch_id, entries, length in zip(batch_ids, found[::2], found[1::2], strict=True):
            last, fields = entries[0] if entries else (b"", {})
            # Closed (or closed and partly removed: no stream left, see close_batch).
            if not last or decode_head(fields[b"e"]).kind == "batch_closed":
                closing.append(batch_id)
            elif self._quiet.get(batch_id) != last:
                live.append((batch_id, last, max(0, length - self.keep)))
        pacer = Pacer(self.duty, self.spread_s, sum(counted for _, _, counted in live))
        # Batches with nothing counted (snapshot copies, trims, gap fills only) go
        # before the paced ones: their cost is then part of the rate the pauses
        # are measured against, rather than unforeseen work after the pauses.
        live.sort(key=lambda item: item[2] > 0)
        for batch_id, last, counted in [(b, b"", 0) for b in closing] + live:
            pacer.begin(counted)
            try:
                report = await (self.close_batch(batch_id) if not last
                                else self.archive_batch(batch_id, pacer=pacer, most=counted))
            except Exception:
                log.exception("archiving failed", extra={"batch": batch_id})
                report = None
            finally:
                pacer.end()
            if report is None:
                continue
            if (report.events or report.snapshots or report.trimmed or report.erased_runs
                    or report.removed):
                log.info("archived", extra=msgspec.to_builtins(report))
            reports.append(report)
            # No event for a while: the worker's idle snapshot is written and copied,
            # so nothing changes until the next event.
            if last and not report.more and now_ms - key_of(last.decode())[0] > QUIET_MS:
                self._quiet[batch_id] = last
        return reports

    async def archive_batch(self, batch_id: str, keep: int | None = None,
                            fill_gaps: bool = True, pacer: Pacer | None = None,
                            most: int | None = None) -> BatchReport:
        """Copy snapshots, then archive and trim the events past ``keep`` (at most
        ``most`` of them), paced by ``pacer`` (a pass's) or by a pacer of its own."""
        report = BatchReport(batch_id)
        await self.copy_snapshots(batch_id, report)
        watermark = await self.watermark(batch_id)
        if watermark is not None:
            trimmed = await self.trim(batch_id, watermark)
            if trimmed:  # a crash after the last commit: finish what came after it
                report.trimmed += trimmed
                await self._release_after_crash(batch_id)
        bound = await self.closed_bound(batch_id)
        if bound is not None:
            budget = await self.redis.xlen(self.keys.events(batch_id)) - (
                self.keep if keep is None else keep)
            if most is not None:
                budget = min(budget, most)
            if pacer is None:
                pacer = Pacer(self.duty, self.spread_s, budget)
            else:
                pacer.found(budget)
            while budget > 0:
                copied = await self.archive_segment(batch_id, bound, min(budget, self.batch_size),
                                                    report)
                if not copied:
                    break
                budget -= copied
                report.paused_s += await pacer.after_segment(copied)
        if fill_gaps:
            await self.fill_snapshot_gaps(batch_id, report)
        return report

    # -- snapshots -------------------------------------------------------------

    async def copy_snapshots(self, batch_id: str, report: BatchReport) -> None:
        newest = await self.pool.fetchrow(
            "SELECT ms, seq FROM archived_snapshots WHERE batch_id = $1 AND source = 'worker' "
            "ORDER BY ms DESC, seq DESC LIMIT 1", batch_id)
        start = f"({newest['ms']}-{newest['seq']}" if newest else "-"
        key = self.keys.snapshots(batch_id)
        last: bytes | None = None
        while True:
            entries = await self.redis.xrange(key, start, "+", count=SNAPSHOT_READ)
            if not entries:
                break
            rows = []
            for entry_id, fields in entries:
                pos = entry_id.decode()
                ms, seq = key_of(pos)
                data = fields[b"s"]
                rows.append((batch_id, ms, seq, pos, events_in(data), data))
                last = data
            await self.pool.executemany(
                "INSERT INTO archived_snapshots (batch_id, ms, seq, pos, events, state) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING", rows)
            report.snapshots += len(rows)
            start = f"({entries[-1][0].decode()}"
        if last is not None:
            erased = {run for run, r in _runs.decode(last).runs.items() if r.study_session_erased}
            await self.erase(batch_id, erased, report)

    async def erase(self, batch_id: str, runs: set[str], report: BatchReport) -> None:
        """Delete archived study session contents of aborted runs (once per process)."""
        done = self._erased.setdefault(batch_id, set())
        new = sorted(runs - done)
        if not new:
            return
        await self.pool.execute(
            "DELETE FROM archived_study_sessions WHERE batch_id = $1 AND run_id = ANY($2::text[])",
            batch_id, new)
        report.erased_runs += len(new)
        done.update(new)

    async def closed_bound(self, batch_id: str) -> Key | None:
        """The K-th newest snapshot's position: nothing after it may leave Redis."""
        row = await self.pool.fetchrow(
            "SELECT ms, seq FROM archived_snapshots WHERE batch_id = $1 AND source = 'worker' "
            "ORDER BY ms DESC, seq DESC OFFSET $2 LIMIT 1", batch_id, self.keep_snapshots - 1)
        return (row["ms"], row["seq"]) if row else None

    # -- events ----------------------------------------------------------------

    async def watermark(self, batch_id: str, conn: Any = None) -> Key | None:
        row = await (conn or self.pool).fetchrow(
            "SELECT last_ms, last_seq FROM archived_segments WHERE batch_id = $1 "
            "ORDER BY last_ms DESC, last_seq DESC LIMIT 1", batch_id)
        return (row["last_ms"], row["last_seq"]) if row else None

    async def trim(self, batch_id: str, upto: Key) -> int:
        """Remove events at or before ``upto`` (archived) from the stream."""
        return int(await self.redis.xtrim(self.keys.events(batch_id), minid=pos_of(
            next_after(upto)), approximate=False))

    async def archive_segment(self, batch_id: str, bound: Key, limit: int,
                              report: BatchReport, trim: bool = True) -> int:
        """Copy up to ``limit`` events after the watermark, at or before ``bound``, in
        one transaction; then trim them (unless ``trim`` is false: a closing batch
        keeps its stream until all of it goes). Returns how many were copied."""
        stream = self.keys.events(batch_id)
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                                   LOCK_CLASS, batch_id)
                lo = await self.watermark(batch_id, conn) or START
                if lo >= bound:
                    return 0
                start = f"({pos_of(lo)}" if lo != START else "-"
                entries = await self.redis.xrange(stream, start, pos_of(bound), count=limit)
                if not entries:
                    return 0
                records = []
                writes: list[tuple[str, int]] = []
                aborted: set[str] = set()
                ended: set[str] = set()
                for entry_id, fields in entries:
                    pos = entry_id.decode()
                    raw = fields[b"e"]
                    head = decode_head(raw)
                    ms, seq = key_of(pos)
                    records.append((batch_id, ms, seq, pos, head.scope, head.kind, head.version,
                                    head.schema, head.run, head.member or head.to, raw.decode()))
                    if head.kind == "study_session_written":
                        writes.append((head.scope[4:], head.version))
                    elif head.kind == "run_ended":
                        (aborted if head.state == "aborted" else ended).add(head.scope[4:])
                await conn.copy_records_to_table("archived_events", records=records,
                                                 columns=EVENT_COLUMNS)
                report.study_sessions += await self._copy_study_sessions(
                    conn, batch_id, [w for w in writes if w[0] not in aborted])
                if aborted:
                    await conn.execute(
                        "DELETE FROM archived_study_sessions WHERE batch_id = $1 "
                        "AND run_id = ANY($2::text[])", batch_id, sorted(aborted))
                first, last = records[0], records[-1]
                await conn.execute(
                    "INSERT INTO archived_segments (batch_id, first_pos, last_pos, first_ms, "
                    "first_seq, last_ms, last_seq, events) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    batch_id, first[3], last[3], first[1], first[2], last[1], last[2],
                    len(records))
                self.checkpoint("after_copy")
        self.checkpoint("after_commit")
        self._erased.setdefault(batch_id, set()).update(aborted)
        last_key = (last[1], last[2])
        report.events += len(records)
        report.segments += 1
        if trim:
            report.trimmed += await self.trim(batch_id, last_key)
            await self._release_study_sessions(batch_id, writes, ended | aborted)
        return len(records)

    async def _copy_study_sessions(self, conn: asyncpg.Connection, batch_id: str,
                                   writes: list[tuple[str, int]]) -> int:
        if not writes:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for run_id, version in writes:
            pipe.hget(self.keys.study_session(batch_id, run_id), str(version))
        rows = [(batch_id, run_id, version, value.decode())
                for (run_id, version), value in zip(writes, await pipe.execute(), strict=True)
                if value is not None]  # None: erased by an abort since
        if rows:
            await conn.executemany(
                "INSERT INTO archived_study_sessions (batch_id, run_id, version, data) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", rows)
        return len(rows)

    async def _release_after_crash(self, batch_id: str) -> None:
        segment = await self.pool.fetchrow(
            "SELECT first_ms, first_seq, last_ms, last_seq FROM archived_segments "
            "WHERE batch_id = $1 ORDER BY last_ms DESC, last_seq DESC LIMIT 1", batch_id)
        rows = await self.pool.fetch(
            "SELECT scope, kind, version FROM archived_events WHERE batch_id = $1 "
            "AND (ms, seq) >= ($2, $3) AND (ms, seq) <= ($4, $5) "
            "AND kind IN ('study_session_written', 'run_ended')", batch_id, *segment)
        await self._release_study_sessions(
            batch_id, [(r["scope"][4:], r["version"]) for r in rows
                       if r["kind"] == "study_session_written"],
            {r["scope"][4:] for r in rows if r["kind"] == "run_ended"})

    async def _release_study_sessions(self, batch_id: str, writes: list[tuple[str, int]],
                                      ended: set[str]) -> None:
        """Redis keeps only what live reads need: a run's newest study session while it
        is active. Versions older than an archived write, and every version of an
        ended run, are archived already (their writes come before)."""
        newest: dict[str, int] = {}
        for run_id, version in writes:
            if run_id not in ended:
                newest[run_id] = max(version, newest.get(run_id, 0))
        if not newest and not ended:
            return
        pipe = self.redis.pipeline(transaction=False)
        for run_id in sorted(ended):
            pipe.delete(self.keys.study_session(batch_id, run_id))
        runs = sorted(newest)
        for run_id in runs:
            pipe.hkeys(self.keys.study_session(batch_id, run_id))
        results = await pipe.execute()
        fields = results[len(ended):]
        pipe = self.redis.pipeline(transaction=False)
        stale = 0
        for run_id, names in zip(runs, fields, strict=True):
            old = [n for n in names if int(n) < newest[run_id]]
            if old:
                pipe.hdel(self.keys.study_session(batch_id, run_id), *old)
                stale += 1
        if stale:
            await pipe.execute()

    # -- closed batches --------------------------------------------------------

    async def close_batch(self, batch_id: str) -> BatchReport:
        """Archive a closed batch to its end, then remove it from Redis (step 5)."""
        report = BatchReport(batch_id)
        entries = await self.redis.xrevrange(self.keys.events(batch_id), "+", "-", count=1)
        if entries:
            closed_at = key_of(entries[0][0].decode())
            await self.copy_snapshots(batch_id, report)
            while await self.archive_segment(batch_id, closed_at, self.batch_size, report,
                                             trim=False):
                pass
            await self.fill_snapshot_gaps(batch_id, report)
            if report.more:
                return report  # a long gap to fill first; the next pass goes on
            final = await self.replay.state_at(batch_id, closed_at)
            if not final.closed or key_of(final.pos) != closed_at:
                log.error("closed batch does not replay to its close", extra={
                    "batch": batch_id, "pos": final.pos})
                return report
            data = encode_state(final)
            await self.pool.execute(
                "INSERT INTO archived_snapshots (batch_id, ms, seq, pos, events, state, source) "
                "VALUES ($1, $2, $3, $4, $5, $6, 'finalizer') ON CONFLICT DO NOTHING",
                batch_id, *closed_at, final.pos, events_in(data), data)
            if self.on_closed is not None:
                await self.on_closed(batch_id, final)
            await self.pool.execute(
                "INSERT INTO archived_batches (batch_id, closed_pos, closed_ms, closed_seq, "
                "events, runs_ended) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                batch_id, final.pos, *closed_at, events_in(data),
                sum(run.reason == "batch_closed" for run in final.runs.values()))
        else:
            row = await self.pool.fetchrow(
                "SELECT s.state FROM archived_batches b JOIN archived_snapshots s ON "
                "s.batch_id = b.batch_id AND s.ms = b.closed_ms AND s.seq = b.closed_seq "
                "WHERE b.batch_id = $1", batch_id)
            if row is None:
                # An open batch whose stream was trimmed empty (keep=0: tests, benches).
                log.debug("batch without events or archive record", extra={"batch": batch_id})
                return report
            final = decode_state(row["state"])
        await self._remove(batch_id, final)
        report.removed = True
        return report

    async def _remove(self, batch_id: str, final: BatchState) -> None:
        """Delete every key of the batch, then forget it (that order: a crash in between
        leaves it in the set, and the next pass finishes)."""
        keys = self.keys
        names = [keys.events(batch_id), keys.versions(batch_id), keys.snapshots(batch_id),
                 keys.last_seen(batch_id)]
        for run_id in final.runs:
            names += [keys.dedupe(batch_id, run_id), keys.study_session(batch_id, run_id)]
        # Commands of no run: the API's. Experimenters' own (console edits, named after
        # them) are not known here; their dedupe records expire with their TTL.
        names.append(keys.dedupe(batch_id, "admin"))
        # All in one partition, so one slot: chunks keep each call short.
        for start in range(0, len(names), 500):
            await self.redis.delete(*names[start:start + 500])
        await self.pool.execute(
            "UPDATE archived_batches SET removed_at = now() WHERE batch_id = $1 "
            "AND removed_at IS NULL", batch_id)
        await self.redis.srem(keys.batches(keys.partition(batch_id)), batch_id)
        self._quiet.pop(batch_id, None)
        self._erased.pop(batch_id, None)
        self._gaps_checked.pop(batch_id, None)

    # -- snapshot gaps ---------------------------------------------------------

    async def fill_snapshot_gaps(self, batch_id: str, report: BatchReport) -> None:
        """Archive snapshots where the archived ones are more than ``gap_limit`` events
        apart, one every N events (folding what lies between)."""
        checked_key, checked_events = self._gaps_checked.get(batch_id, (START, 0))
        rows = await self.pool.fetch(
            "SELECT ms, seq, events FROM archived_snapshots WHERE batch_id = $1 "
            "AND (ms, seq) > ($2, $3) ORDER BY ms, seq", batch_id, *checked_key)
        budget = self.fill_budget
        prev_key, prev_events = checked_key, checked_events
        for row in rows:
            key, events = (row["ms"], row["seq"]), row["events"]
            if events - prev_events > self.gap_limit:
                if events - prev_events > budget and budget < self.fill_budget:
                    report.more = True
                    break  # the next pass goes on from here (a first gap is always done)
                report.filled_snapshots += await self._fill(batch_id, prev_key, key)
                budget -= events - prev_events
            prev_key, prev_events = key, events
            self._gaps_checked[batch_id] = (prev_key, prev_events)

    async def _fill(self, batch_id: str, lo: Key, hi: Key) -> int:
        started = time.monotonic()
        state: BatchState | None = None
        if lo != START:
            row = await self.pool.fetchrow(
                "SELECT state FROM archived_snapshots WHERE batch_id = $1 AND ms = $2 "
                "AND seq = $3", batch_id, *lo)
            state = decode_state(row["state"])
        state = state or BatchState(batch_id=batch_id)
        made = 0
        since = 0
        rows: list[tuple[Any, ...]] = []
        async for items in self.replay.iter_chunks(
                batch_id, EventFilter(after=lo, until=before(hi))):
            for item in items:
                fold(state, self.replay.decode(item), item.pos)
                since += 1
                if since >= self.snapshot_every:
                    since = 0
                    data = encode_state(state)
                    ms, seq = key_of(state.pos)
                    rows.append((batch_id, ms, seq, state.pos, events_in(data), data))
            if len(rows) >= 10:
                made += await self._insert_filled(rows)
        made += await self._insert_filled(rows)
        if made:
            log.info("snapshot gap filled", extra={
                "batch": batch_id, "from": pos_of(lo), "to": pos_of(hi), "snapshots": made,
                "seconds": round(time.monotonic() - started, 3)})
        return made

    async def _insert_filled(self, rows: list[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        await self.pool.executemany(
            "INSERT INTO archived_snapshots (batch_id, ms, seq, pos, events, state, source) "
            "VALUES ($1, $2, $3, $4, $5, $6, 'finalizer') ON CONFLICT DO NOTHING", rows)
        made = len(rows)
        rows.clear()
        return made
