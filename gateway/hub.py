"""The gateway's live core: batch projections, partition readers, fan-out, replies.

For every batch it has participants of, the gateway keeps the projected state
(snapshot plus tail, folded by the same projector as the worker) and a window
of recent changes for resumes. One reader per partition XREADs the event
streams of those batches (a short BLOCK, the key list rebuilt every round),
folds what it gets and, per scope and read, encodes ONE frame that it queues
on every subscriber of that scope. Commands go out through one batching
sender; rejections come back on this gateway's own reply stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import metrics
from gateway.connection import CLOSE_BATCH_CLOSED, Connection
from gateway.messages import (
    AckFrame,
    Change,
    ErrorFrame,
    EventsFrame,
    FailFrame,
    GroupChange,
    GroupFrame,
    UpdateFrame,
    encode_frame,
)
from gateway.view import BatchView, group_change, group_scopes, message_frame, message_is_for
from services.settings import Settings
from session_store import positions
from session_store.commands import Command, Outcome, decode_outcome, encode
from session_store.events import (
    ArrivalEnded,
    BatchClosed,
    Event,
    GroupMessage,
    MemberJoined,
    MemberLeft,
    SessionPatched,
    decode_event,
    group_scope,
    group_session_scope,
    scope_group,
)
from session_store.jsonpatch import PatchError
from session_store.keys import Keys
from session_store.projector import BatchState, ProjectionError, fold
from session_store.store import EventStore, lua_script

log = logging.getLogger("cohort.gateway")

VIEW_GRACE_S = 30.0
SEEN_EVERY_S = 10.0
READ_COUNT = 1000
# Coalescing: after a read whose frames went to many sockets, the next read waits
# until this long after the last one began, so that a busy batch sends at most one
# frame per scope per tick (writing a frame to a socket costs far more than adding
# a change to it). Idle batches are unaffected (a read blocks until the next
# event), and so are narrow frames (a pair's messages go out at once).
TICK_S = 0.005
WIDE_FANOUT = 16
Queued = tuple[int, bytes, Callable[[Exception], None]]


class CommandSender:
    """Queues commands and writes each flush's worth together.

    Per partition, calls of ``submit.lua`` append that partition's commands in
    order (``SLICE`` commands per call). The calls are EVAL with the script's text,
    not EVALSHA: Redis caches the script either way, and EVAL never answers NOSCRIPT
    (after a restart or SCRIPT FLUSH), so no load-and-retry step can put a
    partition's slices out of order and no SCRIPT EXISTS round trip precedes them.

    On a single Redis every call of a flush shares one pipeline: one round trip.
    On Redis Cluster each partition has its own writer, which sends that
    partition's calls to its shard one after another, so that a slow or failing
    shard holds up only its own partitions. Cluster pipelines are not used: they
    re-send their whole stack after a dropped connection. The cluster client does
    re-send a single call after a dropped connection (the first may have run), so
    there every call carries a number, increasing per sender, and the script keeps
    the highest one appended per partition (``Keys.submitted``): a call sent again
    appends nothing. That also lets the writer itself retry a call for a while
    (``retry_s``: a failover, a slot being migrated) instead of failing its
    commands at once. While a slot is migrated, Redis refuses a two-key script
    whose keys are on different sides (TRYAGAIN): such a call goes out again
    without its number, as a plain append; a duplicate it might cause is caught
    by the worker's deduplication by command id.
    """

    # Commands per script call: bounds how long one call holds Redis.
    SLICE = 500
    # How long a sender's mark outlives its last call (a gateway that stopped
    # leaves one small key per partition behind for this long).
    SUBMITTED_TTL_S = 86_400

    def __init__(self, redis: Redis, keys: Keys, retry_s: float = 20.0) -> None:
        self.redis = redis
        self.keys = keys
        # Cluster: how long the writer retries a call that failed in a way that may
        # pass (connection, TRYAGAIN, cluster down) before failing its commands.
        self.retry_s = retry_s
        # Sent with every call, so without its comments (318 bytes instead of 1,182).
        self._script = "\n".join(line for line in lua_script("submit.lua").splitlines()
                                 if not line.lstrip().startswith("--"))
        self._cluster = isinstance(redis, RedisCluster)
        self._buffer: list[Queued] = []
        self._wake = asyncio.Event()
        # Cluster: commands waiting per partition, and each partition's writer task.
        self._waiting: dict[int, list[Queued]] = {}
        self._writers: dict[int, asyncio.Task[None]] = {}
        self._name = uuid.uuid4().hex[:12]
        self._calls = 0

    def send(self, partition: int, command: Command, on_error: Callable[[Exception], None]) -> None:
        self._buffer.append((partition, encode(command), on_error))
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch, self._buffer = self._buffer, []
                if not batch:
                    continue
                if self._cluster:
                    self._hand_to_writers(batch)
                    continue
                try:
                    await self.flush(batch)
                except Exception as exc:  # whatever went wrong, the sender goes on
                    log.error("command write failed", extra={"error": repr(exc),
                                                             "count": len(batch)})
                    _failed(batch, exc)
                metrics.COMMANDS.inc(len(batch))
        finally:
            for writer in list(self._writers.values()):
                writer.cancel()

    async def flush(self, batch: list[Queued]) -> None:
        """Single Redis: write ``batch`` in one pipeline; each command whose call
        failed has its ``on_error`` called. (A failed call fails only its own
        commands: the errors that fail one call, such as OOM or BUSY, fail every
        call of the pipeline alike.)"""
        calls: list[tuple[int, list[Queued]]] = []
        for partition, items in _by_partition(batch).items():
            calls.extend((partition, items[start:start + self.SLICE])
                         for start in range(0, len(items), self.SLICE))
        pipe = self.redis.pipeline(transaction=False)
        for partition, part in calls:
            pipe.eval(self._script, 1, self.keys.commands(partition), *(p for _, p, _ in part))
        results = await pipe.execute(raise_on_error=False)
        for (_, part), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                log.error("command write failed", extra={"error": repr(result), "count": len(part)})
                _failed(part, result)

    def _hand_to_writers(self, batch: list[Queued]) -> None:
        for partition, items in _by_partition(batch).items():
            self._waiting.setdefault(partition, []).extend(items)
            if partition not in self._writers:
                self._writers[partition] = asyncio.create_task(self._write(partition))

    async def _write(self, partition: int) -> None:
        """Cluster: send one partition's waiting commands to its shard, in order."""
        waiting = self._waiting[partition]
        key = self.keys.commands(partition)
        mark = self.keys.submitted(partition, self._name)
        part: list[Queued] = []
        try:
            while waiting:
                part = waiting[:self.SLICE]
                del waiting[:self.SLICE]
                self._calls += 1
                try:
                    await self._submit_numbered(key, mark, self._calls, part)
                except Exception as exc:
                    # What waits behind the failed commands fails with them: it
                    # would overtake them when they are retried.
                    log.error("command write failed", extra={
                        "error": repr(exc), "count": len(part) + len(waiting)})
                    part.extend(waiting)
                    waiting.clear()
                    _failed(part, exc)
                metrics.COMMANDS.inc(len(part))
                part = []
        finally:
            del self._writers[partition]
            left = part + waiting
            waiting.clear()
            if left:  # cancelled mid-way: nobody will write these
                _failed(left, RuntimeError("command sender stopped"))

    async def _submit_numbered(self, key: str, mark: str, number: int,
                               part: list[Queued]) -> None:
        payloads = [p for _, p, _ in part]
        numbered = True
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                # Bounded, so that a connection gone silent with a request out
                # cannot hold the partition for TCP's minutes (a cancelled call that
                # ran anyway is caught by its number when sent again). At least
                # ATTEMPT_S: redis-py's own TRYAGAIN retries take ~0.5 s, more on a
                # busy machine, and must end in their error, not in this timeout.
                async with asyncio.timeout(max(deadline - time.monotonic(), ATTEMPT_S)):
                    if numbered:
                        await self.redis.eval(self._script, 2, key, mark, number,
                                              self.SUBMITTED_TTL_S, *payloads)
                    else:
                        await self.redis.eval(self._script, 1, key, *payloads)
                return
            except NOT_RETRIABLE:
                raise
            except (*RETRIABLE, TimeoutError) as exc:
                if numbered and _keys_split(exc):
                    # redis-py also gives up with "TTL exhausted" after re-sending a
                    # call over dropped connections, so the call may have run: its
                    # mark says. A call whose mark does not show it goes out
                    # unnumbered (the worker drops a repeat by command id), at once
                    # and even past the deadline: redis-py's own TRYAGAIN retries
                    # (16 tries, the last 8 sleeping) may have used it up, and the
                    # unnumbered form is a different call that has not had its try.
                    if await self._landed(mark, number):
                        return
                    numbered = False
                    log.info("command write goes out unnumbered", extra={"error": repr(exc)})
                    continue
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("command write retried", extra={"error": f"{exc!r}: {exc}"})
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)

    async def _landed(self, mark: str, number: int) -> bool:
        """Whether numbered call ``number`` surely appended: its mark reached it. (A
        single-key read follows a migration's ASK; a mark that cannot be read now
        counts as not reached.)"""
        try:
            async with asyncio.timeout(ATTEMPT_S):
                value = await self.redis.get(mark)
        except (*RETRIABLE, TimeoutError):
            return False
        return value is not None and int(value) >= number


