"""The session worker: one writer per batch, by partition leases.

Each worker keeps a heartbeat in a registry, takes a fair share of the P
partitions by lease (epoch incremented on every takeover) and, per owned
partition, runs one loop: read a batch of commands after the stored cursor,
decide each against the in-memory state, then append every event, every
remembered outcome and the new cursor in one fenced Lua call. Rejections and
answers to retried commands go to the sending gateway's reply stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
import uuid

import msgspec
from redis.asyncio import Redis

from services.logs import run_loop
from services.settings import Settings
from session_store.commands import (
    CloseBatch,
    Command,
    ExpireArrival,
    FailRun,
    OpenBatch,
    Outcome,
    SetPresence,
    decode_command,
    decode_outcome,
    encode,
)
from session_store.connect import open_redis
from session_store.domain import (
    Decision,
    Limits,
    Rejected,
    SizeTracker,
    committed_outcome,
    decide,
)
from session_store.events import encode_event
from session_store.keys import Keys
from session_store.positions import ZERO
from session_store.projector import BatchState, encode_state
from session_store.store import (
    APPEND_CHUNK,
    EventStore,
    PlannedCommand,
    PlannedEvent,
    StaleEpoch,
    StreamEntry,
    VersionConflict,
)

log = logging.getLogger("cohort.worker")

# Commands read in an append's call (``EventStore.append``): at most one script slice
# (APPEND_CHUNK), so the read-ahead adds little to how long a script holds Redis. (A
# backlog is then taken a slice per iteration, where an XREAD takes COMMAND_BATCH; the
# append itself goes a slice per call either way.)
READ_AHEAD = APPEND_CHUNK

# Gateway id of commands the worker issues itself.
SYSTEM = "system"
# A reply stream nobody wrote to for this long belongs to a caller that is gone.
REPLIES_TTL_S = 24 * 3600
# Refusals that hold for good (the batch is closed, or was never opened): not
# remembered per command id.
FINAL_REFUSALS = frozenset({"batch_closed", "batch_not_found"})


class BatchHolder:
    """A batch's live state in the worker, with what snapshots need to know."""

    __slots__ = ("last_active", "since_snapshot", "sizes", "state")

    def __init__(self, state: BatchState) -> None:
        self.state = state
        self.sizes = SizeTracker()
        self.since_snapshot = 0
        self.last_active = time.monotonic()


