"""The replay API: a batch's timeline, its state at any moment, and what changed.

    GET /api/batches/{id}/events     events, filtered and paged (JSON), or streamed
                                     as JSON Lines with ``Accept: application/x-ndjson``
    GET /api/batches/{id}/state      one scope's state at a position or time
    GET /api/batches/{id}/diff       JSON Patch of a scope between two moments
    GET /api/batches/{id}/timeline   the whole timeline as JSON Lines (streamed)

Positions are stream entry IDs (``1732230000000-0``); times are ISO 8601 or epoch
milliseconds. Events come from Postgres and Redis merged (results_store.replay).
Errors are ``{"code", "message"}`` with a 4xx status.

``replay_routes`` uses the admin-token guard; ``make_replay_routes(guard)`` takes any
litestar guard (experimenter accounts swap theirs in; the batch id is in
``connection.path_params["batch_id"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import Stream

from results_store.replay import (
    EventFilter,
    Replay,
    ReplayError,
    iso,
    key_of,
    parse_at,
    parse_time,
    valid_scope,
)
from session_store import positions
from session_store.keys import Keys

NDJSON = "application/x-ndjson"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
BATCH_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")

Guard = Callable[[ASGIConnection, BaseRouteHandler], Any]

_json = msgspec.json.Encoder()


async def admin_token_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The admin-token guard of gateway.app (imported late: gateway.app imports us)."""
    from gateway.app import admin_guard

    await admin_guard(connection, handler)


def error(status: int, code: str, message: str) -> Response[Any]:
    return Response({"code": code, "message": message}, status_code=status)


def replay_of(request: Request) -> Replay:
    state = request.app.state
    settings = state.settings
    return Replay(state.redis, state.pg, Keys(settings.key_prefix, settings.partitions))


def _valid_batch(batch_id: str) -> bool:
    return 0 < len(batch_id) <= 64 and set(batch_id) <= BATCH_ID_CHARS


def _list(request: Request, name: str) -> list[str]:
    """A parameter given several times and/or comma-separated."""
    return [v.strip() for raw in request.query_params.getall(name, [])
            for v in raw.split(",") if v.strip()]


