"""The gateway's ASGI application: participant channels (gateway/channel.py) in front of
the litestar application (admin and experimenter API, console, demo, health, metrics)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, JSONBody
from litestar.response import File
from litestar.static_files import create_static_files_router
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.batches import group_limits, open_batch
from gateway.channel import ASGIApp, with_channels
from gateway.closing import make_close_route
from gateway.console import batch_guard, console_routes
from gateway.experimenter import ApiProblem, authenticate, experimenter_routes
from gateway.hub import Hub
from gateway.live_api import console_channel, live_routes
from gateway.participant import participant_routes
from gateway.replay import make_replay_routes, replay_of
from gateway.results import close_results, results_export_routes, results_routes
from gateway.studycache import StudyCache
from results_store.catalog import Batch
from services.settings import Settings
from session_store.commands import ChangeBatchSettings, StartRun
from session_store.connect import open_redis
from session_store.events import GroupLimits

log = logging.getLogger("cohort.gateway")

STATIC = Path(__file__).parent / "static"
CLIENT_JS = Path(__file__).resolve().parent.parent / "client_js"
DEMO_BATCH = "demo"
BATCH_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class NewBatch(msgspec.Struct, forbid_unknown_fields=True):
    id: str | None = None
    label: str = ""
    groups: GroupLimits = msgspec.field(default_factory=GroupLimits)


class BatchInfo(msgspec.Struct):
    id: str
    label: str
    versions: dict[str, int] = msgspec.field(default_factory=dict)
    closed: bool = False


class ParticipantTicket(msgspec.Struct):
    token: str
    run_id: str
    batch_id: str
    ws_url: str


class ApiError(msgspec.Struct):
    code: str
    message: str


def error(status: int, code: str, message: str) -> Response[ApiError]:
    return Response(ApiError(code, message), status_code=status)


def valid_batch_id(batch_id: str) -> bool:
    return 0 < len(batch_id) <= 64 and set(batch_id) <= BATCH_ID_CHARS


async def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Bare batches (without a study) are for administrators: the admin token, or an
    administrator's API token or console session."""
    try:
        account = await authenticate(connection)
    except ApiProblem as problem:
        raise NotAuthorizedException(problem.message) from None
    if not account.is_admin:
        raise PermissionDeniedException("only administrators may use bare batches")


def hub_of(request: Request | ASGIConnection) -> Hub:
    return request.app.state.hub


def ws_url(request: Request, batch_id: str, token: str) -> str:
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}/ws/batch/{batch_id}?token={token}"


@post("/api/batches", guards=[admin_guard], status_code=201, tags=["batches"])
async def create_batch(request: Request, data: JSONBody[NewBatch]) -> Response[Any]:
    """Open a new batch with an empty batch session."""
    batch_id = data.id or uuid.uuid4().hex[:16]
    if not valid_batch_id(batch_id):
        return error(400, "bad_batch_id", "a batch id is 1-64 letters, digits, '-', '_' or '.'")
    pool: asyncpg.Pool = request.app.state.pg
    inserted = await pool.fetchval(
        "INSERT INTO batches (id, label) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        batch_id, data.label)
    if inserted is None:
        return error(409, "batch_exists", f"batch {batch_id} exists already")
    outcome = await open_batch(hub_of(request), batch_id, data.label, data.groups)
    if not outcome.ok:
        return error(409, outcome.code, outcome.message)
    return Response(BatchInfo(batch_id, data.label, {"batch": outcome.version}), status_code=201)


@get("/api/batches/{batch_id:str}", guards=[admin_guard], tags=["batches"])
async def read_batch(request: Request, batch_id: FromPath[str]) -> Response[Any]:
    """A batch's label, the current version of each scope, and whether it is closed
    (a closed batch removed from Redis is read from the archive)."""
    state, _ = await hub_of(request).store.load_batch(batch_id)
    if not state.opened and valid_batch_id(batch_id):
        replay = replay_of(request)
        if await replay.exists(batch_id):
            state = await replay.state_at(batch_id)
    if not state.opened:
        return error(404, "batch_not_found", f"batch {batch_id} does not exist")
    return Response(BatchInfo(batch_id, state.label, state.versions, state.closed))


@post("/api/batches/{batch_id:str}/participants", guards=[admin_guard], status_code=201,
      tags=["batches"])
async def add_participant(request: Request, batch_id: FromPath[str]) -> Response[Any]:
    """Issue a participant token (a run) for a batch."""
    return await issue_ticket(request, batch_id)


async def issue_ticket(request: Request, batch_id: str) -> Response[Any]:
    view = await hub_of(request).open_view(batch_id) if valid_batch_id(batch_id) else None
    if view is None:
        return error(404, "batch_not_found", f"batch {batch_id} does not exist")
    run_id = uuid.uuid4().hex
    # Every participant is a run in the log (here one with a single free-form
    # component), so runs, groups and timeouts work the same for API-made ones.
    outcome = await hub_of(request).request(StartRun(
        id="start", batch=batch_id, run=run_id, gw=hub_of(request).gateway_id,
        link_type="api", reloadable=[True], active=[True]))
    if not outcome.ok:
        return error(410 if outcome.code == "batch_closed" else 503, outcome.code,
                     outcome.message)
    await hub_of(request).mark_seen(batch_id, run_id, force=True)
    token = request.app.state.signer.issue(run_id, batch_id)
    return Response(ParticipantTicket(token, run_id, batch_id, ws_url(request, batch_id, token)),
                    status_code=201)


@post("/demo/join", status_code=201, tags=["demo"])
async def demo_join(request: Request) -> Response[Any]:
    """A participant token for the demo batch (only with COHORT_DEMO=true)."""
    if not request.app.state.settings.demo:
        return error(404, "not_found", "the demo is off (COHORT_DEMO)")
    return await issue_ticket(request, DEMO_BATCH)


@get("/demo", include_in_schema=False)
async def demo_page(request: Request) -> Response[Any] | File:
    if not request.app.state.settings.demo:
        return error(404, "not_found", "the demo is off (COHORT_DEMO)")
    return File(STATIC / "demo.html", content_disposition_type="inline",
                media_type="text/html")


@get("/", include_in_schema=False)
async def index(request: Request) -> Response[str]:
    demo = '<p><a href="/demo">Open the live demo</a> in two tabs.</p>' if (
        request.app.state.settings.demo) else ""
    return Response(
        f"<!doctype html><title>Cohort</title><h1>Cohort gateway</h1>{demo}"
        '<p><a href="/console">Experimenter console</a> · '
        '<a href="/schema">API (OpenAPI)</a> · <a href="/metrics">metrics</a></p>',
        media_type="text/html")


@get("/livez", tags=["health"])
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["health"])
async def readyz(request: Request) -> Response[dict[str, str]]:
    """Ready when Redis and Postgres both answer."""
    checks = {}
    try:
        await request.app.state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc}"
    try:
        await request.app.state.pg.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"error: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return Response(checks, status_code=200 if ok else 503)


