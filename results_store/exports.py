"""Exports of a batch's results, streamed (docs/results.md).

``export_batch(pool, batch_id, format)`` is an async generator of byte chunks. It
reads one consistent snapshot (a read-only REPEATABLE READ transaction) through a
server-side cursor, so memory does not grow with the batch: at any time it holds
one run's players, one file slice, and a few hundred KiB of output. The JATOS
archive's central directory and its metadata.json are spooled to temporary files
(in memory up to 1 MiB, then on disk) until the end.

Formats (``FORMATS``):

- ``jatos``: the JATOS results archive (``.zip``, JATOS's JRZIP layout):
  ``study_result_<n>/comp_result_<m>/data.txt``, ``.../files/<name>``, and
  ``metadata.json`` last (JATOS's metadata schema, with Cohort's extras);
- ``data``: result data only, each player's data followed by a newline (JATOS's
  "data only" export);
- ``metadata-json``: the archive's metadata.json alone;
- ``metadata-csv``: one row per player (a run without players: one row);
- ``wide-csv``: oTree's wide format, one row per participant: participant fields,
  session config, then per component and round the player's payoff, state and
  fields (the top-level keys of JSON-object result data);
- ``payments`` / ``payments-json``: the payments report (no preview runs).
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from results_store.definition import SessionConfig, StudyDefinition, decode_definition
from results_store.results import (
    decimal_text,
    file_chunks,
    number,
    payoff,
    run_state,
)
from results_store.zipstream import ZipStream

API_VERSION = "1.0.0"
CHUNK_BYTES = 256 * 1024
SPOOL_BYTES = 1024 * 1024
DATA_PREFETCH = 16          # rows with result data per cursor fetch
META_PREFETCH = 500         # rows without
MAX_WIDE_FIELDS = 200       # player fields per component and round in the wide CSV

FORMATS: dict[str, tuple[str, str]] = {
    # format: (media type, file extension)
    "jatos": ("application/zip", "zip"),
    "data": ("text/plain; charset=utf-8", "txt"),
    "metadata-json": ("application/json", "json"),
    "metadata-csv": ("text/csv; charset=utf-8", "csv"),
    "wide-csv": ("text/csv; charset=utf-8", "csv"),
    "payments": ("text/csv; charset=utf-8", "csv"),
    "payments-json": ("application/json", "json"),
}

STUDY_STATES = {"pre": "PRE", "started": "STARTED", "data_retrieved": "DATA_RETRIEVED",
                "finished": "FINISHED", "aborted": "ABORTED", "failed": "FAIL"}
COMPONENT_STATES = {"started": "STARTED", "data_retrieved": "DATA_RETRIEVED",
                    "result_data_posted": "RESULTDATA_POSTED", "finished": "FINISHED",
                    "reloaded": "RELOADED", "aborted": "ABORTED", "failed": "FAIL"}
WORKER_TYPES = {"personal_single": "PersonalSingle", "personal_multiple": "PersonalMultiple",
                "general_single": "GeneralSingle", "general_multiple": "GeneralMultiple",
                "mturk": "MT", "mturk_sandbox": "MTSandbox", "preview": "Jatos"}

METADATA_CSV_COLUMNS = (
    "result_id", "run_id", "batch_id", "study_id", "study_version", "worker_id", "worker_type",
    "link_type", "label", "preview", "state", "started_at", "ended_at", "duration_s",
    "message", "url_query", "component_result_id", "component_pos", "component_id",
    "component_title", "round", "component_state", "data_size", "file_count", "files_size",
    "bonus_points", "purged_at")
PAYMENT_COLUMNS = ("run_id", "result_id", "worker_id", "label", "state", "bonus_points",
                   "participation_fee", "payoff", "currency")

_json = msgspec.json.Encoder()

Progress = Callable[[int, int], None]   # (runs done, runs in the batch)


class ExportError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class BatchInfo:
    batch_id: str
    label: str
    study_id: str
    study_uuid: str
    study_title: str
    runs: int
    definitions: dict[int, StudyDefinition] = field(default_factory=dict)

    def definition(self, version: int) -> StudyDefinition | None:
        return self.definitions.get(version)

    def config(self, version: int) -> SessionConfig:
        found = self.definitions.get(version)
        return found.session_config if found else SessionConfig()

    def component_title(self, version: int, component_id: str) -> str:
        found = self.definitions.get(version)
        for component in found.components if found else []:
            if component.id == component_id:
                return component.title
        return ""


async def batch_info(conn: asyncpg.Connection | asyncpg.Pool, batch_id: str) -> BatchInfo:
    row = await conn.fetchrow(
        "SELECT b.id, b.label, b.study_id, s.uuid, s.title FROM batches b "
        "LEFT JOIN studies s ON s.id = b.study_id WHERE b.id = $1", batch_id)
    if row is None:
        raise ExportError("batch_not_found", f"there is no batch {batch_id!r}")
    runs = await conn.fetchval("SELECT count(*) FROM runs WHERE batch_id = $1", batch_id)
    definitions = {
        r["version"]: decode_definition(r["definition"]) for r in await conn.fetch(
            "SELECT v.version, v.definition::text AS definition FROM study_versions v "
            "WHERE v.study_id = $1 AND v.version IN (SELECT DISTINCT study_version FROM runs "
            "WHERE batch_id = $2) ORDER BY v.version", row["study_id"], batch_id)}
    return BatchInfo(batch_id=batch_id, label=row["label"], study_id=row["study_id"] or "",
                     study_uuid=row["uuid"] or "", study_title=row["title"] or "", runs=runs,
                     definitions=definitions)


def export_filename(batch_id: str, fmt: str, when: datetime | None = None) -> str:
    stamp = (when or datetime.now()).strftime("%Y%m%d%H%M%S")
    kind = {"jatos": "jatos_results", "data": "results_data", "metadata-json": "metadata",
            "metadata-csv": "metadata", "wide-csv": "wide", "payments": "payments",
            "payments-json": "payments"}[fmt]
    return f"{kind}_{batch_id}_{stamp}.{FORMATS[fmt][1]}"


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError("bad_format", f"unknown export format {fmt!r} (known: "
                          f"{', '.join(FORMATS)})")


async def export_batch(pool: asyncpg.Pool, batch_id: str, fmt: str,
                       progress: Progress | None = None,
                       chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """The export as chunks of about ``chunk_bytes``. Raises ExportError (before the
    first chunk) for an unknown batch or format."""
    check_format(fmt)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        info = await batch_info(conn, batch_id)
        produce = _PRODUCERS[fmt]
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, info.runs)

        if progress is not None:
            progress(0, info.runs)
        buffer = bytearray()
        async for piece in produce(conn, info, step):
            buffer += piece
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)


# ---------------------------------------------------------------------------
# Rows


_RUN_COLUMNS = ("r.id AS run_id, r.result_id, r.study_version, r.link_code, r.link_type, "
                "r.worker_id, r.label, r.url_query::text AS url_query, r.preview, r.created_at, "
                "r.ended_at, r.end_state, r.end_message")
_PLAYER_COLUMNS = ("c.id AS cr_id, c.pos, c.round, c.component_id, c.state AS cr_state, "
                   "c.data_size, c.file_count, c.files_size, c.bonus, "
                   "c.created_at AS cr_created, c.updated_at AS cr_updated, c.purged_at")


async def _runs(conn: asyncpg.Connection, batch_id: str, with_data: bool
                ) -> AsyncIterator[tuple[asyncpg.Record, list[asyncpg.Record]]]:
    """Each run of the batch (in result id order) with its players (position, round)."""
    query = (f"SELECT {_RUN_COLUMNS}, {_PLAYER_COLUMNS}{', c.data' if with_data else ''} "
             "FROM runs r LEFT JOIN component_results c ON c.run_id = r.id "
             "WHERE r.batch_id = $1 ORDER BY r.result_id, c.pos, c.round")
    current: asyncpg.Record | None = None
    players: list[asyncpg.Record] = []
    async for row in conn.cursor(query, batch_id,
                                 prefetch=DATA_PREFETCH if with_data else META_PREFETCH):
        if current is not None and row["run_id"] != current["run_id"]:
            yield current, players
            players = []
        current = row
        if row["cr_id"] is not None:
            players.append(row)
    if current is not None:
        yield current, players


def _epoch_ms(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _duration(start: datetime | None, end: datetime | None) -> str | None:
    """JATOS: ``hh:mm:ss`` (``d:hh:mm:ss`` past a day)."""
    if start is None or end is None:
        return None
    seconds = max(0, int((end - start).total_seconds()))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}:{text}" if days else text


def human_size(size: int) -> str:
    """JATOS-style human-readable byte count (SI units)."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 999.95:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} EB"