def _position(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not positions.is_valid(value):
        raise ReplayError("bad_position", f"{name}: not a stream position: {value!r}")
    return value


def _time(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    return parse_time(value) if value else None


def _at(request: Request, name: str, required: bool = False) -> tuple[int, int] | None:
    value = request.query_params.get(name)
    if not value:
        if required:
            raise ReplayError("bad_request", f"{name} is required (a position or a time)")
        return None
    try:
        return parse_at(value)
    except ReplayError:
        raise
    except ValueError:
        raise ReplayError("bad_position", f"{name}: not a position or time: {value!r}") from None


def _scope(request: Request) -> str:
    scope = request.query_params.get("scope", "")
    if not valid_scope(scope):
        raise ReplayError("bad_scope", f"scope must be batch, batch_session, group:G, "
                          f"group_session:G, group_chat:G, lobby or run:R, not {scope!r}")
    return scope


def _filter(request: Request) -> EventFilter:
    scopes = _list(request, "scope")
    for scope in scopes:
        if not valid_scope(scope):
            raise ReplayError("bad_scope", f"unknown scope {scope!r}")
    return EventFilter.build(
        scopes=scopes, kinds=_list(request, "kind"),
        run=request.query_params.get("run", ""),
        after=_position(request, "after"), until=_position(request, "until"),
        from_ms=_time(request, "from"), to_ms=_time(request, "to"))


def _limit(request: Request, default: int | None) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ReplayError("bad_limit", f"limit is 1..{MAX_LIMIT}")
    return int(raw)


async def _known(replay: Replay, batch_id: str) -> Response[Any] | None:
    if not _valid_batch(batch_id) or not await replay.exists(batch_id):
        return error(404, "batch_not_found", f"batch {batch_id} does not exist")
    return None


def make_replay_routes(guard: Guard = admin_token_guard) -> list[HTTPRouteHandler]:
    """The replay route handlers, guarded by ``guard``."""
    guards = [guard]

    @get("/api/batches/{batch_id:str}/events", guards=guards, tags=["replay"],
         name="replay-events")
    async def events(request: Request, batch_id: FromPath[str]) -> Response[Any]:
        """Events of a batch in position order. Query: ``scope`` and ``kind`` (repeat or
        comma-separate), ``run`` (caused by, about, or in the scope of that run),
        ``after`` (exclusive) / ``until`` (inclusive) positions, ``from`` / ``to``
        times (inclusive), ``limit`` (default 1000, at most 10000). JSON:
        ``{"events": [{"pos", "time", "event"[, "study_session"]}], "next"}``; pass
        ``next`` as ``after`` for the next page (null: no more). With
        ``Accept: application/x-ndjson`` every matching event is streamed as JSON
        Lines (up to ``limit`` if given)."""
        streaming = NDJSON in request.headers.get("accept", "")
        try:
            flt = _filter(request)
            limit = _limit(request, None if streaming else DEFAULT_LIMIT)
        except ReplayError as exc:
            return error(400, exc.code, exc.message)
        replay = replay_of(request)
        if (missing := await _known(replay, batch_id)) is not None:
            return missing
        if streaming:
            return Stream(replay.export(batch_id, flt, limit), media_type=NDJSON)
        assert limit is not None
        page = await replay.page(batch_id, flt, limit)
        lines = await replay.render(batch_id, page.items)
        body = (b'{"events":[' + b",".join(line[:-1] for line in lines) + b'],"next":'
                + _json.encode(page.next) + b"}")
        return Response(body, media_type="application/json")

    @get("/api/batches/{batch_id:str}/state", guards=guards, tags=["replay"],
         name="replay-state")
    async def state(request: Request, batch_id: FromPath[str]) -> Response[Any]:
        """One scope's state after the last event at or before ``at`` (a position, or
        a time: ISO 8601 or epoch ms; default now): ``{"batch", "scope", "version",
        "data", "pos", "time"}``, ``pos`` being the last event folded in. Run scopes
        also carry ``study_session``: the contents of its last write (null if none
        or erased)."""
        try:
            scope = _scope(request)
            at = _at(request, "at")
        except ReplayError as exc:
            return error(400, exc.code, exc.message)
        replay = replay_of(request)
        if (missing := await _known(replay, batch_id)) is not None:
            return missing
        full, part = await replay.scope_state(batch_id, scope, at)
        body: dict[str, Any] = {"batch": batch_id, **part, "pos": full.pos,
                                "time": iso(key_of(full.pos)[0])}
        if scope.startswith("run:"):
            body["study_session"] = await replay.study_session_at(full, scope[4:])
        return Response(body)

    @get("/api/batches/{batch_id:str}/diff", guards=guards, tags=["replay"],
         name="replay-diff")
    async def diff(request: Request, batch_id: FromPath[str]) -> Response[Any]:
        """The RFC 6902 ops turning the scope's state at ``from`` into its state at
        ``to`` (positions or times; ``to`` defaults to now): ``{"scope", "from":
        {"pos", "version"}, "to": {...}, "ops"}``. The ops apply to ``data`` of the
        state endpoint."""
        try:
            scope = _scope(request)
            frm = _at(request, "from", required=True)
            to = _at(request, "to")
        except ReplayError as exc:
            return error(400, exc.code, exc.message)
        replay = replay_of(request)
        if (missing := await _known(replay, batch_id)) is not None:
            return missing
        return Response(await replay.diff(batch_id, scope, frm, to))

    @get("/api/batches/{batch_id:str}/timeline", guards=guards, tags=["replay"],
         name="replay-timeline")
    async def timeline(request: Request, batch_id: FromPath[str]) -> Response[Any]:
        """The whole timeline as JSON Lines (``{"pos", "time", "event"[,
        "study_session"]}`` per line), streamed, as a download."""
        replay = replay_of(request)
        if (missing := await _known(replay, batch_id)) is not None:
            return missing
        return Stream(replay.export(batch_id), media_type=NDJSON, headers={
            "content-disposition": f'attachment; filename="{batch_id}.jsonl"'})

    return [events, state, diff, timeline]


replay_routes = make_replay_routes()