@get("/metrics", tags=["health"], include_in_schema=False)
async def prometheus_metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def log_exception(exc: Exception, scope: Any) -> None:
    """Unhandled errors reach our JSON log (litestar's own logging is off)."""
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return
    log.error("request failed", exc_info=exc, extra={"path": scope.get("path", "")})


def create_asgi(settings: Settings) -> ASGIApp:
    """What the server runs: participant channels (``/ws/batch/{id}``, docs/protocol.md)
    in front of the litestar application, which serves everything else."""
    return with_channels(create_app(settings))


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        from gateway.tokens import TokenSigner

        redis = await open_redis(settings.redis_url)
        pg = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
        hub = Hub(settings, redis)
        await hub.start()
        async def batch_opener(batch: Batch) -> None:
            """Batches made through the experimenter API are opened in the log at once."""
            await open_batch(hub, batch.id, batch.label, group_limits(batch))

        async def batch_updater(batch: Batch) -> None:
            await hub.request(ChangeBatchSettings(
                id=f"settings-{uuid.uuid4().hex}", batch=batch.id, run="admin",
                gw=hub.gateway_id, groups=group_limits(batch)))

        app.state.update(settings=settings, redis=redis, pg=pg, hub=hub,
                         signer=TokenSigner(settings.secret, settings.token_ttl_s),
                         studies=StudyCache(pg), batch_opener=batch_opener,
                         batch_updater=batch_updater)
        if settings.demo:
            await pg.execute("INSERT INTO batches (id, label) VALUES ($1, $2) "
                             "ON CONFLICT DO NOTHING", DEMO_BATCH, "Demo")
            closed = await pg.fetchval("SELECT closed_at IS NOT NULL FROM batches "
                                       "WHERE id = $1", DEMO_BATCH)
            outcome = await open_batch(hub, DEMO_BATCH, "Demo") if not closed else None
            if outcome is not None and not outcome.ok and outcome.code != "batch_exists":
                log.error("could not open the demo batch", extra={"code": outcome.code})
        log.info("gateway up", extra={"gateway": hub.gateway_id, "port": settings.port})
        try:
            yield
        finally:
            await close_results(app)
            await hub.stop()
            await pg.close()
            await redis.aclose()

    # /client/jatos.js is the classic-script build; /client/esm/ the ES modules.
    client_routes = [
        create_static_files_router(path="/client/esm", directories=[CLIENT_JS / "src"],
                                   include_in_schema=False, name="client-esm"),
        create_static_files_router(path="/client", directories=[CLIENT_JS / "dist"],
                                   include_in_schema=False, name="client"),
    ] if CLIENT_JS.exists() else []
    return Litestar(
        route_handlers=[create_batch, read_batch, add_participant, demo_join, demo_page, index,
                        livez, readyz, prometheus_metrics, *participant_routes,
                        *results_routes, experimenter_routes, results_export_routes,
                        live_routes, console_channel, console_routes,
                        *make_replay_routes(batch_guard), make_close_route(batch_guard),
                        *client_routes],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Cohort", version="0.1.0", path="/schema",
            components=Components(security_schemes={
                "BearerToken": SecurityScheme(type="http", scheme="bearer")})),
        debug=False,
        logging_config=None,  # structured logs come from services.logs
        after_exception=[log_exception],
    )