def _points(players: list[asyncpg.Record]) -> Decimal:
    return sum((p["bonus"] for p in players if p["bonus"] is not None), Decimal(0))


def _url_query(run: asyncpg.Record) -> dict[str, str]:
    return msgspec.json.decode(run["url_query"]) if run["url_query"] else {}


def _path(run: asyncpg.Record, player: asyncpg.Record) -> str:
    return f"study_result_{run['result_id']}/comp_result_{player['cr_id']}"


# ---------------------------------------------------------------------------
# JATOS metadata (JsonUtils.studyResultMetadata / componentResultMetadata in JATOS)


def _component_metadata(info: BatchInfo, run: asyncpg.Record, player: asyncpg.Record,
                        files: list[asyncpg.Record]) -> dict[str, Any]:
    data: dict[str, Any] = {"size": player["data_size"],
                            "sizeHumanReadable": human_size(player["data_size"])}
    if player["data_size"] or player.get("data") is not None:
        data["filename"] = "data.txt"
    return {
        "id": player["cr_id"],
        "componentId": player["component_id"],
        "componentUuid": player["component_id"],
        "componentTitle": info.component_title(run["study_version"], player["component_id"]),
        "componentPos": player["pos"],
        "round": player["round"],
        "startDate": _epoch_ms(player["cr_created"]),
        "endDate": None,
        "duration": None,
        "lastWriteDate": _epoch_ms(player["cr_updated"]),
        "componentState": COMPONENT_STATES.get(player["cr_state"], player["cr_state"].upper()),
        "path": "/" + _path(run, player),
        "data": data,
        "files": [{"filename": f["filename"], "size": f["size"],
                   "sizeHumanReadable": human_size(f["size"])} for f in files],
        "bonus": number(player["bonus"]),
        "purged": player["purged_at"] is not None,
    }


