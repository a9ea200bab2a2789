"""Batches, links and runs (Postgres), and the entry transaction.

``enter(pool, link_code, url_query, ...)`` turns a participant's visit of
``/go/<link code>`` into a run, or refuses it with ``EntryRefused(code, message)``
(codes in docs/studies.md). It holds every limit exactly under concurrency: it
locks the batch row (``SELECT ... FOR UPDATE``) for the whole transaction, so
entries to one batch are serialized, and the counts it checks cannot change
under it. Lock order is always batch, then link.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from msgspec import UNSET, UnsetType

from results_store.definition import GroupSettings
from results_store.studies import LINK_TYPES, load_definition

SINGLE_USE = frozenset({"personal_single"})
PERSONAL = frozenset({"personal_single", "personal_multiple"})
MTURK = frozenset({"mturk", "mturk_sandbox"})
MAX_LINKS_PER_CALL = 10_000
MAX_LABEL_CHARS = 200
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LINK_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MTURK_WORKER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class CatalogError(Exception):
    """Bad input for a batch or link operation: ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class EntryRefused(Exception):
    """A participant may not enter: ``link_not_found``, ``link_used``, ``batch_inactive``,
    ``batch_closed``, ``batch_full``, ``link_type_not_allowed``, ``study_not_found``,
    ``already_participated``, ``label_required`` or ``worker_id_missing``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Batch(msgspec.Struct, kw_only=True):
    id: str
    study_id: str | None
    label: str
    active: bool
    max_total_participants: int | None
    allowed_link_types: list[str]
    json_input: Any
    group_settings: GroupSettings | None
    participants: int               # runs counted against max_total_participants
    created_at: datetime
    # Set when the batch was closed for good (docs/archive.md).
    closed_at: datetime | None = None


class BatchUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; a field left out stays as it is (``null`` clears a limit)."""

    label: str | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    max_total_participants: int | UnsetType | None = UNSET
    allowed_link_types: list[str] | UnsetType = UNSET
    json_input: Any | UnsetType = UNSET
    group_settings: GroupSettings | UnsetType | None = UNSET


class Link(msgspec.Struct, kw_only=True):
    code: str
    batch_id: str
    type: str
    label: str | None
    label_required: bool
    worker_id: str | None
    created_at: datetime
    used_at: datetime | None = None


class Run(msgspec.Struct, kw_only=True):
    id: str
    batch_id: str
    study_id: str
    study_version: int
    link_code: str | None
    link_type: str
    worker_id: str
    label: str | None
    url_query: dict[str, str]
    preview: bool
    created_at: datetime


class Entered(msgspec.Struct, kw_only=True):
    """A run just created by ``enter``."""

    run_id: str
    batch_id: str
    study_id: str
    study_version: int      # the study's current version at entry: the run keeps it
    worker_id: str
    link_type: str
    label: str | None
    url_query: dict[str, str]
    preview: bool
    link_code: str = ""
    created_at: datetime | None = None


_json = msgspec.json.Encoder()


def _jsonb(value: Any) -> str | None:
    return None if value is None else _json.encode(value).decode()


def _decode_jsonb(raw: str | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)


_BATCH_COLUMNS = ("id, study_id, label, active, max_total_participants, allowed_link_types, "
                  "json_input::text AS json_input, group_settings::text AS group_settings, "
                  "participants, created_at, closed_at")


def _batch(row: asyncpg.Record) -> Batch:
    groups = row["group_settings"]
    return Batch(id=row["id"], study_id=row["study_id"], label=row["label"], active=row["active"],
                 max_total_participants=row["max_total_participants"],
                 allowed_link_types=list(row["allowed_link_types"]),
                 json_input=_decode_jsonb(row["json_input"]),
                 group_settings=msgspec.json.decode(groups, type=GroupSettings)
                 if groups is not None else None,
                 participants=row["participants"], created_at=row["created_at"],
                 closed_at=row["closed_at"])


def _check_link_types(types: list[str]) -> list[str]:
    unknown = [t for t in types if t not in LINK_TYPES]
    if unknown:
        raise CatalogError("bad_link_type", f"unknown link type {unknown[0]!r} (known: "
                           f"{', '.join(LINK_TYPES)})")
    return sorted(set(types), key=LINK_TYPES.index)