class PartitionLoop:
    """Owns one partition at one epoch until stopped or fenced out."""

    def __init__(self, worker: Worker, partition: int, epoch: int) -> None:
        self.worker = worker
        self.partition = partition
        self.epoch = epoch
        self.batches: dict[str, BatchHolder] = {}
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.last_run_check = 0.0
        self.check_dupes = False
        # Batches known to be closed (never watched again).
        self.closed: set[str] = set()
        # Commands read with the last append (they came in while it was decided).
        self.ahead: list[StreamEntry] = []

    async def run(self) -> None:
        w = self.worker
        cursor = (await w.redis.get(w.keys.cursor(self.partition)) or b"0-0").decode()
        self.ahead = []  # read after another cursor (a direct call of handle, in tests)
        commands_key = w.keys.commands(self.partition)
        handled = 0
        tick = w.settings.worker_tick_ms / 1000
        clock = asyncio.get_running_loop().time
        began = 0.0
        gathering = False
        while not self.stopping:
            if gathering:
                rest = began + tick - clock()
                if rest > 0:
                    await asyncio.sleep(rest)
            began = clock()
            entries, self.ahead = self.ahead, []
            if not entries:
                reply = await w.redis.xread(
                    {commands_key: cursor}, count=w.settings.command_batch, block=500
                )
                if not reply:
                    gathering = False
                    await self.idle_snapshots()
                    await self.watch_runs()
                    continue
                entries = reply[0][1]
            # Several commands came in one read, fewer than a backlog: commands arrive
            # faster than iterations, so the next read waits out the tick.
            gathering = tick > 0 and 1 < len(entries) < w.settings.command_batch
            try:
                cursor = await self.handle(entries, cursor)
            except StaleEpoch as exc:
                log.warning("fenced out, dropping partition", extra={
                    "partition": self.partition, "detail": str(exc)})
                self.batches.clear()
                w.forget(self)
                return
            except VersionConflict as exc:
                # The in-memory state ran ahead of Redis (a retried command decided
                # again, say): rebuild from the log and handle the same commands
                # again, this time looking their ids up first (nothing was written).
                log.warning("version conflict, rebuilding", extra={
                    "partition": self.partition, "detail": str(exc)})
                self.batches.clear()
                self.check_dupes = True
                gathering = False  # the same commands again, at once
                continue
            self.check_dupes = False
            handled += len(entries)
            if handled >= 10 * w.settings.command_batch:
                handled = 0
                # Commands before the cursor are done with: keep the stream short.
                await w.redis.xtrim(commands_key, minid=cursor, approximate=True)

    async def holder(self, batch_id: str) -> BatchHolder:
        found = self.batches.get(batch_id)
        if found is None:
            state, _ = await self.worker.store.load_batch(batch_id)
            found = self.batches[batch_id] = BatchHolder(state)
        return found

    async def handle(self, entries: list, cursor: str) -> str:
        w = self.worker
        commands: list[tuple[str, Command | None]] = []
        for entry_id, fields in entries:
            try:
                commands.append((entry_id.decode(), decode_command(fields[b"c"])))
            except (msgspec.DecodeError, KeyError):
                log.error("undecodable command skipped", extra={"entry": entry_id.decode()})
                commands.append((entry_id.decode(), None))
        valid = [c for _, c in commands if c is not None]
        for batch_id in {c.batch for c in valid}:
            await self.holder(batch_id)
        # Retried ids are rare and the script catches them anyway, so the look-up
        # round trip is only paid after a conflict showed that one slipped through.
        prior: dict[tuple[str, str, str], bytes | None] = {}
        if self.check_dupes:
            stored = await w.store.dedupe_lookup([(c.batch, c.run, c.id) for c in valid])
            prior = dict(zip(((c.batch, c.run, c.id) for c in valid), stored, strict=True))

        planned: list[PlannedCommand] = []
        planned_for: list[Command] = []
        unrecorded: list[tuple[Command, Rejected]] = []
        final_ids: set[tuple[str, str, str]] = set()
        answers: list[tuple[Command, bytes]] = []
        seen: set[tuple[str, str, str]] = set()
        new_cursor = commands[-1][0]
        tainted = ""
        for entry_id, command in commands:
            if command is None:
                continue
            ident = (command.batch, command.run, command.id)
            if ident in final_ids:
                continue  # a repeat of a final refusal in this iteration: answered once
            if prior.get(ident) is not None or ident in seen:
                # Answered after the append, from what Redis remembers.
                planned.append(PlannedCommand(command.batch, command.run, command.id, []))
                planned_for.append(command)
                continue
            seen.add(ident)
            holder = self.batches[command.batch]
            try:
                decision = decide(holder.state, command, w.limits, holder.sizes)
            except Rejected as rejection:
                if rejection.code in FINAL_REFUSALS:
                    unrecorded.append((command, rejection))
                    final_ids.add(ident)
                    continue
                # Answered after the append: Redis may know this id already.
                planned.append(PlannedCommand(command.batch, command.run, command.id, [],
                                              rejected=encode(rejection.outcome(command))))
                planned_for.append(command)
                continue
            except Exception:
                # A bug, not bad input: refuse this command (recorded, so a retry is
                # refused too), end the iteration after it and reload the batch from
                # the log, whatever the failed decision left in memory. One bad
                # command must not stall its partition.
                log.exception("deciding a command failed", extra={
                    "batch": command.batch, "command": command.id})
                planned.append(PlannedCommand(
                    command.batch, command.run, command.id, [], rejected=encode(Outcome(
                        cmd=command.id, ok=False, code="internal_error",
                        message="the session service failed on this command",
                        conn=command.conn))))
                planned_for.append(command)
                new_cursor, tainted = entry_id, command.batch
                break
            planned.append(self.plan(command, decision))
            planned_for.append(command)
            holder.since_snapshot += len(decision.events)
            holder.last_active = time.monotonic()

        opened: list[str] = []
        closed: list[str] = []
        # Without a tick, the next commands are read in the append's own call: under
        # load the partition makes one round trip per iteration, not two. (With a
        # tick, the next read waits for it to gather more.)
        result = await w.store.append(
            self.partition, self.epoch, new_cursor, planned, w.settings.dedupe_ttl_s,
            read_ahead=0 if w.settings.worker_tick_ms else READ_AHEAD)
        self.ahead = result.ahead
        for command, plan, (kind, values) in zip(
            planned_for, planned, result.results, strict=True
        ):
            if kind == "new" and values:
                holder = self.batches.get(command.batch)  # gone if a dup dropped it above
                if holder is not None:
                    holder.state.pos = values[-1].decode()
                if isinstance(command, OpenBatch):
                    opened.append(command.batch)
                elif isinstance(command, CloseBatch):
                    closed.append(command.batch)
            if kind == "new":
                if command.reply or not values:
                    # Commands that wrote no event have no ack through the log.
                    pos = values[-1] if values else b""
                    answers.append((command, plan.template.replace(b"%POS%", pos)))
            elif kind == "rejected":
                answers.append((command, plan.rejected))
            elif kind == "dup":
                if values[0] == b"same-iteration":
                    continue  # the first copy in this iteration is answered already
                # Committed by an earlier attempt of this iteration (an append split
                # into slices, then a conflict): finish what its commit asks for.
                if isinstance(command, OpenBatch):
                    opened.append(command.batch)
                elif isinstance(command, CloseBatch) and decode_outcome(values[0]).ok:
                    closed.append(command.batch)
                if plan.events:
                    # Decided again in memory, but Redis already had it: forget the
                    # batch's state, it is rebuilt from the log on its next command.
                    self.batches.pop(command.batch, None)
                answers.append((command, values[0]))
        if tainted:
            self.batches.pop(tainted, None)
        if opened:
            await w.redis.sadd(w.keys.batches(self.partition), *opened)
        for batch_id in closed:
            await self.final_snapshot(batch_id)
        if unrecorded:
            answers += await self.final_refusals(unrecorded)
        await self.send_answers(answers)
        await self.maybe_snapshot()
        await self.watch_runs()
        return new_cursor

    async def final_refusals(self, refused: list[tuple[Command, Rejected]]
                             ) -> list[tuple[Command, bytes]]:
        """Answers to commands for a closed or unknown batch. They are not remembered:
        a retry gets the same answer anyway, and a record would re-create keys of a
        batch the finalizer has removed. A retry of a command that committed before
        the close still gets its stored outcome."""
        stored = await self.worker.store.dedupe_lookup(
            [(c.batch, c.run, c.id) for c, _ in refused])
        return [(command, found if found is not None else encode(rejection.outcome(command)))
                for (command, rejection), found in zip(refused, stored, strict=True)]

    def plan(self, command: Command, decision: Decision) -> PlannedCommand:
        """Turn a decision into the script's arguments, with what goes beside the events."""
        keys = self.worker.keys
        events = decision.events
        planned = [PlannedEvent(command.batch, e.scope, e.version, encode_event(e))
                   for e in events]
        if decision.study_session is not None:
            last = planned[-1]
            last.side_key = keys.study_session(command.batch, command.run)
            last.side_field = str(last.version)
            last.side_value = decision.study_session
        return PlannedCommand(
            command.batch, command.run, command.id, planned,
            template=committed_outcome(command, events),
            erase_key=(keys.study_session(command.batch, command.run)
                       if decision.erase_study_session else ""),
        )

    async def send_answers(self, answers: list[tuple[Command, bytes]]) -> None:
        if not answers:
            return
        w = self.worker
        pipe = w.redis.pipeline(transaction=False)
        streams: set[str] = set()
        for command, outcome_bytes in answers:
            if command.gw == SYSTEM:
                continue  # the worker's own commands (timeouts) have nobody to answer
            if not outcome_bytes:
                log.error("no outcome to answer", extra={"command": command.id})
                continue
            # Route to the connection that sent this copy, not the first one.
            outcome: Outcome = decode_outcome(outcome_bytes)
            outcome.conn = command.conn
            key = w.keys.replies(command.gw)
            pipe.xadd(key, {"o": encode(outcome)}, maxlen=w.settings.replies_maxlen,
                      approximate=True)
            streams.add(key)
        for key in streams:  # gone with a gateway that died or a CLI that stopped waiting
            pipe.expire(key, REPLIES_TTL_S)
        await pipe.execute()

    async def maybe_snapshot(self, idle_after_s: float | None = None) -> None:
        w = self.worker
        now = time.monotonic()
        for holder in self.batches.values():
            due = holder.since_snapshot >= w.settings.snapshot_every
            idle = (
                idle_after_s is not None and holder.since_snapshot > 0
                and now - holder.last_active >= idle_after_s
            )
            if due or idle:
                # Encoded now (consistent), written without holding up the loop.
                data = encode_state(holder.state)
                holder.since_snapshot = 0
                w.spawn(w.store.save_snapshot(holder.state.batch_id, data, holder.state.pos))

    async def final_snapshot(self, batch_id: str) -> None:
        """A closed batch gets its last snapshot now and leaves memory: nothing more is
        written for it, so nothing re-creates its keys after the finalizer removed them
        (a later command reloads it and is refused)."""
        holder = self.batches.pop(batch_id, None)
        self.closed.add(batch_id)
        if holder is not None:
            await self.worker.store.save_snapshot(
                batch_id, encode_state(holder.state), holder.state.pos)

    async def idle_snapshots(self) -> None:
        await self.maybe_snapshot(idle_after_s=2.0)

    async def watch_runs(self) -> None:
        """Turn gateways' last-seen marks into commands: fail runs nobody has seen for
        too long, and show group members closed or open again.

        A mark is the time a gateway last saw the participant (positive) or saw its
        last channel close (negative). The commands go through the partition's
        stream like any other, so their effects are logged and deduplicated.
        """
        w = self.worker
        s = w.settings
        now = time.monotonic()
        if now - self.last_run_check < s.run_check_every_s:
            return
        self.last_run_check = now
        # Batches this owner has not loaded yet may have runs to watch too; closed
        # ones have none, and stay out of memory (until the finalizer removes them).
        for raw in await w.redis.smembers(w.keys.batches(self.partition)):
            batch_id = raw.decode()
            if batch_id in self.batches or batch_id in self.closed:
                continue
            if (await self.holder(batch_id)).state.closed:
                del self.batches[batch_id]
                self.closed.add(batch_id)
        now_ms = int(time.time() * 1000)
        commands: list[Command] = []
        for batch_id, holder in self.batches.items():
            state = holder.state
            timeout_ms = state.group_limits.arrival_timeout_s * 1000
            commands += [ExpireArrival(id=f"expire-{at_ms}", batch=batch_id, run=run_id,
                                       gw=SYSTEM)
                         for run_id, at_ms in state.lobby.items() if now_ms - at_ms > timeout_ms]
            active = [r for r, run in state.runs.items() if run.is_active]
            if not active:
                continue
            marks = await w.redis.hmget(w.keys.last_seen(batch_id), active)
            for run_id, raw_mark in zip(active, marks, strict=True):
                if raw_mark is None:
                    continue
                mark = int(raw_mark)
                silent_ms = now_ms - abs(mark)
                group = state.runs[run_id].group
                limit_s = min(s.run_timeout_s, s.group_idle_s) if group else s.run_timeout_s
                if silent_ms > limit_s * 1000:
                    commands.append(FailRun(
                        id="timeout", batch=batch_id, run=run_id, gw=SYSTEM,
                        reason="idle" if group else "timeout",
                        message=f"the participant was not seen for {limit_s:g} s"))
                elif group:
                    closed = run_id in state.groups[group].closed
                    gone = mark < 0 and silent_ms > s.presence_grace_s * 1000
                    if gone != closed:
                        commands.append(SetPresence(
                            id=f"presence-{uuid.uuid4().hex[:12]}", batch=batch_id, run=run_id,
                            gw=SYSTEM, open=not gone))
        if commands:
            pipe = w.redis.pipeline(transaction=False)
            for command in commands:
                pipe.xadd(w.keys.commands(self.partition), {"c": encode(command)})
            await pipe.execute()