def _study_metadata(info: BatchInfo, run: asyncpg.Record, players: list[asyncpg.Record],
                    components: list[dict[str, Any]]) -> dict[str, Any]:
    config = info.config(run["study_version"])
    points = _points(players)
    state = run_state(run["end_state"], run["preview"])
    metadata: dict[str, Any] = {
        "id": run["result_id"],
        "uuid": run["run_id"],
        "studyCode": run["link_code"],
    }
    if run["label"] and run["link_type"] in ("personal_single", "personal_multiple"):
        metadata["comment"] = run["label"]
    metadata.update({
        "startDate": _epoch_ms(run["created_at"]),
        "endDate": _epoch_ms(run["ended_at"]),
        "duration": _duration(run["created_at"], run["ended_at"]),
        "lastSeenDate": None,
        "studyState": STUDY_STATES.get(state, state.upper()),
    })
    if run["end_message"]:
        metadata["message"] = run["end_message"]
    query = _url_query(run)
    if query:
        metadata["urlQueryParameters"] = query
    metadata.update({
        "workerId": run["worker_id"],
        "workerType": WORKER_TYPES.get(run["link_type"], run["link_type"]),
        "batchId": info.batch_id,
        "batchUuid": info.batch_id,
        "batchTitle": info.label,
        "groupId": None,
        "label": run["label"],
        "studyVersion": run["study_version"],
        "preview": run["preview"],
        "bonusPoints": number(points),
        "payoff": float(payoff(config, points)),
        "currency": config.currency,
        "componentResults": components,
    })
    return metadata


async def _files_of(conn: asyncpg.Connection, player: asyncpg.Record) -> list[asyncpg.Record]:
    if not player["file_count"]:
        return []
    return await conn.fetch("SELECT filename, size, uploaded_at FROM result_files "
                            "WHERE component_result_id = $1 ORDER BY filename", player["cr_id"])


def _metadata_head(info: BatchInfo) -> bytes:
    head = _json.encode({"studyId": info.study_id, "studyUuid": info.study_uuid,
                         "studyTitle": info.study_title})
    return b'{"apiVersion":"' + API_VERSION.encode() + b'","data":[' + head[:-1] + \
        b',"studyResults":['


_METADATA_TAIL = b"]}]}"


async def _jatos(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                 ) -> AsyncIterator[bytes]:
    archive = ZipStream()
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as metadata:
        metadata.write(_metadata_head(info))
        first = True
        async for run, players in _runs(conn, info.batch_id, with_data=True):
            components = []
            for player in players:
                base = _path(run, player)
                if player["data"] is not None:
                    yield archive.entry(f"{base}/data.txt", player["data"], player["cr_updated"])
                files = await _files_of(conn, player)
                for found in files:
                    yield archive.begin(f"{base}/files/{found['filename']}", found["uploaded_at"])
                    async for part in file_chunks(conn, player["cr_id"], found["filename"],
                                                  found["size"]):
                        yield archive.write(part)
                    yield archive.end()
                components.append(_component_metadata(info, run, player, files))
            metadata.write((b"" if first else b",") +
                           _json.encode(_study_metadata(info, run, players, components)))
            first = False
            step()
        metadata.write(_METADATA_TAIL)
        metadata.seek(0)
        yield archive.begin("metadata.json")
        while piece := metadata.read(SPOOL_BYTES):
            yield archive.write(piece)
        yield archive.end()
    for piece in archive.finish():
        yield piece