def _check_limit(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 2**31 - 1:
        raise CatalogError("bad_limit", "max_total_participants is a whole number >= 0 or null")
    return value


def _check_label(label: str, field: str = "label") -> str:
    label = label.strip()
    if len(label) > MAX_LABEL_CHARS:
        raise CatalogError("bad_label", f"a {field} has at most {MAX_LABEL_CHARS} characters")
    return label


# ---------------------------------------------------------------------------
# Batches


async def create_batch(pool: asyncpg.Pool, study_id: str, *, label: str = "",
                       active: bool = True,
                       max_total_participants: int | UnsetType | None = UNSET,
                       allowed_link_types: list[str] | UnsetType = UNSET,
                       json_input: Any | UnsetType = UNSET,
                       group_settings: GroupSettings | UnsetType | None = UNSET,
                       batch_id: str | None = None, created_by: int | None = None) -> Batch:
    """A new batch of a study. Settings left UNSET come from the study's current
    definition (``batch_defaults`` and ``groups``; JATOS: its first batch)."""
    definition = await load_definition(pool, study_id)
    if definition is None:
        raise CatalogError("study_not_found", f"there is no study {study_id!r}")
    defaults = definition.batch_defaults
    if max_total_participants is UNSET:
        max_total_participants = defaults.max_total_participants
    if allowed_link_types is UNSET:
        allowed_link_types = defaults.allowed_link_types or list(LINK_TYPES)
    if json_input is UNSET:
        json_input = defaults.json_input
    if group_settings is UNSET:
        group_settings = definition.groups if definition.group_study else None
    batch_id = batch_id or uuid.uuid4().hex[:16]
    if not BATCH_ID_RE.match(batch_id):
        raise CatalogError("bad_batch_id", "a batch id is 1-64 letters, digits, '-', '_' or '.'")
    row = await pool.fetchrow(
        "INSERT INTO batches (id, study_id, label, active, max_total_participants, "
        "allowed_link_types, json_input, group_settings, created_by) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9) "
        f"ON CONFLICT (id) DO NOTHING RETURNING {_BATCH_COLUMNS}",
        batch_id, study_id, _check_label(label), active, _check_limit(max_total_participants),
        _check_link_types(allowed_link_types), _jsonb(json_input), _jsonb(group_settings),
        created_by)
    if row is None:
        raise CatalogError("batch_exists", f"batch {batch_id} exists already")
    return _batch(row)


async def get_batch(pool: asyncpg.Pool, batch_id: str) -> Batch | None:
    row = await pool.fetchrow(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = $1", batch_id)
    return _batch(row) if row else None


async def list_batches(pool: asyncpg.Pool, study_id: str) -> list[Batch]:
    rows = await pool.fetch(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE study_id = $1 "
                            "ORDER BY created_at, id", study_id)
    return [_batch(row) for row in rows]


async def update_batch(pool: asyncpg.Pool, batch_id: str, changes: BatchUpdate) -> Batch | None:
    """Apply ``changes``; None if there is no such batch. Lowering the limit below the
    participants already in does not remove anybody: the batch is just full."""
    sets: list[str] = []
    args: list[Any] = [batch_id]

    def put(column: str, value: Any, cast: str = "") -> None:
        args.append(value)
        sets.append(f"{column} = ${len(args)}{cast}")

    if changes.label is not UNSET:
        put("label", _check_label(changes.label))
    if changes.active is not UNSET:
        if changes.active and await pool.fetchval(
                "SELECT closed_at IS NOT NULL FROM batches WHERE id = $1", batch_id):
            raise CatalogError("batch_closed", f"batch {batch_id} is closed for good")
        put("active", changes.active)
    if changes.max_total_participants is not UNSET:
        put("max_total_participants", _check_limit(changes.max_total_participants))
    if changes.allowed_link_types is not UNSET:
        put("allowed_link_types", _check_link_types(changes.allowed_link_types))
    if changes.json_input is not UNSET:
        put("json_input", _jsonb(changes.json_input), "::jsonb")
    if changes.group_settings is not UNSET:
        put("group_settings", _jsonb(changes.group_settings), "::jsonb")
    if not sets:
        return await get_batch(pool, batch_id)
    row = await pool.fetchrow(f"UPDATE batches SET {', '.join(sets)} WHERE id = $1 "
                              f"RETURNING {_BATCH_COLUMNS}", *args)
    return _batch(row) if row else None


# ---------------------------------------------------------------------------
# Links


def new_link_code() -> str:
    """22 URL-safe characters: 128 random bits."""
    return secrets.token_urlsafe(16)


def _new_worker_id() -> str:
    return "w" + secrets.token_hex(8)


_LINK_COLUMNS = "code, batch_id, type, label, label_required, worker_id, created_at, used_at"


def _link(row: asyncpg.Record) -> Link:
    return Link(**dict(row))


async def create_links(pool: asyncpg.Pool, batch_id: str, link_type: str, *,
                       count: int | None = None, labels: list[str] | None = None,
                       label_required: bool = False, created_by: int | None = None
                       ) -> list[Link]:
    """``count`` links of one type (or one per label, in order). Personal links get
    their worker at creation: every run of one personal link has the same worker."""
    if link_type not in LINK_TYPES:
        raise CatalogError("bad_link_type", f"unknown link type {link_type!r} (known: "
                           f"{', '.join(LINK_TYPES)})")
    if labels is not None:
        labels = [_check_label(label) for label in labels]
        if count is not None and count != len(labels):
            raise CatalogError("count_mismatch", f"count is {count} but {len(labels)} labels "
                               "were given")
        count = len(labels)
    count = 1 if count is None else count
    if not 1 <= count <= MAX_LINKS_PER_CALL:
        raise CatalogError("bad_count", f"create 1 to {MAX_LINKS_PER_CALL} links at a time")
    closed = await pool.fetchval("SELECT closed_at IS NOT NULL FROM batches WHERE id = $1",
                                 batch_id)
    if closed is None:
        raise CatalogError("batch_not_found", f"there is no batch {batch_id!r}")
    if closed:
        raise CatalogError("batch_closed", f"batch {batch_id} is closed for good: it takes no "
                           "new links")
    label_list: list[str | None] = list(labels) if labels is not None else [None] * count
    label_list = [label or None for label in label_list]
    personal = link_type in PERSONAL
    codes = [new_link_code() for _ in range(count)]
    workers = [_new_worker_id() if personal else None for _ in range(count)]
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "INSERT INTO links (code, batch_id, type, label, label_required, worker_id, "
            "created_by) SELECT c, $1, $2, l, $3, w, $4 FROM unnest($5::text[], $6::text[], "
            "$7::text[]) WITH ORDINALITY AS t(c, l, w, n) ORDER BY n "
            f"ON CONFLICT (code) DO NOTHING RETURNING {_LINK_COLUMNS}",
            batch_id, link_type, label_required, created_by, codes, label_list, workers)
        if len(rows) != count:  # a code collision: 2^-128 per pair; refuse rather than guess
            raise CatalogError("code_collision", "a generated link code exists; try again")
    by_code = {row["code"]: _link(row) for row in rows}
    return [by_code[code] for code in codes]


async def list_links(pool: asyncpg.Pool, batch_id: str, link_type: str | None = None
                     ) -> list[Link]:
    if link_type is None:
        rows = await pool.fetch(f"SELECT {_LINK_COLUMNS} FROM links WHERE batch_id = $1 "
                                "ORDER BY seq", batch_id)
    else:
        rows = await pool.fetch(f"SELECT {_LINK_COLUMNS} FROM links WHERE batch_id = $1 "
                                "AND type = $2 ORDER BY seq", batch_id, link_type)
    return [_link(row) for row in rows]


async def get_link(pool: asyncpg.Pool, code: str) -> Link | None:
    row = await pool.fetchrow(f"SELECT {_LINK_COLUMNS} FROM links WHERE code = $1", code)
    return _link(row) if row else None


def link_url(base_url: str, code: str) -> str:
    return f"{base_url.rstrip('/')}/go/{code}"


CSV_COLUMNS = ("code", "type", "label", "url", "created_at", "used_at")


def links_csv(links: list[Link], base_url: str) -> str:
    """CSV text (header row, then one row per link) with the links' full URLs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for link in links:
        writer.writerow([link.code, link.type, link.label or "", link_url(base_url, link.code),
                         link.created_at.isoformat(),
                         link.used_at.isoformat() if link.used_at else ""])
    return out.getvalue()


# ---------------------------------------------------------------------------
# Runs


_RUN_COLUMNS = ("id, batch_id, study_id, study_version, link_code, link_type, worker_id, label, "
                "url_query::text AS url_query, preview, created_at")


def _run(row: asyncpg.Record) -> Run:
    values = dict(row)
    values["url_query"] = msgspec.json.decode(values["url_query"])
    return Run(**values)


async def list_runs(pool: asyncpg.Pool, batch_id: str, *, limit: int = 1000, offset: int = 0
                    ) -> list[Run]:
    rows = await pool.fetch(f"SELECT {_RUN_COLUMNS} FROM runs WHERE batch_id = $1 "
                            "ORDER BY created_at, id LIMIT $2 OFFSET $3",
                            batch_id, max(0, min(limit, 10_000)), max(0, offset))
    return [_run(row) for row in rows]


async def get_run(pool: asyncpg.Pool, run_id: str) -> Run | None:
    row = await pool.fetchrow(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = $1", run_id)
    return _run(row) if row else None


# ---------------------------------------------------------------------------
# Entry


async def enter(pool: asyncpg.Pool, link_code: str, url_query: dict[str, str],
                label: str | None = None, browser_has_run: bool = False) -> Entered:
    """Create a run for a participant entering by ``link_code``, or raise EntryRefused.

    ``url_query``: the entry URL's query parameters (kept with the run; MTurk's
    ``workerId`` is read from it). ``label``: the participant's label (``?label=`` or
    the room form); personal links default to their own label. ``browser_has_run``:
    the gateway found this study's general-single cookie in the browser.

    Rules (JATOS): a personal-single link enters once; personal links keep one
    worker for all their runs; general and preview links make a new worker per
    run; MTurk links one run per ``workerId`` and batch; general-single links one
    run per browser. Preview runs are always allowed by link type and do not
    count against ``max_total_participants`` (JATOS: the experimenter's own runs).
    """
    if not LINK_CODE_RE.match(link_code or ""):
        raise EntryRefused("link_not_found", "there is no such study link")
    query = {str(k): str(v) for k, v in (url_query or {}).items()}
    async with pool.acquire() as conn, conn.transaction():
        batch_id = await conn.fetchval("SELECT batch_id FROM links WHERE code = $1", link_code)
        if batch_id is None:
            raise EntryRefused("link_not_found", "there is no such study link")
        # The batch row lock serializes entries to this batch until commit.
        batch = await conn.fetchrow(
            "SELECT b.study_id, b.active, b.closed_at, b.max_total_participants, "
            "b.allowed_link_types, "
            "b.participants, s.current_version FROM batches b LEFT JOIN studies s "
            "ON s.id = b.study_id WHERE b.id = $1 FOR UPDATE OF b", batch_id)
        link = await conn.fetchrow(
            "SELECT type, label, label_required, worker_id, used_at FROM links "
            "WHERE code = $1 FOR UPDATE", link_code)
        if batch is None or link is None:  # deleted between the reads
            raise EntryRefused("link_not_found", "there is no such study link")
        if batch["study_id"] is None or not batch["current_version"]:
            raise EntryRefused("study_not_found", "this batch has no study to run")
        if batch["closed_at"] is not None:
            raise EntryRefused("batch_closed", "this study has ended")
        if not batch["active"]:
            raise EntryRefused("batch_inactive", "this study is not open at the moment")
        link_type: str = link["type"]
        preview = link_type == "preview"
        if not preview and link_type not in batch["allowed_link_types"]:
            raise EntryRefused("link_type_not_allowed",
                               f"{link_type.replace('_', ' ')} links are switched off for "
                               "this batch")
        run_label = (label or "").strip()[:MAX_LABEL_CHARS] or None
        if run_label is None and link_type in PERSONAL:
            run_label = link["label"]
        if link["label_required"] and not run_label:
            raise EntryRefused("label_required", "this link needs a participant label")

        if link_type in SINGLE_USE and link["used_at"] is not None:
            raise EntryRefused("link_used", "this personal link has been used already")
        if link_type == "general_single" and browser_has_run:
            raise EntryRefused("already_participated", "this browser has taken part already")
        if link_type in PERSONAL:
            worker_id = link["worker_id"] or _new_worker_id()
        elif link_type in MTURK:
            mturk_worker = query.get("workerId", "").strip()
            if not mturk_worker:
                raise EntryRefused("worker_id_missing", "an MTurk link needs the workerId "
                                   "query parameter")
            if not MTURK_WORKER_RE.match(mturk_worker):
                raise EntryRefused("worker_id_missing", "the workerId query parameter is not a "
                                   "valid MTurk worker id")
            worker_id = f"{link_type}:{mturk_worker}"
            if await conn.fetchval("SELECT 1 FROM runs WHERE batch_id = $1 AND worker_id = $2 "
                                   "AND link_type = $3", batch_id, worker_id, link_type):
                raise EntryRefused("already_participated",
                                   "this MTurk worker has taken part in this batch already")
        else:
            worker_id = _new_worker_id()
        limit = batch["max_total_participants"]
        if not preview and limit is not None and batch["participants"] >= limit:
            raise EntryRefused("batch_full", "this study has all the participants it needs")

        run_id = uuid.uuid4().hex
        created_at = await conn.fetchval(
            "INSERT INTO runs (id, batch_id, study_id, study_version, link_code, link_type, "
            "worker_id, label, url_query, preview) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10) RETURNING created_at",
            run_id, batch_id, batch["study_id"], batch["current_version"], link_code, link_type,
            worker_id, run_label, _jsonb(query), preview)
        if not preview:
            await conn.execute("UPDATE batches SET participants = participants + 1 "
                               "WHERE id = $1", batch_id)
        if link["used_at"] is None:
            await conn.execute("UPDATE links SET used_at = now() WHERE code = $1", link_code)
    return Entered(run_id=run_id, batch_id=batch_id, study_id=batch["study_id"],
                   study_version=batch["current_version"], worker_id=worker_id,
                   link_type=link_type, label=run_label, url_query=query, preview=preview,
                   link_code=link_code, created_at=created_at)