class Worker:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix, settings.partitions)
        self.store = EventStore(redis, self.keys)
        self.limits = Limits(
            max_session_bytes=settings.max_session_bytes,
            max_ops_per_patch=settings.max_ops_per_patch,
        )
        self.worker_id = settings.worker_id or (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.owned: dict[int, PartitionLoop] = {}
        self.background: set[asyncio.Task[object]] = set()
        self.stopped = asyncio.Event()

    def spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def forget(self, loop: PartitionLoop) -> None:
        if self.owned.get(loop.partition) is loop:
            del self.owned[loop.partition]

    async def live_workers(self) -> int:
        now = int(time.time() * 1000)
        key = self.keys.workers()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {self.worker_id: now})
        # A worker silent for one lease period is gone: its leases lapse then too.
        pipe.zremrangebyscore(key, 0, now - self.settings.lease_ms)
        pipe.zcard(key)
        return max(1, (await pipe.execute())[2])

    def start_loop(self, partition: int, epoch: int) -> None:
        loop = PartitionLoop(self, partition, epoch)
        self.owned[partition] = loop
        loop.task = asyncio.create_task(loop.run())
        loop.task.add_done_callback(lambda t, lp=loop: self._loop_done(lp, t))
        log.info("partition acquired", extra={"partition": partition, "epoch": epoch})

    def _loop_done(self, loop: PartitionLoop, task: asyncio.Task[None]) -> None:
        self.forget(loop)
        if not task.cancelled() and task.exception() is not None:
            log.error("partition loop crashed", extra={
                "partition": loop.partition, "error": repr(task.exception())})
            if not loop.stopping:
                # Give the lease back at once (a new epoch is taken on the next balance)
                # rather than leave the partition unowned until it lapses.
                self.spawn(self.store.release(loop.partition, self.worker_id, loop.epoch))

    async def balance(self) -> None:
        """Renew what we own, take free partitions up to a fair share, give back extras."""
        s = self.settings
        for partition, loop in list(self.owned.items()):
            if not await self.store.renew(partition, self.worker_id, s.lease_ms, loop.epoch):
                log.warning("lease lost", extra={"partition": partition})
                await self.stop_loop(loop, release=False)
        fair = math.ceil(s.partitions / await self.live_workers())
        # Start at a worker-specific offset so that workers spread out.
        offset = hash(self.worker_id) % s.partitions
        for i in range(s.partitions):
            if len(self.owned) >= fair:
                break
            partition = (offset + i) % s.partitions
            if partition in self.owned:
                continue
            epoch = await self.store.acquire(partition, self.worker_id, s.lease_ms)
            if epoch:
                self.start_loop(partition, epoch)
        while len(self.owned) > fair:
            partition = max(self.owned)
            await self.stop_loop(self.owned[partition], release=True)

    async def stop_loop(self, loop: PartitionLoop, release: bool) -> None:
        loop.stopping = True
        if loop.task is not None:
            loop.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop.task
        self.forget(loop)
        if release:
            await self.store.release(loop.partition, self.worker_id, loop.epoch)

    async def run(self) -> None:
        interval = self.settings.lease_ms / 3000
        log.info("worker up", extra={"worker": self.worker_id})
        while not self.stopped.is_set():
            try:
                await self.balance()
            except Exception:
                log.exception("balance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), interval)
        for loop in list(self.owned.values()):
            await self.stop_loop(loop, release=True)
        await self.redis.zrem(self.keys.workers(), self.worker_id)


async def serve(settings: Settings) -> None:
    redis = await open_redis(settings.redis_url)
    worker = Worker(settings, redis)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stopped.set)
    try:
        await worker.run()
    finally:
        await redis.aclose()


def run(settings: Settings) -> None:
    # uvloop's transports are C: the plain asyncio ones were a third of the
    # worker's busy time under load (py-spy).
    run_loop(serve(settings))


__all__ = ["ZERO", "Worker", "run", "serve"]
