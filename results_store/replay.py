"""Replay a batch's timeline, wherever its events live (docs/archive.md).

Pure reading code for the API, the CLI, the finalizer and tests. Events are read
from Postgres (``archived_events``, written by the finalizer) and Redis (the
batch's stream) and merged by position: an event may be in Postgres only
(archived and trimmed), in both (archived, not trimmed yet) or in Redis only,
and is seen exactly once. What it gives:

- ``iter_items`` / ``page``: the events, filtered (scope, kind, run, position and
  time ranges), in position order, paged by an exclusive ``after`` cursor;
- ``state_at``: the projected state at a position or time, from the newest
  snapshot at or before it (Redis or archived) plus the events after it, folded
  by the one projector;
- ``scope_state`` / ``diff``: one scope's state, and the JSON Patch between two
  positions;
- ``export``: the timeline as JSON Lines; ``stats``: counts per scope and minute.

Merging without gaps under a concurrent finalizer rests on its order: an event is
trimmed from Redis only after the transaction that copied it committed. So a
reader that reads Redis first and Postgres second finds every event in one of
the two reads; and everything before the stream's first entry is in Postgres.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis

from results_store.jsondiff import diff as json_diff
from session_store import positions
from session_store.events import Event
from session_store.keys import Keys
from session_store.projector import BatchState, decode_state, fold
from session_store.upgrade import UPGRADER, Upgrader, decode_head

Key = tuple[int, int]
MAX_SEQ = 2**64 - 1          # a Redis entry ID's sequence is an unsigned 64-bit number
PG_MAX = 2**63 - 1           # Postgres bigint
START: Key = (0, 0)          # "after START" is everything (no event has ID 0-0)
CHUNK = 2000

_json = msgspec.json.Encoder()
_any = msgspec.json.Decoder()


class ReplayError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- positions and times ---------------------------------------------------------


def key_of(pos: str) -> Key:
    return positions.parse(pos)


def pos_of(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def before(key: Key) -> Key:
    """The greatest position strictly before ``key``."""
    ms, seq = key
    return (ms, seq - 1) if seq > 0 else (ms - 1, MAX_SEQ)


def next_after(key: Key) -> Key:
    ms, seq = key
    return (ms, seq + 1) if seq < MAX_SEQ else (ms + 1, 0)


def _pg(key: Key) -> tuple[int, int]:
    return min(key[0], PG_MAX), min(key[1], PG_MAX)


def iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time(text: str) -> int:
    """Epoch milliseconds from digits (ms) or ISO 8601 (a naive time is UTC)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ReplayError("bad_time", f"not a time (ISO 8601 or epoch ms): {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def parse_at(text: str) -> Key:
    """A position ("<ms>-<seq>") as is; a time (ISO 8601 or epoch ms) as the last
    position at or before it ("state at time t" is after the last event at or before t)."""
    text = text.strip()
    if "-" in text and not text.startswith("-") and text.replace("-", "").isdigit() \
            and text.count("-") == 1:
        return key_of(text)
    return (parse_time(text), MAX_SEQ)


# -- filters and items -----------------------------------------------------------


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which events: all of ``scopes`` / ``kinds`` if given, the events of ``run``
    (caused by it, about it as a member or addressee, or in its run scope), and
    positions in (``after``, ``until``]."""

    scopes: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    run: str = ""
    after: Key = START
    until: Key | None = None

    @classmethod
    def build(cls, *, scopes: Sequence[str] = (), kinds: Sequence[str] = (), run: str = "",
              after: str | None = None, until: str | None = None,
              from_ms: int | None = None, to_ms: int | None = None) -> EventFilter:
        lo = key_of(after) if after else START
        hi = key_of(until) if until else None
        if from_ms is not None and from_ms > 0:
            lo = max(lo, before((from_ms, 0)))
        if to_ms is not None:
            hi = min(hi, (to_ms, MAX_SEQ)) if hi is not None else (to_ms, MAX_SEQ)
        return cls(scopes=tuple(scopes), kinds=tuple(kinds), run=run, after=lo, until=hi)

    @property
    def selective(self) -> bool:
        return bool(self.scopes or self.kinds or self.run)

    def matches(self, item: Item) -> bool:
        if self.scopes and item.scope not in self.scopes:
            return False
        if self.kinds and item.kind not in self.kinds:
            return False
        return not self.run or (
            item.run == self.run or item.member == self.run or item.scope == f"run:{self.run}")


ALL = EventFilter()


class Item(msgspec.Struct):
    """One stored event: its position and bytes, and the fields filters look at."""

    key: Key
    pos: str
    raw: bytes
    kind: str
    scope: str
    version: int
    schema: int
    run: str | None
    member: str | None

    @property
    def ms(self) -> int:
        return self.key[0]


def item_from_redis(entry_id: bytes, raw: bytes) -> Item:
    pos = entry_id.decode()
    head = decode_head(raw)
    return Item(key_of(pos), pos, raw, head.kind, head.scope, head.version, head.schema,
                head.run, head.member or head.to)


class Page(msgspec.Struct):
    items: list[Item]
    # The cursor for the next page (the last item's position), None at the end.
    next: str | None


# -- scope states ----------------------------------------------------------------


def valid_scope(scope: str) -> bool:
    if scope in ("batch", "batch_session", "lobby"):
        return True
    kind, sep, name = scope.partition(":")
    return bool(sep and name) and kind in ("group", "group_session", "group_chat", "run")


def scope_state(state: BatchState, scope: str) -> dict[str, Any]:
    """One scope's part of the projected state: ``{"scope", "version", "data"}``.

    ``data`` is the session document (batch and group sessions), the run or group
    as the projector keeps it, the batch's label and limits, a group chat's message
    count, or the group-by-arrival lobby (run -> ms it started waiting); None for a
    scope that does not exist (yet) at that point.
    """
    version = state.versions.get(scope, 0)
    data: Any = None
    if scope == "batch_session" or scope.startswith("group_session:"):
        data = state.sessions.get(scope, {})
    elif scope == "batch":
        data = {"label": state.label, "opened": state.opened, "closed": state.closed,
                "groups": msgspec.to_builtins(state.group_limits)} if state.opened else None
    elif scope.startswith("run:"):
        run = state.runs.get(scope[4:])
        data = msgspec.to_builtins(run) if run is not None else None
    elif scope.startswith("group:"):
        group = state.groups.get(scope[6:])
        data = msgspec.to_builtins(group) if group is not None else None
    elif scope.startswith("group_chat:"):
        group = state.groups.get(scope[11:])
        data = {"messages": group.messages} if group is not None else None
    elif scope == "lobby":
        data = dict(state.lobby)
    else:
        raise ReplayError("bad_scope", f"unknown scope {scope!r}")
    return {"scope": scope, "version": version, "data": data}


def encode_scope_state(state: BatchState, scope: str) -> bytes:
    return _json.encode(scope_state(state, scope))


def scopes_of(state: BatchState) -> list[str]:
    """Every scope the state knows of (those with at least one version)."""
    return sorted(state.versions)


# -- the reader ------------------------------------------------------------------

_COLUMNS = "ms, seq, pos, scope, kind, version, schema, run_id, member, payload"


class Replay:
    """Reads one deployment's timelines (a Redis key prefix and a Postgres database)."""

    def __init__(self, redis: Redis, pool: asyncpg.Pool, keys: Keys,
                 upgrader: Upgrader = UPGRADER, chunk: int = CHUNK) -> None:
        self.redis = redis
        self.pool = pool
        self.keys = keys
        self.upgrader = upgrader
        self.chunk = chunk

    # -- existence -------------------------------------------------------------

    async def exists(self, batch_id: str) -> bool:
        if await self.redis.exists(self.keys.events(batch_id), self.keys.versions(batch_id)):
            return True
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM archived_segments WHERE batch_id = $1)", batch_id))

    # -- events ----------------------------------------------------------------

    async def _pg_range(self, batch_id: str, lo: Key, hi: Key | None, limit: int,
                        flt: EventFilter) -> list[Item]:
        args: list[Any] = [batch_id, *_pg(lo)]
        where = ["batch_id = $1", "(ms, seq) > ($2, $3)"]
        if hi is not None:
            args += _pg(hi)
            where.append(f"(ms, seq) <= (${len(args) - 1}, ${len(args)})")
        if flt.scopes:
            args.append(list(flt.scopes))
            where.append(f"scope = ANY(${len(args)}::text[])")
        if flt.kinds:
            args.append(list(flt.kinds))
            where.append(f"kind = ANY(${len(args)}::text[])")
        if flt.run:
            args += [flt.run, f"run:{flt.run}"]
            n = len(args)
            where.append(f"(run_id = ${n - 1} OR member = ${n - 1} OR scope = ${n})")
        args.append(limit)
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM archived_events WHERE {' AND '.join(where)} "
            f"ORDER BY ms, seq LIMIT ${len(args)}", *args)
        return [Item((r["ms"], r["seq"]), r["pos"], r["payload"].encode(), r["kind"], r["scope"],
                     r["version"], r["schema"], r["run_id"], r["member"]) for r in rows]

    async def _redis_range(self, batch_id: str, lo: Key, hi: Key | None,
                           count: int) -> list[tuple[bytes, bytes]]:
        start = f"({pos_of(lo)}" if lo != START else "-"
        end = pos_of(hi) if hi is not None else "+"
        entries = await self.redis.xrange(self.keys.events(batch_id), start, end, count=count)
        return [(entry_id, fields[b"e"]) for entry_id, fields in entries]

    async def _redis_first(self, batch_id: str) -> Key | None:
        entries = await self.redis.xrange(self.keys.events(batch_id), "-", "+", count=1)
        return key_of(entries[0][0].decode()) if entries else None

    async def iter_chunks(self, batch_id: str, flt: EventFilter = ALL
                          ) -> AsyncIterator[list[Item]]:
        """The matching events in position order, in chunks, each exactly once."""
        lo, hi, chunk = flt.after, flt.until, self.chunk
        while hi is None or lo < hi:
            first = await self._redis_first(batch_id)
            if first is None or lo < before(first):
                # Everything before the stream's first entry was committed to Postgres
                # before it was trimmed: read it there alone.
                cap = before(first) if first is not None else hi
                if hi is not None and cap is not None:
                    cap = min(cap, hi)
                rows = await self._pg_range(batch_id, lo, cap, chunk, flt)
                if rows:
                    yield rows
                    lo = rows[-1].key
                if len(rows) == chunk:
                    continue
                if cap is not None:
                    lo = max(lo, cap)
                if hi is not None and lo >= hi:
                    return
            # Redis first, then Postgres: an event trimmed in between is in the second.
            entries = await self._redis_range(batch_id, lo, hi, chunk)
            rows = await self._pg_range(batch_id, lo, hi, chunk, flt)
            bound: Key | None = None
            if len(entries) == chunk:
                bound = key_of(entries[-1][0].decode())
            if len(rows) == chunk and (bound is None or rows[-1].key < bound):
                bound = rows[-1].key
            merged: dict[Key, Item] = {}
            for entry_id, raw in entries:
                item = item_from_redis(entry_id, raw)
                if (bound is None or item.key <= bound) and flt.matches(item):
                    merged[item.key] = item
            for row in rows:
                if bound is None or row.key <= bound:
                    merged.setdefault(row.key, row)
            if merged:
                yield sorted(merged.values(), key=lambda item: item.key)
            if bound is None:
                return
            lo = bound

    async def iter_items(self, batch_id: str, flt: EventFilter = ALL
                         ) -> AsyncIterator[Item]:
        async for items in self.iter_chunks(batch_id, flt):
            for item in items:
                yield item

    async def page(self, batch_id: str, flt: EventFilter = ALL,
                   limit: int = 1000) -> Page:
        items: list[Item] = []
        async for item in self.iter_items(batch_id, flt):
            items.append(item)
            if len(items) == limit:
                break
        else:
            return Page(items, None)
        return Page(items, items[-1].pos)

    def decode(self, item: Item) -> Event:
        return self.upgrader.decode(item.raw, item.schema)

    # -- states ----------------------------------------------------------------

    async def _snapshot_at(self, batch_id: str, at: Key | None) -> BatchState | None:
        end = pos_of(at) if at is not None else "+"
        entries = await self.redis.xrevrange(self.keys.snapshots(batch_id), end, "-", count=1)
        redis_key = key_of(entries[0][0].decode()) if entries else None
        hi = _pg(at) if at is not None else (PG_MAX, PG_MAX)
        # Only an archived snapshot newer than Redis's is worth reading.
        lo = _pg(redis_key) if redis_key is not None else (-1, -1)
        row = await self.pool.fetchrow(
            "SELECT state FROM archived_snapshots WHERE batch_id = $1 "
            "AND (ms, seq) <= ($2, $3) AND (ms, seq) > ($4, $5) "
            "ORDER BY ms DESC, seq DESC LIMIT 1", batch_id, *hi, *lo)
        if row is not None:
            return decode_state(row["state"])
        if entries:
            return decode_state(entries[0][1][b"s"])
        return None

    async def state_at(self, batch_id: str, at: Key | None = None) -> BatchState:
        """The projected state after the last event at or before ``at`` (None: now)."""
        state = await self._snapshot_at(batch_id, at)
        if state is None:
            state = BatchState(batch_id=batch_id)
        flt = EventFilter(after=key_of(state.pos), until=at)
        async for items in self.iter_chunks(batch_id, flt):
            for item in items:
                fold(state, self.decode(item), item.pos)
        return state

    async def scope_state(self, batch_id: str, scope: str, at: Key | None = None
                          ) -> tuple[BatchState, dict[str, Any]]:
        if not valid_scope(scope):
            raise ReplayError("bad_scope", f"unknown scope {scope!r}")
        state = await self.state_at(batch_id, at)
        return state, scope_state(state, scope)

    async def diff(self, batch_id: str, scope: str, frm: Key | None, to: Key | None
                   ) -> dict[str, Any]:
        """The JSON Patch that turns the scope's state at ``frm`` into its state at ``to``."""
        a_state, a = await self.scope_state(batch_id, scope, frm)
        b_state, b = await self.scope_state(batch_id, scope, to)
        return {
            "scope": scope,
            "from": {"pos": a_state.pos, "version": a["version"]},
            "to": {"pos": b_state.pos, "version": b["version"]},
            "ops": json_diff(a["data"], b["data"]),
        }

    # -- study sessions --------------------------------------------------------

    async def study_sessions(self, batch_id: str, wanted: Sequence[tuple[str, int]],
                             erased: set[str] | None = None) -> dict[tuple[str, int], bytes]:
        """Contents of study session writes (run, run-scope version) that still exist.

        Redis first, then Postgres for the rest: a version the finalizer removed
        from Redis was committed to Postgres before. Runs in ``erased`` are left out
        (their abort erased them; Postgres may not have seen it yet).
        """
        wanted = [w for w in dict.fromkeys(wanted) if not erased or w[0] not in erased]
        if not wanted:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for run_id, version in wanted:
            pipe.hget(self.keys.study_session(batch_id, run_id), str(version))
        found = {w: v for w, v in zip(wanted, await pipe.execute(), strict=True)
                 if v is not None}
        rest = [w for w in wanted if w not in found]
        if rest:
            rows = await self.pool.fetch(
                "SELECT s.run_id, s.version, s.data FROM archived_study_sessions s "
                "JOIN unnest($2::text[], $3::int[]) AS w(run_id, version) "
                "ON s.run_id = w.run_id AND s.version = w.version WHERE s.batch_id = $1",
                batch_id, [r for r, _ in rest], [v for _, v in rest])
            for row in rows:
                found[(row["run_id"], row["version"])] = row["data"].encode()
        return found

    async def erased_runs(self, batch_id: str) -> set[str]:
        """Runs whose study session was erased (aborted), as of now."""
        state = await self.state_at(batch_id)
        return {run_id for run_id, run in state.runs.items() if run.study_session_erased}

    async def study_session_at(self, state: BatchState, run_id: str,
                               erased: set[str] | None = None) -> Any:
        run = state.runs.get(run_id)
        if run is None or run.study_session_erased or not run.study_session_version:
            return None
        if erased is None:
            erased = await self.erased_runs(state.batch_id)
        found = await self.study_sessions(
            state.batch_id, [(run_id, run.study_session_version)], erased)
        raw = found.get((run_id, run.study_session_version))
        return _any.decode(raw) if raw is not None else None

    # -- export ----------------------------------------------------------------

    def line(self, item: Item, study_session: bytes | None = None) -> bytes:
        """One JSON Lines record: ``{"pos", "time", "event"[, "study_session"]}``."""
        event = self.upgrader.encode(item.raw, item.schema)
        extra = b',"study_session":' + study_session if study_session is not None else b""
        return (b'{"pos":"' + item.pos.encode() + b'","time":"' + iso(item.ms).encode()
                + b'","event":' + event + extra + b"}\n")

    async def render(self, batch_id: str, items: list[Item],
                     erased: list[set[str]] | None = None) -> list[bytes]:
        """JSON Lines for ``items``, with study session contents beside their writes.

        ``erased`` caches the erased runs between calls (a one-element list)."""
        writes = [(i.scope[4:], i.version) for i in items if i.kind == "study_session_written"]
        contents: dict[tuple[str, int], bytes] = {}
        if writes:
            if erased is None:
                erased = []
            if not erased:
                erased.append(await self.erased_runs(batch_id))
            contents = await self.study_sessions(batch_id, writes, erased[0])
        return [self.line(i, contents.get((i.scope[4:], i.version))
                          if i.kind == "study_session_written" else None) for i in items]

    async def export(self, batch_id: str, flt: EventFilter = ALL,
                     limit: int | None = None) -> AsyncIterator[bytes]:
        """The timeline as JSON Lines, one chunk of lines at a time, with study
        session contents beside their write events (unless erased)."""
        erased: list[set[str]] = []
        sent = 0
        async for items in self.iter_chunks(batch_id, flt):
            if limit is not None:
                items = items[: limit - sent]
            yield b"".join(await self.render(batch_id, items, erased))
            sent += len(items)
            if limit is not None and sent >= limit:
                return

    async def stats(self, batch_id: str, flt: EventFilter = ALL) -> dict[str, Any]:
        """Events per scope, per kind and per minute (UTC, "YYYY-MM-DDTHH:MM")."""
        scopes: dict[str, int] = {}
        kinds: dict[str, int] = {}
        minutes: dict[int, int] = {}
        total = 0
        first = last = None
        async for items in self.iter_chunks(batch_id, flt):
            for item in items:
                scopes[item.scope] = scopes.get(item.scope, 0) + 1
                kinds[item.kind] = kinds.get(item.kind, 0) + 1
                minute = item.ms // 60_000
                minutes[minute] = minutes.get(minute, 0) + 1
            total += len(items)
            first = first or items[0].pos
            last = items[-1].pos
        return {
            "batch": batch_id, "events": total, "first": first, "last": last,
            "scopes": dict(sorted(scopes.items())), "kinds": dict(sorted(kinds.items())),
            "minutes": {iso(m * 60_000)[:16]: n for m, n in sorted(minutes.items())},
        }

    async def count_estimate(self, batch_id: str) -> int:
        """Events in the timeline, fast (archived + in Redis; may count a few twice)."""
        archived = await self.pool.fetchval(
            "SELECT coalesce(sum(events), 0) FROM archived_segments WHERE batch_id = $1",
            batch_id)
        return int(archived) + int(await self.redis.xlen(self.keys.events(batch_id)))
