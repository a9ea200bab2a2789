"""Result data, result files, bonuses and jatos.log lines of runs (docs/results.md).

A player (JATOS: component result) is one row of ``component_results`` per run,
component position (1-based, as in the component URLs) and round (oTree; 1 by
default). It is made by the first write to it. Result data are permanent: only
an abort or an experimenter's delete erases them (``purge_run``), and the row
(metadata and bonus) stays.

Every write takes its run's lock for its transaction (a transaction-level
advisory lock on the run id: in memory, ten times cheaper than a row lock, which
writes the row), so writes to one run are serialized across gateways, quotas hold
exactly, a run that has ended (``runs.end_state`` set by ``mark_run_ended``, under
the same lock) takes no more writes, and an idempotency key
(``X-Cohort-Command-Id``) recorded in the same transaction makes a retried write
take effect once. Every answer is given only
after the transaction has committed (DESIGN.md, guarantee 1).

Result data go through ``ResultWriter``: requests enqueue their write, and one
task writes everything queued (up to ``max_batch`` writes) in one transaction
with a fixed number of statements, then resolves each waiter after the COMMIT.
Files, bonuses and log lines are rarer and write directly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import asyncpg
import msgspec

from results_store.definition import Component, SessionConfig, StudyDefinition
from results_store.studies import guess_media_type, load_definition

log = logging.getLogger("cohort.results")

MIB = 1024 * 1024
END_STATES = ("finished", "aborted", "failed")
FILE_CHUNK_BYTES = 1024 * 1024
MAX_FILENAME_CHARS = 255
MAX_COMMAND_ID_CHARS = 200
MAX_BONUS_POINTS = Decimal("1e9")
CENTS = Decimal("0.01")

_json = msgspec.json.Encoder()


class ResultError(Exception):
    """A refused result operation: HTTP ``status``, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def quota_exceeded(message: str) -> ResultError:
    return ResultError(413, "quota_exceeded", message)


def run_not_found(run_id: str) -> ResultError:
    return ResultError(404, "run_not_found", f"there is no run {run_id!r} with results")


def run_ended(state: str) -> ResultError:
    return ResultError(409, "run_ended", f"this run has ended ({state}): it takes no more "
                       "results")


@dataclass(frozen=True)
class Quotas:
    """Result limits (settings ``max_result_bytes_per_component`` and friends)."""

    per_component: int = 5 * MIB      # result data of one component result
    per_run: int = 50 * MIB           # result data and files of one run together
    file: int = 50 * MIB              # one uploaded file
    log_per_run: int = 1 * MIB        # jatos.log lines of one run

    @classmethod
    def from_settings(cls, settings: Any) -> Quotas:
        default = cls()
        return cls(
            per_component=int(getattr(settings, "max_result_bytes_per_component",
                                      default.per_component)),
            per_run=int(getattr(settings, "max_result_bytes_per_run", default.per_run)),
            file=int(getattr(settings, "max_file_bytes", default.file)),
            log_per_run=int(getattr(settings, "max_log_bytes_per_run", default.log_per_run)))


class Answer(msgspec.Struct, frozen=True):
    """What a write answers: ``body`` (JSON-able); ``replayed`` when it is the answer to
    an earlier request with the same idempotency key (nothing was written again)."""

    body: dict[str, Any]
    replayed: bool = False


# ---------------------------------------------------------------------------
# Validation helpers (used by the gateway handlers)


def component_at(definition: StudyDefinition, pos: int, round_: int = 1) -> Component:
    """The component at 1-based ``pos``, checking ``round_`` against its rounds."""
    if not 1 <= pos <= len(definition.components):
        raise ResultError(404, "component_not_found", f"the study has no component at "
                          f"position {pos} (1 to {len(definition.components)})")
    component = definition.components[pos - 1]
    if not 1 <= round_ <= max(1, component.rounds):
        raise ResultError(400, "bad_round", f"component {component.id!r} has rounds 1 to "
                          f"{max(1, component.rounds)}, not {round_}")
    return component


_BAD_FILENAME_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_filename(filename: str) -> str:
    """A result file's name: 1-255 characters, no path separators or control
    characters, not ``.`` or ``..`` (JATOS keeps files in one folder per player)."""
    name = unicodedata.normalize("NFC", filename or "")
    if (not name or len(name) > MAX_FILENAME_CHARS or name in (".", "..")
            or _BAD_FILENAME_CHARS.search(name) or name != name.strip()):
        raise ResultError(400, "bad_filename", "a file name is 1-255 characters without "
                          "'/', '\\' or control characters, and not '.' or '..'")
    return name


