"""Result data, files, logs, bonuses, payoffs and exports over HTTP (docs/results.md).

``results_routes``: the participant's side, under the run key like the other
participant URLs (``/r/<run key>/...``); positions are 1-based as in the component
URLs; ``round`` defaults to 1. Every write may carry ``X-Cohort-Command-Id``: a
retried request with the same id is stored once and answers what the first did
(with ``X-Cohort-Replayed: true``). Every "stored" answer comes after the
Postgres COMMIT.

``results_export_routes``: the experimenter's side, a Router at ``/api`` with the
experimenter API's authentication (gateway/experimenter.py): exports, payments,
one run's results, deleting them, and setting bonuses.

The app must hold ``app.state.pg`` and ``app.state.settings`` (and for the
participant side ``app.state.signer``; ``app.state.studies`` is used when there).
The result writer (the batcher) is made on first use and kept in
``app.state.results_writer``; ``close_results(app)`` drains it at shutdown (or add
``results_lifespan`` after the app's own lifespan manager).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, Router, delete, get, post, put
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream

from gateway.experimenter import (
    API_EXCEPTION_HANDLERS,
    ApiError,
    ApiProblem,
    Me,
    auth_guard,
    current_account,
    study_batch,
)
from gateway.participant import api_error, claims_of
from gateway.tokens import ParticipantClaims
from results_store import exports, results
from results_store.definition import StudyDefinition
from results_store.exports import ExportError
from results_store.results import Answer, Quotas, ResultError, ResultWriter
from results_store.studies import load_definition

log = logging.getLogger("cohort.gateway.results")

# Hard cap on any body here; the quotas (settings) are checked before storing.
MAX_BODY_BYTES = 1024 * 1024 * 1024
# A body over its limit is still read (and dropped) up to this much, so the client
# gets the 413 rather than a reset connection; past it the answer comes at once.
DRAIN_BYTES = 64 * 1024 * 1024
MULTIPART_SLACK = 64 * 1024
SMALL_BODY_BYTES = 64 * 1024
COMMAND_HEADER = "x-cohort-command-id"


# ---------------------------------------------------------------------------
# Helpers


def quotas_of(app: Litestar) -> Quotas:
    return Quotas.from_settings(app.state.settings)


def result_writer(app: Litestar) -> ResultWriter:
    """This app's result writer, made on first use."""
    writer = app.state.get("results_writer")
    if writer is None:
        settings = app.state.settings
        writer = ResultWriter(app.state.pg, quotas_of(app),
                              max_batch=int(getattr(settings, "result_batch_rows", 500)),
                              writers=int(getattr(settings, "result_writers", 2)))
        app.state.results_writer = writer
    return writer


async def close_results(app: Litestar) -> None:
    """Write what is queued and stop the writer (call at shutdown, before the pool closes)."""
    writer = app.state.get("results_writer")
    if writer is not None:
        await writer.close()
        app.state.results_writer = None


@asynccontextmanager
async def results_lifespan(app: Litestar) -> AsyncIterator[None]:
    """A lifespan manager placed after the one that opens ``app.state.pg``: on the way
    out it drains the result writer before that pool closes."""
    try:
        yield
    finally:
        await close_results(app)


async def _definition(request: Request, study: str, version: int) -> StudyDefinition | None:
    cache = request.app.state.get("studies")
    if cache is not None:
        return await cache.definition(study, version)
    return await load_definition(request.app.state.pg, study, version)


def _problem(exc: ResultError | ExportError) -> Response[dict[str, Any]]:
    status = exc.status if isinstance(exc, ResultError) else (
        404 if exc.code.endswith("_not_found") else 400)
    return api_error(status, exc.code, exc.message)


def _answer(answer: Answer) -> Response[dict[str, Any]]:
    headers = {"X-Cohort-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, status_code=200, headers=headers)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (read and dropped up to
    DRAIN_BYTES so the client sees the answer)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit and int(length) > DRAIN_BYTES:
        return None
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            chunks.clear()
            if total > DRAIN_BYTES:
                return None
            continue
        chunks.append(chunk)
    return None if total > limit else b"".join(chunks)


@dataclass(frozen=True)
class _Player:
    claims: ParticipantClaims
    definition: StudyDefinition
    component_id: str


async def _player(request: Request, key: str, pos: int, round_: int) -> _Player:
    claims = claims_of(request, key)
    if claims is None:
        raise ResultError(403, "forbidden", "bad or expired run key")
    definition = await _definition(request, claims.study, claims.version) if claims.study \
        else None
    if definition is None:
        raise ResultError(404, "study_not_found", "this run has no study to store results for")
    component = results.component_at(definition, pos, round_)
    return _Player(claims, definition, component.id)


