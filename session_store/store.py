"""The Redis persistence layer: fenced appends, leases, snapshots and reads.

Every key name comes from ``session_store.keys``; every multi-key write is one
Lua script on one partition's slot, so this works unchanged on Redis Cluster.
redis-py's ``Script`` objects retry with EVAL on NOSCRIPT (after a restart or a
``SCRIPT FLUSH``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from importlib import resources

import msgspec
from redis.asyncio import Redis

from session_store.events import Event
from session_store.keys import Keys
from session_store.positions import ZERO
from session_store.projector import BatchState, decode_state, encode_state, fold
from session_store.upgrade import UPGRADER

SNAPSHOTS_KEPT = 20
_msgpack = msgspec.msgpack.Encoder()
READ_CHUNK = 5000
# Commands per append script: a script holds Redis while it runs (a 1,000-command
# one, 10-68 ms), so a large iteration is appended in slices of this many.
APPEND_CHUNK = 200


class StaleEpoch(Exception):
    """The partition was taken over: this worker must drop it."""


class VersionConflict(Exception):
    """The in-memory state disagrees with the stored versions: rebuild the batch."""


class PlannedEvent(msgspec.Struct):
    batch: str
    scope: str
    version: int
    payload: bytes
    # Written beside the event in the same step: HSET side_key side_field side_value.
    side_key: str = ""
    side_field: str = ""
    side_value: bytes = b""


class PlannedCommand(msgspec.Struct):
    """One command's outcome as the worker decided it, before it is durable."""

    batch: str
    run: str
    cmd_id: str
    events: list[PlannedEvent]
    # Encoded Outcome for a rejection, else b"".
    rejected: bytes = b""
    # Encoded Outcome for a commit, with the literal %POS% for the last position.
    template: bytes = b""
    # A key deleted when the command commits (erasing data kept beside events).
    erase_key: str = ""


# A command stream entry as redis-py's XREAD gives it: (id, {field: value}).
StreamEntry = tuple[bytes, dict[bytes, bytes]]


class AppendResult(msgspec.Struct):
    """Per planned command: ("new", [positions]) / ("rejected", []) / ("dup", [outcome]);
    and the partition's commands after the new cursor, when they were asked for."""

    results: list[tuple[str, list[bytes]]]
    ahead: list[StreamEntry] = []


def lua_script(name: str) -> str:
    """The text of one of session_store's Lua scripts."""
    return resources.files("session_store").joinpath(name).read_text()


class EventStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._append = redis.register_script(lua_script("append.lua"))
        self._lease = redis.register_script(lua_script("lease.lua"))

    # -- appends ---------------------------------------------------------------

    async def append(
        self,
        partition: int,
        epoch: int,
        cursor: str,
        commands: Sequence[PlannedCommand],
        dedupe_ttl_s: int,
        chunk: int = APPEND_CHUNK,
        read_ahead: int = 0,
    ) -> AppendResult:
        """Append one iteration's outcomes, ``chunk`` commands per script call; with
        ``read_ahead``, the call that moves the cursor also answers up to that many of
        the partition's commands after it (the worker's next read, without its own
        round trip).

        Each call is fenced and validated on its own; the cursor moves with the last
        one only, so commands of a slice that committed before a failure are handled
        again and answered from their dedupe records (like any retry). A command id
        repeated in a later slice reads as a repeat within the iteration, as it
        would in one call."""
        if len(commands) <= chunk:
            return await self._append_once(partition, epoch, cursor, commands, dedupe_ttl_s,
                                           read_ahead)
        results: list[tuple[str, list[bytes]]] = []
        earlier: set[tuple[str, str, str]] = set()
        ahead: list[StreamEntry] = []
        for start in range(0, len(commands), chunk):
            part = commands[start:start + chunk]
            last = start + chunk >= len(commands)
            got = await self._append_once(partition, epoch, cursor if last else "", part,
                                          dedupe_ttl_s, read_ahead if last else 0)
            ahead = got.ahead
            for command, (kind, values) in zip(part, got.results, strict=True):
                ident = (command.batch, command.run, command.cmd_id)
                if kind == "dup" and ident in earlier:
                    values = [b"same-iteration"]
                elif kind != "dup":
                    earlier.add(ident)  # first written by this iteration
                results.append((kind, values))
        return AppendResult(results, ahead)

    async def _append_once(
        self,
        partition: int,
        epoch: int,
        cursor: str,
        commands: Sequence[PlannedCommand],
        dedupe_ttl_s: int,
        read_ahead: int = 0,
    ) -> AppendResult:
        keys: list[str] = [self.keys.epoch(partition), self.keys.cursor(partition)]
        index: dict[str, int] = {}

        def key_index(name: str) -> int:
            found = index.get(name)
            if found is None:
                keys.append(name)
                found = index[name] = len(keys)
            return found

        plan = [
            [
                key_index(self.keys.dedupe(command.batch, command.run)),
                command.cmd_id,
                # As str: Redis's Lua MessagePack reader knows no bin type (all JSON).
                command.rejected.decode(),
                command.template.decode(),
                key_index(command.erase_key) if command.erase_key else 0,
                [
                    [
                        key_index(self.keys.events(ev.batch)),
                        key_index(self.keys.versions(ev.batch)),
                        ev.scope,
                        ev.version,
                        ev.payload.decode(),
                        key_index(ev.side_key) if ev.side_key else 0,
                        ev.side_field,
                        ev.side_value.decode(),
                    ]
                    for ev in command.events
                ],
            ]
            for command in commands
        ]
        args = [epoch, cursor, dedupe_ttl_s, _msgpack.encode(plan)]
        if read_ahead and cursor:
            args += [key_index(self.keys.commands(partition)), read_ahead]
        reply = await self._append(keys=keys, args=args)
        status = reply[0]
        if status == b"STALE":
            raise StaleEpoch(f"partition {partition}: epoch {epoch}, stored {reply[1]!r}")
        if status == b"VERSION":
            raise VersionConflict(
                f"scope {reply[1].decode()} is at {reply[2].decode()}, "
                f"attempted {reply[3].decode()}"
            )
        return AppendResult([(r[0].decode(), list(r[1:])) for r in reply[1]],
                            [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True)))
                             for entry_id, fields in reply[2]])

    async def dedupe_lookup(self, items: Sequence[tuple[str, str, str]]) -> list[bytes | None]:
        """Stored outcomes for ``(batch, run, command id)`` triples, in one round trip."""
        if not items:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for batch, run, cmd_id in items:
            pipe.hget(self.keys.dedupe(batch, run), cmd_id)
        return await pipe.execute()

    # -- leases ----------------------------------------------------------------

    async def acquire(self, partition: int, worker: str, ttl_ms: int) -> int:
        """The new epoch, or 0 if another worker holds the partition."""
        return int(await self._lease(
            keys=[self.keys.lease(partition), self.keys.epoch(partition)],
            args=["acquire", worker, ttl_ms, 0],
        ))

    async def renew(self, partition: int, worker: str, ttl_ms: int, epoch: int) -> bool:
        return bool(await self._lease(
            keys=[self.keys.lease(partition), self.keys.epoch(partition)],
            args=["renew", worker, ttl_ms, epoch],
        ))

    async def release(self, partition: int, worker: str, epoch: int) -> bool:
        return bool(await self._lease(
            keys=[self.keys.lease(partition), self.keys.epoch(partition)],
            args=["release", worker, 0, epoch],
        ))

    # -- snapshots and reads ---------------------------------------------------

    async def save_snapshot(self, batch_id: str, state_bytes: bytes, pos: str) -> bool:
        """Store a snapshot whose entry ID is the position of the last event it folds."""
        if pos == ZERO:
            return False
        try:
            await self.redis.xadd(
                self.keys.snapshots(batch_id), {"s": state_bytes}, id=pos,
                maxlen=SNAPSHOTS_KEPT, approximate=True,
            )
        except Exception as exc:  # an equal or older ID: that snapshot exists already
            if "equal or smaller" in str(exc):
                return False
            raise
        return True

    async def latest_snapshot(
        self, batch_id: str, at: str = "+", back: int = 1
    ) -> BatchState | None:
        """The newest snapshot at or before position ``at`` (or the ``back``-th newest)."""
        entries = await self.redis.xrevrange(self.keys.snapshots(batch_id), at, "-", count=back)
        if not entries:
            return None
        return decode_state(entries[-1][1][b"s"])

    async def read_events(
        self, batch_id: str, after: str = ZERO, until: str = "+"
    ) -> AsyncIterator[tuple[str, Event]]:
        """Events after position ``after`` (exclusive) up to ``until``, in chunks."""
        key = self.keys.events(batch_id)
        start = f"({after}" if after != ZERO else "-"
        while True:
            entries = await self.redis.xrange(key, start, until, count=READ_CHUNK)
            for entry_id, fields in entries:
                pos = entry_id.decode()
                # Through the upgrader: a batch may hold events of older schemas.
                yield pos, UPGRADER.decode(fields[b"e"])
            if len(entries) < READ_CHUNK:
                return
            start = f"({entries[-1][0].decode()}"

    async def load_batch(
        self, batch_id: str, keep_tail: bool = False, snapshots_back: int = 1
    ) -> tuple[BatchState, list[tuple[str, Event]]]:
        """A snapshot plus the stream tail folded in; optionally the tail itself.

        ``snapshots_back`` > 1 starts from an older snapshot, so that the tail is
        long enough for gateways to serve resumes from memory.
        """
        state = await self.latest_snapshot(batch_id, back=snapshots_back)
        state = state or BatchState(batch_id=batch_id)
        tail: list[tuple[str, Event]] = []
        async for pos, event in self.read_events(batch_id, after=state.pos):
            fold(state, event, pos)
            if keep_tail:
                tail.append((pos, event))
        return state, tail

    async def snapshot_now(self, state: BatchState) -> bool:
        return await self.save_snapshot(state.batch_id, encode_state(state), state.pos)