def check_command_id(command_id: str | None) -> str | None:
    if command_id is None or command_id == "":
        return None
    if len(command_id) > MAX_COMMAND_ID_CHARS:
        raise ResultError(400, "bad_command_id", f"X-Cohort-Command-Id has at most "
                          f"{MAX_COMMAND_ID_CHARS} characters")
    return command_id


def parse_points(value: Any, limit: Decimal = MAX_BONUS_POINTS) -> Decimal | None:
    """Bonus points from JSON: a finite number (or a numeric string), |points| <= limit;
    None clears the bonus."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ResultError(400, "bad_bonus", "points is a number (or null to clear it)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ResultError(400, "bad_bonus", "points must be a finite number")
    try:
        points = Decimal(str(value).strip())
    except InvalidOperation:
        raise ResultError(400, "bad_bonus", "points is a number (or null to clear it)") from None
    if not points.is_finite() or abs(points) > limit:
        raise ResultError(400, "bad_bonus", f"points must be a finite number between "
                          f"-{limit} and {limit}")
    return points


def number(value: Decimal | None) -> int | float | None:
    """A Decimal as a JSON number (int when whole)."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def decimal_text(value: Decimal | None) -> str:
    """A Decimal for CSV: plain notation, no exponent, no trailing zeros."""
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def payoff(config: SessionConfig, points: Decimal) -> Decimal:
    """oTree: participation fee + points x real-world currency per point, in cents."""
    fee = Decimal(str(config.participation_fee))
    rate = Decimal(str(config.real_world_currency_per_point))
    return (fee + points * rate).quantize(CENTS, rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------------------
# Shared transaction steps


# Runs are locked in id order, so two transactions never wait on each other in a cycle.
_LOCK_RUNS = ("SELECT count(pg_advisory_xact_lock(hashtextextended('cohort-run:' || r, 0))) "
              "FROM (SELECT r FROM unnest($1::text[]) AS r ORDER BY r) AS s")
_RUN_STATES = "SELECT id, end_state FROM runs WHERE id = ANY($1::text[])"


async def _lock_runs(conn: asyncpg.Connection, run_ids: list[str]) -> dict[str, str | None]:
    """Take the runs' locks until the end of the transaction; answer their end states
    (read after the locks, so they are current). Unknown runs are left out."""
    await conn.fetchval(_LOCK_RUNS, run_ids)
    return {row["id"]: row["end_state"] for row in await conn.fetch(_RUN_STATES, run_ids)}


async def _lock_run(conn: asyncpg.Connection, run_id: str, *, active: bool = True) -> None:
    """Lock the run for this transaction; refuse unknown (and, if ``active``, ended) runs."""
    states = await _lock_runs(conn, [run_id])
    row = {"end_state": states[run_id]} if run_id in states else None
    if row is None:
        raise run_not_found(run_id)
    if active and row["end_state"] is not None:
        raise run_ended(row["end_state"])


async def _replay(conn: asyncpg.Connection, run_id: str, command_id: str | None
                  ) -> Answer | None:
    if command_id is None:
        return None
    raw = await conn.fetchval("SELECT response FROM result_commands WHERE run_id = $1 AND "
                              "command_id = $2", run_id, command_id)
    return Answer(msgspec.json.decode(raw), replayed=True) if raw is not None else None


async def _remember(conn: asyncpg.Connection, run_id: str, command_id: str | None,
                    body: dict[str, Any]) -> None:
    if command_id is not None:
        await conn.execute("INSERT INTO result_commands (run_id, command_id, response) "
                           "VALUES ($1, $2, $3)", run_id, command_id, _json.encode(body).decode())


_ENSURE_PLAYER = """
INSERT INTO component_results (run_id, pos, round, component_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (run_id, pos, round) DO UPDATE SET updated_at = now()
RETURNING id
"""


# ---------------------------------------------------------------------------
# Result data: the batcher


class _Write:
    __slots__ = ("append", "command_id", "component_id", "data", "future", "pos", "round",
                 "run_id")

    def __init__(self, run_id: str, pos: int, round_: int, component_id: str, data: bytes,
                 append: bool, command_id: str | None, future: asyncio.Future[Answer]) -> None:
        self.run_id = run_id
        self.pos = pos
        self.round = round_
        self.component_id = component_id
        self.data = data
        self.append = append
        self.command_id = command_id
        self.future = future


class _Plan:
    """What one transaction does to one player: replace its data, or append to it."""

    __slots__ = ("append", "chunks", "component_id")

    def __init__(self, append: bool, component_id: str) -> None:
        self.append = append
        self.chunks: list[bytes] = []
        self.component_id = component_id


# One round trip for what a batch reads after taking its locks: the runs' end states,
# their players' sizes, and the idempotency keys already used.
_READ = """
SELECT
  (SELECT coalesce(json_agg(json_build_array(id, end_state)), '[]') FROM runs
    WHERE id = ANY($1::text[])) AS runs,
  (SELECT coalesce(json_agg(json_build_array(run_id, pos, round, data_size, files_size)), '[]')
    FROM component_results WHERE run_id = ANY($1::text[])) AS usage,
  (SELECT coalesce(json_agg(json_build_array(run_id, command_id, response)), '[]')
    FROM unnest($3::text[], $2::text[]) AS k(run_id, command_id)
    JOIN result_commands USING (run_id, command_id)) AS seen
"""
# And one for everything it writes: replacements, appends, idempotency keys.
_WRITE = """
WITH replaced AS (
  INSERT INTO component_results AS c (run_id, pos, round, component_id, data, data_size, state)
  SELECT t.run_id, t.pos, t.round, t.component_id, t.data, octet_length(t.data),
         'result_data_posted'
  FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::bytea[])
       AS t(run_id, pos, round, component_id, data)
  ON CONFLICT (run_id, pos, round) DO UPDATE SET data = EXCLUDED.data,
      data_size = EXCLUDED.data_size, state = 'result_data_posted', updated_at = now(),
      purged_at = NULL
  RETURNING 1
), appended AS (
  INSERT INTO component_results AS c (run_id, pos, round, component_id, data, data_size, state)
  SELECT t.run_id, t.pos, t.round, t.component_id, t.data, octet_length(t.data),
         'result_data_posted'
  FROM unnest($6::text[], $7::int[], $8::int[], $9::text[], $10::bytea[])
       AS t(run_id, pos, round, component_id, data)
  ON CONFLICT (run_id, pos, round) DO UPDATE
      SET data = coalesce(c.data, ''::bytea) || EXCLUDED.data,
      data_size = c.data_size + EXCLUDED.data_size, state = 'result_data_posted',
      updated_at = now(), purged_at = NULL
  RETURNING 1
), remembered AS (
  INSERT INTO result_commands (run_id, command_id, response)
  SELECT * FROM unnest($11::text[], $12::text[], $13::text[])
  RETURNING 1
)
SELECT (SELECT count(*) FROM replaced) + (SELECT count(*) FROM appended)
"""


def _unavailable() -> ResultError:
    return ResultError(503, "store_unavailable", "the result store is not reachable; retry "
                       "with the same X-Cohort-Command-Id")


def _settle(write: _Write, outcome: Answer | BaseException) -> None:
    if write.future.done():
        return
    if isinstance(outcome, BaseException):
        write.future.set_exception(outcome)
    else:
        write.future.set_result(outcome)


class _ConnectionLost(Exception):
    """The writer's connection failed outside Postgres: get another one."""


class ResultWriter:
    """Writes result data in batches; each caller's answer comes after its batch's COMMIT.

    ``await writer.write(run, pos, round, component_id, data, append=...)`` queues the
    write and waits. ``writers`` tasks (default 1) each take up to ``max_batch`` queued
    writes and do them in one transaction of five round trips whatever the batch size:
    BEGIN; lock the runs (advisory locks in id order, so concurrent batches never
    deadlock); read the runs' end states, their players' sizes and the idempotency keys
    already used; then, after deciding every write in order (quotas, ended runs,
    duplicates), one statement with the multi-row upserts of replacements and appends
    and the insert of the new keys; COMMIT. A write refused by a quota is left out of
    the batch, so it stores nothing and the others go on. If the batch fails in
    Postgres, its writes are retried one by one, so one bad write cannot fail its
    neighbours. A task keeps its pooled connection while there is work queued.
    """

    def __init__(self, pool: asyncpg.Pool, quotas: Quotas | None = None, *,
                 max_batch: int = 500, writers: int = 1) -> None:
        self.pool = pool
        self.quotas = quotas or Quotas()
        self.max_batch = max(1, max_batch)
        self.writers = max(1, writers)
        self._queue: collections.deque[_Write] = collections.deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.batches = 0            # transactions committed
        self.writes = 0             # writes decided in them

    async def write(self, run_id: str, pos: int, round_: int, component_id: str, data: bytes,
                    *, append: bool, command_id: str | None = None) -> Answer:
        if self._closed:
            raise ResultError(503, "shutting_down", "the gateway is shutting down")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(run_id, pos, round_, component_id, bytes(data), append,
                                  check_command_id(command_id), future))
        self._start()
        self._wakeup.set()
        # A cancelled request leaves its write queued: it is stored (or refused) anyway,
        # and a retry with the same idempotency key gets the same answer.
        return await asyncio.shield(future)

    def _start(self) -> None:
        self._tasks = [task for task in self._tasks if not task.done()]
        while len(self._tasks) < self.writers:
            self._tasks.append(asyncio.create_task(self._loop(), name="result-writer"))

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _take(self) -> list[_Write]:
        return [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                async with self.pool.acquire() as conn:
                    while self._queue:
                        await self._flush(conn, self._take())
            except _ConnectionLost:
                continue
            except Exception as exc:  # no connection at all: fail what is queued
                log.error("result store unreachable", exc_info=exc)
                for write in self._take():
                    _settle(write, _unavailable())

    async def _flush(self, conn: asyncpg.Connection, batch: list[_Write]) -> None:
        outcomes: list[Answer | BaseException]
        try:
            outcomes = await self._write_batch(conn, batch)
        except asyncpg.PostgresError as exc:
            # The transaction failed in Postgres, so nothing of it was committed.
            if len(batch) > 1:
                log.warning("result batch failed; writing one by one",
                            extra={"writes": len(batch), "error": str(exc)})
                for write in batch:
                    await self._flush(conn, [write])
                return
            log.error("result write failed", extra={"run": batch[0].run_id, "error": str(exc)})
            outcomes = [ResultError(500, "store_failed", "the result could not be stored")]
        except Exception as exc:  # connection lost: the outcome is unknown, the client retries
            log.error("result batch failed", exc_info=exc, extra={"writes": len(batch)})
            for write in batch:
                _settle(write, _unavailable())
            raise _ConnectionLost from exc
        for write, outcome in zip(batch, outcomes, strict=True):
            _settle(write, outcome)

    async def _write_batch(self, conn: asyncpg.Connection, batch: list[_Write]
                           ) -> list[Answer | BaseException]:
        run_ids = sorted({write.run_id for write in batch})
        keyed = [w for w in batch if w.command_id is not None]
        async with conn.transaction():
            await conn.fetchval(_LOCK_RUNS, run_ids)
            # Idempotency keys are looked up as (run, key) pairs: the primary key.
            found = await conn.fetchrow(_READ, run_ids, [w.command_id for w in keyed],
                                        [w.run_id for w in keyed])
            states = {run: state for run, state in msgspec.json.decode(found["runs"])}
            sizes: dict[tuple[str, int, int], int] = {}
            totals: dict[str, int] = collections.defaultdict(int)
            for run, pos, round_, data_size, files_size in msgspec.json.decode(found["usage"]):
                sizes[(run, pos, round_)] = data_size
                totals[run] += data_size + files_size
            seen = {(run, command): Answer(msgspec.json.decode(response), replayed=True)
                    for run, command, response in msgspec.json.decode(found["seen"])}
            outcomes, plans, remembered = self._decide(batch, states, sizes, totals, seen)
            if plans or remembered:
                columns: list[list[Any]] = []
                for append in (False, True):
                    chosen = [(key, plan) for key, plan in plans.items() if plan.append is append]
                    columns += [[k[0] for k, _ in chosen], [k[1] for k, _ in chosen],
                                [k[2] for k, _ in chosen], [p.component_id for _, p in chosen],
                                [b"".join(p.chunks) for _, p in chosen]]
                columns += [[r[i] for r in remembered] for i in range(3)]
                await conn.fetchval(_WRITE, *columns)
        self.batches += 1
        self.writes += len(batch)
        return outcomes

    def _decide(self, batch: list[_Write], states: dict[str, str | None],
                sizes: dict[tuple[str, int, int], int], totals: dict[str, int],
                seen: dict[tuple[str, str], Answer]
                ) -> tuple[list[Answer | BaseException], dict[tuple[str, int, int], _Plan],
                           list[tuple[str, str, str]]]:
        """Each write in order, as if alone: its outcome, and what to write."""
        quotas = self.quotas
        outcomes: list[Answer | BaseException] = []
        plans: dict[tuple[str, int, int], _Plan] = {}
        remembered: list[tuple[str, str, str]] = []
        for write in batch:
            if write.command_id is not None and (write.run_id, write.command_id) in seen:
                outcomes.append(seen[(write.run_id, write.command_id)])
                continue
            if write.run_id not in states:
                outcomes.append(run_not_found(write.run_id))
                continue
            state = states[write.run_id]
            if state is not None:
                outcomes.append(run_ended(state))
                continue
            key = (write.run_id, write.pos, write.round)
            old = sizes.get(key, 0)
            new = old + len(write.data) if write.append else len(write.data)
            if new > quotas.per_component:
                outcomes.append(quota_exceeded(
                    f"the result data of one component may have at most {quotas.per_component} "
                    f"bytes; this would make {new}"))
                continue
            if totals[write.run_id] - old + new > quotas.per_run:
                outcomes.append(quota_exceeded(
                    f"the results of one run may have at most {quotas.per_run} bytes; this "
                    f"would make {totals[write.run_id] - old + new}"))
                continue
            sizes[key] = new
            totals[write.run_id] += new - old
            plan = plans.get(key)
            if plan is None or not write.append:
                plan = plans[key] = _Plan(write.append, write.component_id)
            plan.chunks.append(write.data)
            answer = Answer({"stored": True, "pos": write.pos, "round": write.round,
                             "size": new})
            outcomes.append(answer)
            if write.command_id is not None:
                seen[(write.run_id, write.command_id)] = Answer(answer.body, replayed=True)
                remembered.append((write.run_id, write.command_id,
                                   _json.encode(answer.body).decode()))
        return outcomes, plans, remembered


async def write_one(pool: asyncpg.Pool, quotas: Quotas, run_id: str, pos: int, round_: int,
                    component_id: str, data: bytes, *, append: bool,
                    command_id: str | None = None) -> Answer:
    """One write in its own transaction, without the batcher (the benchmark's baseline)."""
    writer = ResultWriter(pool, quotas)
    loop = asyncio.get_running_loop()
    write = _Write(run_id, pos, round_, component_id, data, append,
                   check_command_id(command_id), loop.create_future())
    async with pool.acquire() as conn:
        with contextlib.suppress(_ConnectionLost):
            await writer._flush(conn, [write])
    return await write.future


# ---------------------------------------------------------------------------
# Files


class FileInfo(msgspec.Struct, kw_only=True):
    component_result_id: int
    pos: int
    round: int
    filename: str
    size: int
    media_type: str
    uploaded_at: datetime


async def store_file(pool: asyncpg.Pool, quotas: Quotas, run_id: str, pos: int, round_: int,
                     component_id: str, filename: str, content: bytes, media_type: str = "",
                     *, command_id: str | None = None) -> Answer:
    """Store (or replace) a result file of a player (jatos.uploadResultFile)."""
    filename = check_filename(filename)
    command_id = check_command_id(command_id)
    media_type = (media_type or guess_media_type(filename) or "application/octet-stream")[:200]
    if len(content) > quotas.file:
        raise quota_exceeded(f"a result file may have at most {quotas.file} bytes; this one "
                             f"has {len(content)}")
    async with pool.acquire() as conn, conn.transaction():
        await _lock_run(conn, run_id)
        replay = await _replay(conn, run_id, command_id)
        if replay is not None:
            return replay
        total = await conn.fetchval("SELECT coalesce(sum(data_size + files_size), 0) "
                                    "FROM component_results WHERE run_id = $1", run_id)
        old = await conn.fetchval(
            "SELECT f.size FROM result_files f JOIN component_results c ON c.id = "
            "f.component_result_id WHERE c.run_id = $1 AND c.pos = $2 AND c.round = $3 "
            "AND f.filename = $4", run_id, pos, round_, filename) or 0
        if total - old + len(content) > quotas.per_run:
            raise quota_exceeded(f"the results of one run may have at most {quotas.per_run} "
                                 f"bytes; this would make {total - old + len(content)}")
        player = await conn.fetchval(_ENSURE_PLAYER, run_id, pos, round_, component_id)
        await conn.execute(
            "INSERT INTO result_files (component_result_id, filename, size, media_type, content) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (component_result_id, filename) DO UPDATE "
            "SET size = EXCLUDED.size, media_type = EXCLUDED.media_type, "
            "content = EXCLUDED.content, uploaded_at = now()",
            player, filename, len(content), media_type, content)
        await conn.execute(
            "UPDATE component_results SET (file_count, files_size) = (SELECT count(*), "
            "coalesce(sum(size), 0) FROM result_files WHERE component_result_id = $1), "
            "updated_at = now(), purged_at = NULL WHERE id = $1", player)
        body = {"stored": True, "pos": pos, "round": round_, "filename": filename,
                "size": len(content)}
        await _remember(conn, run_id, command_id, body)
    return Answer(body)


async def find_file(pool: asyncpg.Pool | asyncpg.Connection, run_id: str, filename: str,
                    pos: int | None = None, round_: int | None = None) -> FileInfo | None:
    """A run's file by name: of the given player, else the one uploaded last."""
    row = await pool.fetchrow(
        "SELECT f.component_result_id, c.pos, c.round, f.filename, f.size, f.media_type, "
        "f.uploaded_at FROM result_files f JOIN component_results c ON c.id = "
        "f.component_result_id WHERE c.run_id = $1 AND f.filename = $2 "
        "AND ($3::int IS NULL OR c.pos = $3) AND ($4::int IS NULL OR c.round = $4) "
        "ORDER BY f.uploaded_at DESC, c.id DESC LIMIT 1",
        run_id, filename, pos, round_)
    return FileInfo(**dict(row)) if row else None


async def file_chunks(conn: asyncpg.Connection, component_result_id: int, filename: str,
                      size: int, chunk: int = FILE_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """A stored file in slices (the column is stored uncompressed, so a slice reads only
    its own pages). Run it inside a transaction for a consistent read."""
    for start in range(0, size, chunk):
        part = await conn.fetchval(
            "SELECT substring(content FROM $3 FOR $4) FROM result_files "
            "WHERE component_result_id = $1 AND filename = $2",
            component_result_id, filename, start + 1, chunk)
        if part is None:
            return
        yield part


async def read_file(pool: asyncpg.Pool, run_id: str, filename: str, pos: int | None = None,
                    round_: int | None = None) -> tuple[FileInfo, AsyncIterator[bytes]] | None:
    """A file's info and an iterator over its content, read in one snapshot. The
    iterator holds a pooled connection until it is exhausted or closed."""
    info = await find_file(pool, run_id, filename, pos, round_)
    if info is None:
        return None

    async def chunks() -> AsyncIterator[bytes]:
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
            async for part in file_chunks(conn, info.component_result_id, info.filename,
                                          info.size):
                yield part

    return info, chunks()


# ---------------------------------------------------------------------------
# Logs and bonuses


async def append_log(pool: asyncpg.Pool, quotas: Quotas, run_id: str, line: str,
                     pos: int | None = None, *, command_id: str | None = None) -> Answer:
    """Keep a jatos.log line with the run (at most ``quotas.log_per_run`` bytes in all)."""
    command_id = check_command_id(command_id)
    line = line.replace("\x00", "")
    size = len(line.encode())
    if size > quotas.log_per_run:
        raise quota_exceeded(f"the log of one run may have at most {quotas.log_per_run} bytes")
    async with pool.acquire() as conn, conn.transaction():
        await _lock_run(conn, run_id)
        replay = await _replay(conn, run_id, command_id)
        if replay is not None:
            return replay
        used = await conn.fetchval("SELECT coalesce(sum(octet_length(line)), 0) FROM run_logs "
                                   "WHERE run_id = $1", run_id)
        if used + size > quotas.log_per_run:
            raise quota_exceeded(f"the log of one run may have at most {quotas.log_per_run} "
                                 f"bytes; it has {used}")
        await conn.execute("INSERT INTO run_logs (run_id, pos, line) VALUES ($1, $2, $3)",
                           run_id, pos, line)
        body = {"stored": True, "size": size}
        await _remember(conn, run_id, command_id, body)
    return Answer(body)


async def set_bonus(pool: asyncpg.Pool, run_id: str, pos: int, round_: int, component_id: str,
                    points: Decimal | None, *, by: str = "participant",
                    command_id: str | None = None) -> Answer:
    """Set (replace; None clears) a player's bonus in points (oTree ``player.payoff``).

    ``by="participant"``: the study page, only while the run is live.
    ``by="experimenter"``: any time, also after the run ended."""
    if by not in ("participant", "experimenter"):
        raise ValueError(f"bonus set by {by!r}")
    command_id = check_command_id(command_id)
    async with pool.acquire() as conn, conn.transaction():
        await _lock_run(conn, run_id, active=by == "participant")
        replay = await _replay(conn, run_id, command_id)
        if replay is not None:
            return replay
        player = await conn.fetchval(_ENSURE_PLAYER, run_id, pos, round_, component_id)
        await conn.execute("UPDATE component_results SET bonus = $2, bonus_set_by = $3, "
                           "updated_at = now() WHERE id = $1", player, points,
                           by if points is not None else None)
        body = {"stored": True, "pos": pos, "round": round_, "points": number(points)}
        await _remember(conn, run_id, command_id, body)
    return Answer(body)


class PlayerBonus(msgspec.Struct, kw_only=True):
    pos: int
    round: int
    component_id: str
    points: int | float | None


class Payoff(msgspec.Struct, kw_only=True):
    """A participant's payoff: fee + sum of bonuses x currency per point."""

    run_id: str
    state: str
    bonus_points: int | float
    participation_fee: float
    real_world_currency_per_point: float
    payoff: float
    currency: str
    players: list[PlayerBonus]


async def run_payoff(pool: asyncpg.Pool, run_id: str,
                     definition: StudyDefinition | None = None) -> Payoff:
    run = await pool.fetchrow("SELECT study_id, study_version, end_state, preview FROM runs "
                              "WHERE id = $1", run_id)
    if run is None:
        raise run_not_found(run_id)
    if definition is None:
        definition = await load_definition(pool, run["study_id"], run["study_version"])
    config = definition.session_config if definition else SessionConfig()
    rows = await pool.fetch("SELECT pos, round, component_id, bonus FROM component_results "
                            "WHERE run_id = $1 ORDER BY pos, round", run_id)
    points = sum((row["bonus"] for row in rows if row["bonus"] is not None), Decimal(0))
    return Payoff(
        run_id=run_id, state=run_state(run["end_state"], run["preview"]),
        bonus_points=number(points) or 0, participation_fee=config.participation_fee,
        real_world_currency_per_point=config.real_world_currency_per_point,
        payoff=float(payoff(config, points)), currency=config.currency,
        players=[PlayerBonus(pos=row["pos"], round=row["round"],
                             component_id=row["component_id"], points=number(row["bonus"]))
                 for row in rows])


def run_state(end_state: str | None, preview: bool = False) -> str:
    """The run's state as far as Postgres knows: its end state, else live."""
    return end_state or ("pre" if preview else "started")


# ---------------------------------------------------------------------------
# End and erase


async def mark_run_ended(pool: asyncpg.Pool, run_id: str, state: str, message: str = ""
                         ) -> bool:
    """Record that a run ended (``finished``, ``aborted`` or ``failed``): from now on it
    takes no result writes. Waits for writes in flight to the run. False when the run
    is unknown or had ended already (the first end wins)."""
    if state not in END_STATES:
        raise ValueError(f"a run ends as one of {', '.join(END_STATES)}, not {state!r}")
    async with pool.acquire() as conn, conn.transaction():
        await conn.fetchval(_LOCK_RUNS, [run_id])
        return await _end(conn, run_id, state, message)


async def _end(conn: asyncpg.Connection, run_id: str, state: str, message: str) -> bool:
    ended = await conn.fetchval(
        "UPDATE runs SET end_state = $2, ended_at = now(), end_message = nullif($3, '') "
        "WHERE id = $1 AND end_state IS NULL RETURNING true", run_id, state, message[:2000])
    if ended:
        await conn.execute(
            "UPDATE component_results SET state = $2 WHERE run_id = $1 "
            "AND state NOT IN ('finished', 'aborted', 'failed')", run_id,
            {"finished": "finished", "aborted": "aborted"}.get(state, "failed"))
    return bool(ended)


class Purged(msgspec.Struct, kw_only=True):
    run_id: str
    found: bool
    players: int = 0        # component results whose data or files were erased
    files: int = 0
    log_lines: int = 0
    ended: bool = False     # this call ended the run (end_state given)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def purge_run(pool: asyncpg.Pool, run_id: str, *, end_state: str | None = None,
                    message: str = "") -> Purged:
    """Erase a run's result data, files and log lines (an abort, or an experimenter's
    delete). Metadata stay: the run, its players (positions, rounds, states, times,
    bonuses) marked ``purged_at``. With ``end_state`` the run is also marked ended in
    the same transaction, so no write can slip in after the erasure."""
    if end_state is not None and end_state not in END_STATES:
        raise ValueError(f"a run ends as one of {', '.join(END_STATES)}, not {end_state!r}")
    async with pool.acquire() as conn, conn.transaction():
        if run_id not in await _lock_runs(conn, [run_id]):
            return Purged(run_id=run_id, found=False)
        files = _count(await conn.execute(
            "DELETE FROM result_files f USING component_results c WHERE "
            "c.id = f.component_result_id AND c.run_id = $1", run_id))
        players = _count(await conn.execute(
            "UPDATE component_results SET data = NULL, data_size = 0, file_count = 0, "
            "files_size = 0, purged_at = now(), updated_at = now() WHERE run_id = $1 "
            "AND (data IS NOT NULL OR file_count > 0)", run_id))
        lines = _count(await conn.execute("DELETE FROM run_logs WHERE run_id = $1", run_id))
        ended = await _end(conn, run_id, end_state, message) if end_state else False
    log.info("run results purged", extra={"run": run_id, "players": players, "files": files})
    return Purged(run_id=run_id, found=True, players=players, files=files, log_lines=lines,
                  ended=ended)


# ---------------------------------------------------------------------------
# Reading one run's results (experimenter view, tests)


class PlayerResult(msgspec.Struct, kw_only=True):
    id: int
    pos: int
    round: int
    component_id: str
    state: str
    data: str | None
    data_size: int
    files: list[FileInfo]
    bonus: int | float | None
    bonus_set_by: str | None
    created_at: datetime
    updated_at: datetime
    purged_at: datetime | None


class LogLine(msgspec.Struct, kw_only=True):
    pos: int | None
    logged_at: datetime
    line: str


class RunResults(msgspec.Struct, kw_only=True):
    run_id: str
    result_id: int
    batch_id: str
    state: str
    ended_at: datetime | None
    players: list[PlayerResult]
    log: list[LogLine]


async def get_run_results(pool: asyncpg.Pool, run_id: str, *, with_data: bool = True
                          ) -> RunResults | None:
    run = await pool.fetchrow("SELECT result_id, batch_id, end_state, ended_at, preview "
                              "FROM runs WHERE id = $1", run_id)
    if run is None:
        return None
    data_column = "data" if with_data else "NULL::bytea AS data"
    players = await pool.fetch(
        f"SELECT id, pos, round, component_id, state, {data_column}, data_size, bonus, "
        "bonus_set_by, created_at, updated_at, purged_at FROM component_results "
        "WHERE run_id = $1 ORDER BY pos, round", run_id)
    files = await pool.fetch(
        "SELECT f.component_result_id, c.pos, c.round, f.filename, f.size, f.media_type, "
        "f.uploaded_at FROM result_files f JOIN component_results c ON c.id = "
        "f.component_result_id WHERE c.run_id = $1 ORDER BY f.filename", run_id)
    by_player: dict[int, list[FileInfo]] = collections.defaultdict(list)
    for row in files:
        by_player[row["component_result_id"]].append(FileInfo(**dict(row)))
    lines = await pool.fetch("SELECT pos, logged_at, line FROM run_logs WHERE run_id = $1 "
                             "ORDER BY id", run_id)
    return RunResults(
        run_id=run_id, result_id=run["result_id"], batch_id=run["batch_id"],
        state=run_state(run["end_state"], run["preview"]), ended_at=run["ended_at"],
        players=[PlayerResult(
            id=p["id"], pos=p["pos"], round=p["round"], component_id=p["component_id"],
            state=p["state"],
            data=p["data"].decode("utf-8", "replace") if p["data"] is not None else None,
            data_size=p["data_size"], files=by_player.get(p["id"], []),
            bonus=number(p["bonus"]), bonus_set_by=p["bonus_set_by"],
            created_at=p["created_at"], updated_at=p["updated_at"], purged_at=p["purged_at"])
            for p in players],
        log=[LogLine(**dict(row)) for row in lines])