# Least time one Cluster call may take before the writer gives up on it.
ATTEMPT_S = 3.0
# Cluster errors that may pass on their own; a numbered call may be sent again.
RETRIABLE = (RedisConnectionError, RedisTimeoutError, TryAgainError, ClusterError,
             SlotNotCoveredError)
NOT_RETRIABLE = (AuthenticationError, AuthorizationError)


def _keys_split(exc: BaseException) -> bool:
    """TRYAGAIN (redis-py gives up on it as "TTL exhausted"): the call's keys are on
    two sides of a slot migration."""
    return isinstance(exc, TryAgainError) or (
        isinstance(exc, ClusterError) and "TTL exhausted" in str(exc))


def _by_partition(batch: list[Queued]) -> dict[int, list[Queued]]:
    grouped: dict[int, list[Queued]] = {}
    for item in batch:
        grouped.setdefault(item[0], []).append(item)
    return grouped


def _failed(items: list[Queued], exc: Exception) -> None:
    for _, _, on_error in items:
        try:
            on_error(exc)
        except Exception:  # one broken callback must not keep the others from theirs
            log.exception("command error callback failed")


def seen_ttl_s(settings: Settings) -> int:
    """How long a batch's last-seen hash outlives its last mark: well past every limit
    the worker judges marks by, so that nothing it needs expires, and short enough
    that a mark written after the batch was removed from Redis does not stay."""
    return int(3 * max(settings.run_timeout_s, settings.group_idle_s, 60))