async def _metadata_json(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                         ) -> AsyncIterator[bytes]:
    yield _metadata_head(info)
    first = True
    async for run, players in _runs(conn, info.batch_id, with_data=False):
        components = [_component_metadata(info, run, p, await _files_of(conn, p))
                      for p in players]
        yield (b"" if first else b",") + _json.encode(
            _study_metadata(info, run, players, components))
        first = False
        step()
    yield _METADATA_TAIL


async def _data(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                ) -> AsyncIterator[bytes]:
    async for _, players in _runs(conn, info.batch_id, with_data=True):
        for player in players:
            if player["data"] is not None:
                yield player["data"] + b"\n"
        step()


# ---------------------------------------------------------------------------
# CSV


class _Csv:
    """csv.writer into a reusable buffer: ``row(values)`` answers the encoded line."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def row(self, values: list[Any] | tuple[Any, ...]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(values)
        return self._buffer.getvalue().encode("utf-8")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Decimal):
        return decimal_text(value)
    return _json.encode(value).decode()


async def _metadata_csv(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                        ) -> AsyncIterator[bytes]:
    out = _Csv()
    yield b"\xef\xbb\xbf" + out.row(METADATA_CSV_COLUMNS)   # BOM: Excel reads UTF-8
    async for run, players in _runs(conn, info.batch_id, with_data=False):
        state = run_state(run["end_state"], run["preview"])
        ended = run["ended_at"]
        head = [run["result_id"], run["run_id"], info.batch_id, info.study_id,
                run["study_version"], run["worker_id"],
                WORKER_TYPES.get(run["link_type"], run["link_type"]), run["link_type"],
                run["label"] or "", _cell(run["preview"]), state, _iso(run["created_at"]),
                _iso(ended),
                round((ended - run["created_at"]).total_seconds(), 3) if ended else "",
                run["end_message"] or "", run["url_query"] if _url_query(run) else ""]
        if not players:
            yield out.row(head + [""] * (len(METADATA_CSV_COLUMNS) - len(head)))
        for p in players:
            yield out.row([
                *head, p["cr_id"], p["pos"], p["component_id"],
                info.component_title(run["study_version"], p["component_id"]), p["round"],
                p["cr_state"], p["data_size"], p["file_count"], p["files_size"],
                decimal_text(p["bonus"]), _iso(p["purged_at"])])
        step()


@dataclass
class _Group:
    """The wide CSV's columns for one component and round."""

    component_id: str
    round: int
    fields: dict[str, None] = field(default_factory=dict)   # ordered set
    raw: bool = False          # some player's data is not a JSON object (or has too many keys)

    def columns(self) -> list[str]:
        prefix = f"{self.component_id}.{self.round}.player."
        return ([prefix + "payoff", prefix + "state"] + [prefix + f for f in self.fields] +
                ([prefix + "data"] if self.raw else []))