def _quota_body(limit: int, what: str) -> ResultError:
    return results.quota_exceeded(f"{what} may have at most {limit} bytes")


# ---------------------------------------------------------------------------
# Participant routes


async def _write_data(request: Request, key: str, pos: int, round_: int, append: bool
                      ) -> Response[Any]:
    try:
        player = await _player(request, key, pos, round_)
        quotas = quotas_of(request.app)
        body = await read_body(request, quotas.per_component)
        if body is None:
            raise _quota_body(quotas.per_component, "the result data of one component")
        answer = await result_writer(request.app).write(
            player.claims.run, pos, round_, player.component_id, body, append=append,
            command_id=request.headers.get(COMMAND_HEADER))
    except ResultError as exc:
        return _problem(exc)
    return _answer(answer)


@post("/r/{key:str}/result-data", status_code=200, tags=["results"],
      request_max_body_size=MAX_BODY_BYTES)
async def submit_result_data(request: Request, key: FromPath[str], pos: FromQuery[int],
                             round: FromQuery[int] = 1) -> Response[Any]:
    """jatos.submitResultData: replace the player's result data with the body."""
    return await _write_data(request, key, pos, round, append=False)


@post("/r/{key:str}/result-data/append", status_code=200, tags=["results"],
      request_max_body_size=MAX_BODY_BYTES)
async def append_result_data(request: Request, key: FromPath[str], pos: FromQuery[int],
                             round: FromQuery[int] = 1) -> Response[Any]:
    """jatos.appendResultData: append the body to the player's result data. Send
    ``X-Cohort-Command-Id`` so that a retry is appended once."""
    return await _write_data(request, key, pos, round, append=True)