def _warn_if_failed(done: asyncio.Future[Exception | None]) -> None:
    error = None if done.cancelled() else done.result()
    if error is not None:  # liveness marks are best effort: one line per failed write
        log.warning("could not record last seen", extra={"error": repr(error)})


class MarkWriter:
    """Last-seen marks, written together: one pipeline per round trip, however many
    channels open at once (a join storm's per-open HSETs ran the pool out)."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        # batch -> run -> mark; a later mark of the same run replaces an earlier one.
        self._pending: dict[str, dict[str, int]] = {}
        self._done: asyncio.Future[Exception | None] | None = None
        self._task: asyncio.Task[None] | None = None

    def write(self, batch_id: str, run_id: str, mark: int) -> asyncio.Future[Exception | None]:
        """Queue a mark; the future is resolved (with the error, if any) once it is written."""
        self._pending.setdefault(batch_id, {})[run_id] = mark
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._done.add_done_callback(_warn_if_failed)
        if self._task is None:
            self._task = asyncio.ensure_future(self._flush())
        return self._done

    async def _flush(self) -> None:
        done: asyncio.Future[Exception | None] | None = None
        try:
            await asyncio.sleep(0)  # the marks of this loop round share the write
            while self._pending:
                pending, done = self._pending, self._done
                self._pending, self._done = {}, None
                error: Exception | None = None
                pipe = self.redis.pipeline(transaction=False)
                for batch_id, marks in pending.items():
                    key = self.keys.last_seen(batch_id)
                    pipe.hset(key, mapping=marks)
                    pipe.expire(key, self.ttl_s)
                try:
                    await pipe.execute()
                except Exception as exc:
                    error = exc
                if done is not None and not done.done():
                    done.set_result(error)
        finally:
            self._task = None
            for left in (done, self._done):
                if left is not None and not left.done():
                    left.set_result(RuntimeError("mark writer stopped"))
            self._pending, self._done = {}, None


class Hub:
    def __init__(self, settings: Settings, redis: Redis, gateway_id: str | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix, settings.partitions)
        self.store = EventStore(redis, self.keys)
        self.gateway_id = gateway_id or settings.gateway_id or uuid.uuid4().hex[:12]
        self.views: dict[str, BatchView] = {}
        self._loading: dict[str, asyncio.Future[BatchView | None]] = {}
        self.connections: dict[str, Connection] = {}
        self.run_connections: dict[str, set[Connection]] = {}
        self.marks = MarkWriter(redis, self.keys, seen_ttl_s(settings))
        self.sender = CommandSender(redis, self.keys, settings.command_retry_s)
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        self._partition_wake = {p: asyncio.Event() for p in range(settings.partitions)}
        self._tasks: list[asyncio.Task[None]] = []
        # run id -> monotonic time this gateway last wrote its last-seen mark.
        self.seen_at: dict[str, float] = {}
        self.last_fanout = 0

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._read_partition(p))
                       for p in range(self.settings.partitions)]
        self._tasks.append(asyncio.create_task(self._read_replies()))
        self._tasks.append(asyncio.create_task(self.sender.run()))
        self._tasks.append(asyncio.create_task(self._janitor()))
        self._tasks.append(asyncio.create_task(self._keep_marks_fresh()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.redis.delete(self.keys.replies(self.gateway_id))

    # -- batches and subscriptions --------------------------------------------

    async def open_view(self, batch_id: str) -> BatchView | None:
        """This gateway's projection of a batch (loaded once), or None if it does not exist."""
        view = self.views.get(batch_id)
        if view is not None:
            return view
        loading = self._loading.get(batch_id)
        if loading is None:
            loading = self._loading[batch_id] = asyncio.ensure_future(self._load(batch_id))
            loading.add_done_callback(lambda _f: self._loading.pop(batch_id, None))
        return await asyncio.shield(loading)

    async def _load(self, batch_id: str) -> BatchView | None:
        s = self.settings
        back = 1 + s.resume_window // max(1, s.snapshot_every)
        state, tail = await self.store.load_batch(batch_id, keep_tail=True, snapshots_back=back)
        if not state.opened:
            return None
        view = BatchView(state, self.keys.partition(batch_id), s.resume_window)
        # Every change after the base is remembered: the base is just before the tail.
        view.recent_base = self._base_before(state, tail)
        for pos, event in tail:
            view.remember(pos, event)
        self.views[batch_id] = view
        self._partition_wake[view.partition].set()
        return view

    @staticmethod
    def _base_before(state: BatchState, tail: list[tuple[str, Event]]) -> str:
        if not tail:
            return state.pos
        ms, seq = positions.parse(tail[0][0])
        return f"{ms}-{seq - 1}" if seq > 0 else f"{ms - 1}-18446744073709551615"

    def attach(self, conn: Connection, since: str | None) -> None:
        """Register a connection and queue what it needs first: a resume or the full state."""
        self.connections[conn.id] = conn
        self.run_connections.setdefault(conn.run, set()).add(conn)
        conn.view.subscribe(conn, conn.view.scopes_of(conn.run))
        metrics.CONNECTIONS.inc()
        frames = conn.view.resume_frames(conn, since) if since else None
        if frames is None:
            frames = conn.view.state_frames(conn.scopes, resync=bool(since))
            if since:
                conn.resyncs += 1
                metrics.RESYNCS.inc()
        for frame in frames:
            conn.push(frame)

    def detach(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is not None:
            metrics.CONNECTIONS.dec()
        same_run = self.run_connections.get(conn.run)
        if same_run is not None:
            same_run.discard(conn)
            if not same_run:
                del self.run_connections[conn.run]
                # Its last channel here closed: a negative mark says since when.
                self.note_seen(conn.view.batch_id, conn.run, force=True, gone=True)
        conn.view.unsubscribe(conn)

    async def mark_seen(self, batch_id: str, run_id: str, force: bool = False,
                        gone: bool = False) -> None:
        """``note_seen``, then wait until the mark is written (or its write failed)."""
        written = self.note_seen(batch_id, run_id, force, gone)
        if written is not None:
            # Shielded: the write is shared, a caller that goes away must not cancel it.
            await asyncio.shield(written)

    def note_seen(self, batch_id: str, run_id: str, force: bool = False,
                  gone: bool = False) -> asyncio.Future[Exception | None] | None:
        """Queue a mark that a run's participant is alive (at most every SEEN_EVERY_S per
        run), or, with ``gone``, that its channel closed (a negative time). Answers the
        shared write's future (None if throttled); a failed write is logged there."""
        now = time.monotonic()
        if not force and now - self.seen_at.get(run_id, 0.0) < SEEN_EVERY_S:
            return None
        if gone:
            self.seen_at.pop(run_id, None)
        else:
            self.seen_at[run_id] = now
        ms = int(time.time() * 1000)
        return self.marks.write(batch_id, run_id, -ms if gone else ms)

    # -- commands --------------------------------------------------------------

    def submit(self, command: Command) -> None:
        """Send a participant's command; its answer arrives as an ack (via the log) or a fail."""
        def failed(exc: Exception) -> None:
            conn = self.connections.get(command.conn)
            if conn is not None:
                conn.push(encode_frame(FailFrame(
                    id=command.id, code="unavailable",
                    message="the session store is unavailable; retry later")), essential=True)
        self.sender.send(self.keys.partition(command.batch), command, failed)

    async def request(self, command: Command, timeout_s: float = 10.0) -> Outcome:
        """Send a command and wait for its outcome on the reply stream (HTTP callers)."""
        command.reply = True
        # Replies are routed by connection id; an HTTP request is its own "connection"
        # (command ids are only unique per run, and several runs may use "start").
        command.conn = f"http-{uuid.uuid4().hex}"
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[command.conn] = future

        def failed(exc: Exception) -> None:
            if not future.done():
                future.set_exception(exc)
        self.sender.send(self.keys.partition(command.batch), command, failed)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._pending.pop(command.conn, None)

    # -- readers ---------------------------------------------------------------

    async def _read_partition(self, partition: int) -> None:
        """Fan out every new event of this partition's watched batches."""
        wake = self._partition_wake[partition]
        block = self.settings.read_block_ms
        clock = asyncio.get_running_loop().time
        while True:
            views = {self.keys.events(v.batch_id).encode(): v
                     for v in self.views.values() if v.partition == partition}
            if not views:
                wake.clear()
                await wake.wait()
                continue
            began = clock()
            try:
                reply = await self.redis.xread(
                    {key: v.state.pos for key, v in views.items()}, count=READ_COUNT,
                    block=block)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("partition read failed", extra={"partition": partition,
                                                          "error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            wide = backlog = False
            for key, entries in reply or ():
                view = views[key if isinstance(key, bytes) else key.encode()]
                backlog = backlog or len(entries) >= READ_COUNT
                try:
                    self.deliver(view, entries)
                    wide = wide or self.last_fanout >= WIDE_FANOUT
                except (ProjectionError, PatchError) as exc:
                    log.error("projection failed, reloading batch", extra={
                        "batch": view.batch_id, "error": repr(exc)})
                    await self._reload(view)
            if wide and not backlog:
                rest = began + TICK_S - clock()
                if rest > 0:
                    await asyncio.sleep(rest)

    def deliver(self, view: BatchView, entries: list) -> None:
        """Fold a read's entries, then queue one shared frame per scope and the acks.
        ``last_fanout`` is then the most sockets one update frame went to."""
        self.last_fanout = 0
        changes: dict[str, list[Change]] = {}
        group_changes: dict[str, list[GroupChange]] = {}
        messages: list[tuple[GroupMessage, str]] = []
        # (connection, command) -> (version, group): a command's last event is its ack.
        acks: dict[tuple[str, str], tuple[int, str]] = {}
        me = self.gateway_id
        closing = False
        for entry_id, fields in entries:
            pos = entry_id.decode()
            event = decode_event(fields[b"e"])
            fold(view.state, event, pos)
            view.remember(pos, event)
            closing = closing or isinstance(event, BatchClosed)
            if isinstance(event, SessionPatched):
                changes.setdefault(event.scope, []).append(Change(v=event.version, ops=event.ops))
            elif isinstance(event, GroupMessage):
                messages.append((event, pos))
            else:
                change = group_change(event)
                if change is not None:
                    group_changes.setdefault(scope_group(event.scope), []).append(change)
                self._follow_membership(view, event)
            if event.gw == me and event.conn and event.cmd:
                group = scope_group(event.scope) if isinstance(event, MemberJoined) else ""
                acks[event.conn, event.cmd] = (event.version, group)
        pos = view.state.pos
        if view.consoles:
            # Entries as the replay API gives them: the stream position beside the event
            # (some events have a `pos` of their own: a component position).
            frame = encode_frame(EventsFrame(batch=view.batch_id, pos=pos, events=[
                {"pos": entry_id.decode(), "event": msgspec.json.decode(fields[b"e"])}
                for entry_id, fields in entries]))
            for conn in view.consoles:
                conn.push(frame)
        for scope, scope_changes in changes.items():
            subscribers = view.subscribers.get(scope)
            if subscribers:
                frame = encode_frame(UpdateFrame(scope=scope, pos=pos, changes=scope_changes))
                for conn in subscribers:
                    conn.push(frame)
                metrics.FRAMES.inc(len(subscribers))
                self.last_fanout = max(self.last_fanout, len(subscribers))
        for group_id, group_events in group_changes.items():
            subscribers = view.subscribers.get(group_scope(group_id))
            if subscribers:
                frame = view.group_frame(group_id, group_events)
                for conn in subscribers:
                    conn.push(frame)
        for event, event_pos in messages:
            subscribers = view.subscribers.get(event.scope, ())
            frame = message_frame(event, event_pos)
            for conn in subscribers:
                if message_is_for(event, conn.run):
                    conn.push(frame)
        for (conn_id, cmd_id), (version, group) in acks.items():
            conn = self.connections.get(conn_id)
            if conn is not None:
                conn.push(encode_frame(AckFrame(id=cmd_id, version=version, group=group)),
                          essential=True)
        if closing:
            self._close_participants(view)

    @staticmethod
    def _close_participants(view: BatchView) -> None:
        """The batch was closed: tell every participant channel why, then close it."""
        frame = encode_frame(ErrorFrame("batch_closed", f"batch {view.batch_id} was closed"))
        for conn in {conn for subs in view.subscribers.values() for conn in subs}:
            conn.push(frame, essential=True)
            conn.finish(CLOSE_BATCH_CLOSED, "batch_closed")

    def _follow_membership(self, view: BatchView, event: Event) -> None:
        """A member's channels start or stop listening to its group as it joins or leaves."""
        if isinstance(event, ArrivalEnded):
            # Waiting for a group-by-arrival group ended without one: tell the member.
            frame = encode_frame(GroupFrame(group="", version=0, state="", members=[], closed=[],
                                            pos=view.state.pos, joined=False,
                                            changes=[GroupChange(event.reason, event.member)]))
            for conn in self.run_connections.get(event.member, ()):
                conn.push(frame)
            return
        if not isinstance(event, MemberJoined | MemberLeft):
            return
        group_id = scope_group(event.scope)
        for conn in self.run_connections.get(event.member, ()):
            if conn.view is not view:
                continue
            if isinstance(event, MemberJoined):
                view.subscribe(conn, group_scopes(group_id))
                # Its state as of this event; later changes in this read follow as updates.
                frame = view.state_frame(group_session_scope(group_id), resync=False)
                if frame:
                    conn.push(frame)
            else:
                view.unsubscribe(conn, group_scopes(group_id))
                conn.push(view.group_frame(group_id, [GroupChange("left", event.member)],
                                           joined=False))

    async def _reload(self, view: BatchView) -> None:
        state, _ = await self.store.load_batch(view.batch_id)
        view.state = state
        view.recent.clear()
        view.recent_base = state.pos
        for subs in view.subscribers.values():
            for conn in subs:
                conn.request_resync()

    async def _read_replies(self) -> None:
        key = self.keys.replies(self.gateway_id)
        last = "0-0"
        while True:
            try:
                reply = await self.redis.xread({key: last}, count=1000, block=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("reply read failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    self._route_reply(decode_outcome(fields[b"o"]))

    def _route_reply(self, outcome: Outcome) -> None:
        future = self._pending.get(outcome.conn)
        if future is not None:
            if not future.done():
                future.set_result(outcome)
            return
        conn = self.connections.get(outcome.conn)
        if conn is None:
            return  # gone; a retry of the same id will get this answer again
        if outcome.ok:
            frame = encode_frame(AckFrame(id=outcome.cmd, version=outcome.version,
                                          group=outcome.group))
        else:
            frame = encode_frame(FailFrame(id=outcome.cmd, code=outcome.code,
                                           message=outcome.message, version=outcome.version))
        conn.push(frame, essential=True)

    async def _janitor(self) -> None:
        """Drop projections nobody has watched for a while."""
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for batch_id, view in list(self.views.items()):
                if view.idle_since is not None and now - view.idle_since > VIEW_GRACE_S:
                    del self.views[batch_id]
            # Throttle marks of runs long gone are of no use.
            for run_id, at in list(self.seen_at.items()):
                if now - at > 10 * SEEN_EVERY_S:
                    del self.seen_at[run_id]

    async def _keep_marks_fresh(self) -> None:
        """An open channel is a participant seen now: refresh the last-seen marks of every
        run connected here, often enough that no idle or timeout limit is reached."""
        s = self.settings
        every = max(0.2, min(SEEN_EVERY_S, s.group_idle_s / 3, s.run_timeout_s / 3))
        while True:
            await asyncio.sleep(every)
            by_batch: dict[str, list[str]] = {}
            for run_id, conns in self.run_connections.items():
                conn = next(iter(conns), None)
                if conn is not None and conn.run:
                    by_batch.setdefault(conn.view.batch_id, []).append(run_id)
            if not by_batch:
                continue
            ms = int(time.time() * 1000)
            pipe = self.redis.pipeline(transaction=False)
            for batch_id, runs in by_batch.items():
                key = self.keys.last_seen(batch_id)
                pipe.hset(key, mapping=dict.fromkeys(runs, ms))
                pipe.expire(key, self.marks.ttl_s)
            try:
                await pipe.execute()
            except Exception as exc:  # best effort, like every mark
                log.warning("could not refresh last-seen marks", extra={"error": repr(exc)})