def _as_object(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


async def _wide_groups(conn: asyncpg.Connection, info: BatchInfo
                       ) -> dict[tuple[str, int], _Group]:
    """First pass: the columns. Components and rounds from the definitions of the
    versions the batch's runs use (newest first), then the player fields found in
    the data (only keys are kept, so memory is bounded by the columns)."""
    groups: dict[tuple[str, int], _Group] = {}
    for version in sorted(info.definitions, reverse=True):
        for component in info.definitions[version].components:
            for round_ in range(1, max(1, component.rounds) + 1):
                groups.setdefault((component.id, round_), _Group(component.id, round_))
    query = ("SELECT c.component_id, c.round, c.data FROM component_results c JOIN runs r "
             "ON r.id = c.run_id WHERE r.batch_id = $1 AND c.data IS NOT NULL")
    async for row in conn.cursor(query, info.batch_id, prefetch=DATA_PREFETCH):
        key = (row["component_id"], row["round"])
        group = groups.get(key) or groups.setdefault(key, _Group(*key))
        value = _as_object(row["data"])
        if value is None:
            group.raw = True
            continue
        for name in value:
            if name not in group.fields:
                if len(group.fields) >= MAX_WIDE_FIELDS:
                    group.raw = True
                    break
                group.fields[name] = None
    return groups


async def _wide_csv(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                    ) -> AsyncIterator[bytes]:
    groups = list((await _wide_groups(conn, info)).values())
    custom: dict[str, None] = {}
    for definition in info.definitions.values():
        custom.update(dict.fromkeys(definition.session_config.custom))
    participant = ["participant.id_in_session", "participant.code", "participant.label",
                   "participant.worker_id", "participant.link_type",
                   "participant.study_version", "participant.state", "participant.preview",
                   "participant.time_started_utc", "participant.time_ended_utc",
                   "participant.url_query", "participant.payoff",
                   "participant.payoff_plus_participation_fee", "session.code",
                   "session.label", "session.config.name", "session.config.participation_fee",
                   "session.config.real_world_currency_per_point", "session.config.currency"]
    header = participant + [f"session.config.{key}" for key in custom]
    for group in groups:
        header += group.columns()
    out = _Csv()
    yield b"\xef\xbb\xbf" + out.row(header)
    index = 0
    async for run, players in _runs(conn, info.batch_id, with_data=True):
        index += 1
        config = info.config(run["study_version"])
        points = _points(players)
        row: list[Any] = [
            index, run["run_id"], run["label"] or "", run["worker_id"], run["link_type"],
            run["study_version"], run_state(run["end_state"], run["preview"]),
            _cell(run["preview"]), _iso(run["created_at"]), _iso(run["ended_at"]),
            run["url_query"] if _url_query(run) else "", decimal_text(points),
            decimal_text(payoff(config, points)), info.batch_id, info.label, info.study_id,
            _cell(config.participation_fee), _cell(config.real_world_currency_per_point),
            config.currency]
        row += [_cell(config.custom.get(key)) for key in custom]
        by_key = {(p["component_id"], p["round"]): p for p in players}
        for group in groups:
            player = by_key.get((group.component_id, group.round))
            if player is None:
                row += [""] * len(group.columns())
                continue
            value = _as_object(player["data"])
            row += [decimal_text(player["bonus"]), player["cr_state"]]
            row += [_cell(value.get(name)) if value else "" for name in group.fields]
            if group.raw:
                complete = value is not None and all(name in group.fields for name in value)
                raw = player["data"]
                row.append("" if complete or raw is None else raw.decode("utf-8", "replace"))
        yield out.row(row)
        step()


# ---------------------------------------------------------------------------
# Payments


def _payment(info: BatchInfo, run: asyncpg.Record, players: list[asyncpg.Record]
             ) -> tuple[dict[str, Any], Decimal, str]:
    config = info.config(run["study_version"])
    points = _points(players)
    amount = payoff(config, points)
    return {
        "run_id": run["run_id"], "result_id": run["result_id"], "worker_id": run["worker_id"],
        "label": run["label"], "state": run_state(run["end_state"], run["preview"]),
        "bonus_points": points, "participation_fee": Decimal(str(config.participation_fee)),
        "payoff": amount, "currency": config.currency,
    }, amount, config.currency


async def _payments_csv(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                        ) -> AsyncIterator[bytes]:
    out = _Csv()
    yield b"\xef\xbb\xbf" + out.row(PAYMENT_COLUMNS)
    async for run, players in _runs(conn, info.batch_id, with_data=False):
        if not run["preview"]:
            payment, _, _ = _payment(info, run, players)
            yield out.row([_cell(payment[name]) for name in PAYMENT_COLUMNS])
        step()


async def _payments_json(conn: asyncpg.Connection, info: BatchInfo, step: Callable[[], None]
                         ) -> AsyncIterator[bytes]:
    yield (b'{"batch_id":' + _json.encode(info.batch_id) + b',"study_id":' +
           _json.encode(info.study_id) + b',"payments":[')
    totals: dict[str, list[Any]] = {}
    first = True
    async for run, players in _runs(conn, info.batch_id, with_data=False):
        if not run["preview"]:
            payment, amount, currency = _payment(info, run, players)
            for name in ("bonus_points", "participation_fee", "payoff"):
                payment[name] = number(payment[name])
            total = totals.setdefault(currency, [Decimal(0), 0])
            total[0] += amount
            total[1] += 1
            yield (b"" if first else b",") + _json.encode(payment)
            first = False
        step()
    yield b'],"totals":' + _json.encode([
        {"currency": currency, "payoff": number(amount), "participants": count}
        for currency, (amount, count) in totals.items()]) + b"}"


_PRODUCERS: dict[str, Callable[[asyncpg.Connection, BatchInfo, Callable[[], None]],
                               AsyncIterator[bytes]]] = {
    "jatos": _jatos,
    "data": _data,
    "metadata-json": _metadata_json,
    "metadata-csv": _metadata_csv,
    "wide-csv": _wide_csv,
    "payments": _payments_csv,
    "payments-json": _payments_json,
}