def _multipart_file(body: bytes, content_type: str) -> tuple[str | None, str, bytes]:
    """The first file part of a multipart/form-data body: (filename, media type, bytes)."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise ResultError(400, "bad_upload", "multipart body without a boundary")
    found: tuple[str | None, str, bytes] | None = None
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n")
        end = part.find(b"\r\n\r\n")
        if end < 0:
            continue
        headers = part[:end].decode("utf-8", "replace").split("\r\n")
        content = part[end + 4:].removesuffix(b"\r\n")
        filename: str | None = None
        media_type = ""
        for header in headers:
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-disposition":
                for item in value.split(";")[1:]:
                    k, _, v = item.strip().partition("=")
                    if k.lower() == "filename":
                        filename = v.strip().strip('"')
            elif name.strip().lower() == "content-type":
                media_type = value.strip()
        if filename is not None:
            return filename, media_type, content
        if found is None:
            found = (None, media_type, content)
    if found is None:
        raise ResultError(400, "bad_upload", "the multipart body has no file")
    return found


@post("/r/{key:str}/files/{filename:str}", status_code=200, tags=["results"],
      request_max_body_size=MAX_BODY_BYTES)
async def upload_result_file(request: Request, key: FromPath[str], filename: FromPath[str],
                             pos: FromQuery[int], round: FromQuery[int] = 1) -> Response[Any]:
    """jatos.uploadResultFile: store a file of the player (multipart/form-data with one
    file, or the raw body). The same name again replaces the file."""
    try:
        player = await _player(request, key, pos, round)
        quotas = quotas_of(request.app)
        content_type = request.headers.get("content-type", "")
        multipart = content_type.lower().startswith("multipart/form-data")
        body = await read_body(request, quotas.file + (MULTIPART_SLACK if multipart else 0))
        if body is None:
            raise _quota_body(quotas.file, "a result file")
        media_type = content_type.split(";")[0].strip()
        if multipart:
            _, media_type, body = _multipart_file(body, content_type)
        answer = await results.store_file(
            request.app.state.pg, quotas, player.claims.run, pos, round, player.component_id,
            filename, body, media_type if media_type != "application/octet-stream" else "",
            command_id=request.headers.get(COMMAND_HEADER))
    except ResultError as exc:
        return _problem(exc)
    return _answer(answer)


def _attachment(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


@get("/r/{key:str}/files/{filename:str}", tags=["results"])
async def download_result_file(request: Request, key: FromPath[str], filename: FromPath[str],
                               pos: FromQuery[int | None] = None,
                               round: FromQuery[int | None] = None) -> Response[Any] | Stream:
    """jatos.downloadResultFile: a file of this run (of the player at ``pos`` and
    ``round`` if given, else the one uploaded last under that name)."""
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    try:
        name = results.check_filename(filename)
    except ResultError as exc:
        return _problem(exc)
    found = await results.read_file(request.app.state.pg, claims.run, name, pos, round)
    if found is None:
        return api_error(404, "file_not_found", f"this run has no file {name!r}")
    info, chunks = found
    return Stream(chunks, media_type=info.media_type, headers={
        "Content-Disposition": _attachment(info.filename), "Cache-Control": "no-store"})


@post("/r/{key:str}/log", status_code=200, tags=["results"],
      request_max_body_size=MAX_BODY_BYTES)
async def write_log(request: Request, key: FromPath[str], pos: FromQuery[int | None] = None
                    ) -> Response[Any]:
    """jatos.log: keep a line with the run (text body, or JSON: a string or
    ``{"message": ...}``)."""
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    quotas = quotas_of(request.app)
    try:
        body = await read_body(request, quotas.log_per_run)
        if body is None:
            raise _quota_body(quotas.log_per_run, "the log of one run")
        line = body.decode("utf-8", "replace")
        if request.headers.get("content-type", "").lower().startswith("application/json"):
            try:
                value = msgspec.json.decode(body)
            except msgspec.DecodeError:
                value = line
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                value = value["message"]
            line = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        answer = await results.append_log(request.app.state.pg, quotas, claims.run, line, pos,
                                          command_id=request.headers.get(COMMAND_HEADER))
    except ResultError as exc:
        return _problem(exc)
    return _answer(answer)


def _bonus_limit(definition_custom: dict[str, Any]) -> Any:
    limit = definition_custom.get("max_bonus_points")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit >= 0:
        return results.parse_points(limit)
    return results.MAX_BONUS_POINTS


@post("/r/{key:str}/bonus", status_code=200, tags=["results"])
async def set_bonus(request: Request, key: FromPath[str], pos: FromQuery[int],
                    round: FromQuery[int] = 1) -> Response[Any]:
    """The player's bonus in points (oTree ``player.payoff``), set by the study page:
    ``{"points": 12.5}`` (``null`` clears it). Replaces, so a retry is harmless. Off
    when the study's session config has ``participant_bonus = false``; at most
    ``max_bonus_points`` (session config) when given."""
    try:
        player = await _player(request, key, pos, round)
        custom = player.definition.session_config.custom
        if custom.get("participant_bonus") is False:
            raise ResultError(403, "bonus_not_allowed", "this study's bonuses are set by the "
                              "experimenter only")
        body = await read_body(request, SMALL_BODY_BYTES)
        if body is None:
            raise ResultError(413, "too_large", "the body is too large")
        try:
            value = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError as exc:
            raise ResultError(400, "bad_json", str(exc)) from None
        if not isinstance(value, dict) or "points" not in value:
            raise ResultError(400, "bad_bonus", 'the body is {"points": <number or null>}')
        points = results.parse_points(value["points"], _bonus_limit(custom))
        answer = await results.set_bonus(
            request.app.state.pg, player.claims.run, pos, round, player.component_id, points,
            by="participant", command_id=request.headers.get(COMMAND_HEADER))
    except ResultError as exc:
        return _problem(exc)
    return _answer(answer)


@get("/r/{key:str}/payoff", tags=["results"])
async def get_payoff(request: Request, key: FromPath[str]) -> Response[Any]:
    """The participant's payoff so far: participation fee + bonus points x currency
    per point (the run's study version's session config), and each player's bonus."""
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    try:
        definition = await _definition(request, claims.study, claims.version) \
            if claims.study else None
        found = await results.run_payoff(request.app.state.pg, claims.run, definition)
    except ResultError as exc:
        return _problem(exc)
    return Response(found)


results_routes = [submit_result_data, append_result_data, upload_result_file,
                  download_result_file, write_log, set_bonus, get_payoff]


# ---------------------------------------------------------------------------
# Experimenter routes (mounted at /api)


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pg


def _result_problem(_: Request, exc: ResultError) -> Response[ApiError]:
    return Response(ApiError(exc.code, exc.message), status_code=exc.status)


def _export_problem(_: Request, exc: ExportError) -> Response[ApiError]:
    return Response(ApiError(exc.code, exc.message),
                    status_code=404 if exc.code.endswith("_not_found") else 400)


BATCH = "/studies/{study_id:str}/batches/{batch_id:str}"
RUN = BATCH + "/runs/{run_id:str}"


def _stream(request: Request, batch_id: str, fmt: str) -> Stream:
    exports.check_format(fmt)
    media_type, _ = exports.FORMATS[fmt]
    return Stream(exports.export_batch(_pool(request), batch_id, fmt), media_type=media_type,
                  headers={"Content-Disposition":
                           f'attachment; filename="{exports.export_filename(batch_id, fmt)}"',
                           "Cache-Control": "no-store"})


@get(BATCH + "/export", tags=["results"])
async def export_results(request: Request, me: Me, study_id: FromPath[str],
                         batch_id: FromPath[str], format: FromQuery[str] = "jatos") -> Stream:
    """The batch's results, streamed. ``format``: ``jatos`` (JATOS results archive,
    .zip), ``data`` (result data only, one line per player), ``metadata-json``,
    ``metadata-csv``, ``wide-csv`` (oTree wide format), ``payments`` (CSV) or
    ``payments-json``."""
    await study_batch(request, me, study_id, batch_id)
    return _stream(request, batch_id, format)


@get(BATCH + "/payments", tags=["results"])
async def payments(request: Request, me: Me, study_id: FromPath[str], batch_id: FromPath[str],
                   format: FromQuery[str] = "json") -> Stream:
    """The payments report: per participant (no preview runs) run id, worker id, label,
    state, bonus points, participation fee, payoff and currency; ``format=csv`` for CSV."""
    await study_batch(request, me, study_id, batch_id)
    if format not in ("json", "csv"):
        raise ApiProblem(400, "bad_format", "format is json or csv")
    return _stream(request, batch_id, "payments-json" if format == "json" else "payments")


async def _batch_run(request: Request, me: Any, study_id: str, batch_id: str, run_id: str
                     ) -> asyncpg.Record:
    await study_batch(request, me, study_id, batch_id)
    run = await _pool(request).fetchrow("SELECT id, batch_id, study_id, study_version FROM runs "
                                        "WHERE id = $1", run_id)
    if run is None or run["batch_id"] != batch_id:
        raise ApiProblem(404, "run_not_found", f"batch {batch_id!r} has no run {run_id!r}")
    return run


@get(RUN + "/results", tags=["results"])
async def run_results(request: Request, me: Me, study_id: FromPath[str],
                      batch_id: FromPath[str], run_id: FromPath[str]) -> results.RunResults:
    """One run's players (data, files, bonus) and its log."""
    await _batch_run(request, me, study_id, batch_id, run_id)
    found = await results.get_run_results(_pool(request), run_id)
    if found is None:
        raise ApiProblem(404, "run_not_found", f"there is no run {run_id!r}")
    return found


@delete(RUN + "/results", status_code=200, tags=["results"])
async def delete_run_results(request: Request, me: Me, study_id: FromPath[str],
                             batch_id: FromPath[str], run_id: FromPath[str]) -> results.Purged:
    """Erase a run's result data, files and log (its metadata and bonuses stay)."""
    await _batch_run(request, me, study_id, batch_id, run_id)
    purged = await results.purge_run(_pool(request), run_id)
    log.info("run results deleted", extra={"run": run_id, "by": me.username})
    return purged


class NewBonus(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pos: int
    round: int = 1
    points: float | int | str | None = None


@put(RUN + "/bonus", tags=["results"])
async def set_run_bonus(request: Request, me: Me, study_id: FromPath[str],
                        batch_id: FromPath[str], run_id: FromPath[str],
                        data: JSONBody[NewBonus]) -> dict[str, Any]:
    """Set (or with ``null`` clear) a player's bonus in points, also after the run ended;
    it replaces what the study page set."""
    run = await _batch_run(request, me, study_id, batch_id, run_id)
    definition = await load_definition(_pool(request), run["study_id"], run["study_version"])
    if definition is None:
        raise ApiProblem(404, "study_not_found", "the run's study version is gone")
    component = results.component_at(definition, data.pos, data.round)
    points = results.parse_points(data.points)
    answer = await results.set_bonus(_pool(request), run_id, data.pos, data.round, component.id,
                                     points, by="experimenter")
    return answer.body


results_export_routes = Router(
    path="/api",
    route_handlers=[export_results, payments, run_results, delete_run_results, set_run_bonus],
    dependencies={"me": Provide(current_account)},
    guards=[auth_guard],
    exception_handlers={
        **API_EXCEPTION_HANDLERS,
        ResultError: _result_problem,
        ExportError: _export_problem,
    },
    security=[{"BearerToken": []}],
)
