"""The participant's run over HTTP: entry by link, component pages and assets,
jatos.js init data, study session, end, abort and heartbeats (docs/studies.md).

Run state lives in the batch's event log; every state change here is a command
to the session worker, answered on this gateway's reply stream.
"""

from __future__ import annotations

import html
import logging
import uuid
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from gateway.batches import group_limits, open_batch
from gateway.hub import Hub
from gateway.studycache import StudyCache
from gateway.tokens import ParticipantClaims, TokenError, TokenSigner
from results_store import catalog
from results_store import results as result_store
from results_store.definition import StudyDefinition
from session_store.commands import (
    AbortRun,
    Command,
    EndRun,
    Outcome,
    RetrieveData,
    StartComponent,
    StartRun,
    WriteStudySession,
)

log = logging.getLogger("cohort.gateway.participant")

CLIENT_BUILD = Path(__file__).resolve().parent.parent / "client_js" / "dist" / "jatos.js"


class EndBody(msgspec.Struct):
    successful: bool = True
    message: str = ""


class AbortBody(msgspec.Struct):
    message: str = ""


def page(status: int, title: str, message: str, code: str) -> Response[str]:
    """A plain page for a participant who cannot go on, with a code for support."""
    body = (
        "<!doctype html><meta charset=utf-8><meta name=viewport "
        "content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;"
        "padding:0 1rem;color:#1d2330'>"
        f"<h1 style='font-size:1.4rem'>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p>"
        f"<p style='color:#5b6475;font-size:.9rem'>Code: <code>{html.escape(code)}</code></p>"
    )
    return Response(body, status_code=status, media_type="text/html")


def api_error(status: int, code: str, message: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"code": code, "message": message, **extra}, status_code=status)


REFUSAL_PAGES = {
    "link_not_found": (404, "This link does not exist", "Please check the link you were given."),
    "link_used": (403, "This link has been used", "Each personal link can be used only once."),
    "batch_inactive": (403, "This study is not open", "It is not running at the moment."),
    "batch_closed": (410, "This study has ended", "It takes no more participants. Thank you!"),
    "batch_full": (403, "This study is full", "It has all the participants it needs. Thank you!"),
    "link_type_not_allowed": (403, "This link is not open", "This kind of link is switched off."),
    "study_not_found": (404, "This study does not exist", "Please check the link."),
    "already_participated": (403, "You have taken part already",
                             "This study can be done only once."),
    "label_required": (400, "Please give your label", "This link needs a participant label."),
}


def hub_of(request: Request) -> Hub:
    return request.app.state.hub


def studies(request: Request) -> StudyCache:
    return request.app.state.studies


def general_single_cookie(code: str) -> str:
    return f"cohort_gs_{code}"


def first_active(definition: StudyDefinition, after: int = -1) -> int | None:
    for index in range(after + 1, len(definition.components)):
        if definition.components[index].active:
            return index
    return None


def component_url(token: str, definition: StudyDefinition, index: int) -> str:
    """JATOS positions are 1-based; so are Cohort's component URLs."""
    return f"/r/{token}/c/{index + 1}/{definition.components[index].html_file}"


async def run_command(request: Request, command: Command) -> Outcome:
    return await hub_of(request).request(command)


def claims_of(request: Request, key: str) -> ParticipantClaims | None:
    signer: TokenSigner = request.app.state.signer
    try:
        return signer.verify(key)
    except TokenError:
        return None


async def open_live_batch(request: Request, batch_id: str) -> None:
    """Open a Postgres batch in the event log, with its group limits."""
    batch = await catalog.get_batch(request.app.state.pg, batch_id)
    if batch is not None and batch.closed_at is not None:
        return  # closed meanwhile: it never opens again (the run is refused by the log)
    await open_batch(hub_of(request), batch_id, batch.label if batch else "",
                     group_limits(batch) if batch else None)


async def record_end(request: Request, run_id: str, state: str, reason: str = "") -> None:
    """The durable side of a run's end: an abort erases its results, any end closes it
    for further writes."""
    pool = request.app.state.pg
    if state == "aborted":
        await result_store.purge_run(pool, run_id, end_state="aborted")
    elif state in ("finished", "failed"):
        await result_store.mark_run_ended(pool, run_id, state, reason)


def new_command_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


async def mark_seen(request: Request, claims: ParticipantClaims, force: bool = False) -> None:
    await hub_of(request).mark_seen(claims.batch, claims.run, force)


@get("/go/{code:str}", tags=["participants"])
async def enter(request: Request, code: FromPath[str]) -> Response[Any] | Redirect:
    """A study link: creates the run and sends the participant to its first component."""
    query = {k: v for k, v in request.query_params.items() if k != "label"}
    label = request.query_params.get("label") or None
    pool = request.app.state.pg
    try:
        entered = await catalog.enter(
            pool, code, query, label=label,
            browser_has_run=general_single_cookie(code) in request.cookies,
        )
    except catalog.EntryRefused as refused:
        status, title, message = REFUSAL_PAGES.get(
            refused.code, (403, "You cannot take part", refused.message))
        return page(status, title, message, refused.code)
    definition = await studies(request).definition(entered.study_id, entered.study_version)
    start = first_active(definition) if definition else None
    if definition is None or start is None:
        return page(404, "This study cannot start", "It has no active component.",
                    "study_not_found")
    start_run = StartRun(
        id="start", batch=entered.batch_id, run=entered.run_id, gw=hub_of(request).gateway_id,
        study=entered.study_id, study_version=entered.study_version, worker=entered.worker_id,
        label=entered.label or "", link_type=entered.link_type, preview=entered.preview,
        linear=definition.linear, reloadable=[c.reloadable for c in definition.components],
        active=[c.active for c in definition.components],
    )
    outcome = await run_command(request, start_run)
    if not outcome.ok and outcome.code == "batch_not_found":
        # The batch exists in Postgres but was never opened in the log: open it now.
        await open_live_batch(request, entered.batch_id)
        outcome = await run_command(request, start_run)
    if not outcome.ok and outcome.code == "batch_closed":
        # Closed between the entry and the start: the run ends before it began.
        await record_end(request, entered.run_id, "failed", "batch_closed")
        status, title, text = REFUSAL_PAGES["batch_closed"]
        return page(status, title, text, "batch_closed")
    if not outcome.ok:
        return page(503, "The study could not start", outcome.message, outcome.code)
    signer: TokenSigner = request.app.state.signer
    token = signer.issue(entered.run_id, entered.batch_id, entered.study_id,
                         entered.study_version)
    await mark_seen(request, ParticipantClaims(run=entered.run_id, batch=entered.batch_id,
                                               exp=0), force=True)
    response = Redirect(component_url(token, definition, start))
    if entered.link_type == "general_single":
        response.set_cookie(general_single_cookie(code), entered.run_id, max_age=10 * 365 * 86400,
                            httponly=True, samesite="lax")
    return response


@get("/r/{key:str}/c/{pos:int}/{path:path}", tags=["participants"])
async def component_file(request: Request, key: FromPath[str], pos: FromPath[int],
                         path: FromPath[str]) -> Response[Any]:
    """A component's page (starting it) or one of the study's assets."""
    claims = claims_of(request, key)
    if claims is None:
        return page(403, "This link is not valid", "It may have expired.", "forbidden")
    definition = await studies(request).definition(claims.study, claims.version)
    if definition is None or not 1 <= pos <= len(definition.components):
        return page(404, "Not found", "There is no such component.", "component_not_found")
    path = path.lstrip("/")
    component = definition.components[pos - 1]
    if path == component.html_file:
        outcome = await run_command(request, StartComponent(
            id=new_command_id("start"), batch=claims.batch, run=claims.run,
            gw=hub_of(request).gateway_id, pos=pos - 1))
        if not outcome.ok:
            if outcome.code == "run_ended":
                return page(403, "This study run has ended",
                            "You cannot go back to it. Thank you for taking part.", "run_ended")
            return page(409, "This page cannot be shown", outcome.message, outcome.code)
        if outcome.run_state == "failed":
            await record_end(request, claims.run, "failed", "reloaded")
            return page(409, "This page may not be reloaded",
                        "Reloading it ended the study, as its authors asked.", "reloaded")
        await mark_seen(request, claims)
    found = await studies(request).file(claims.study, claims.version, path)
    if found is None:
        if Path(path).name == "jatos.js" and CLIENT_BUILD.exists():
            # JATOS studies load jatos.js relative to their page.
            return Response(CLIENT_BUILD.read_bytes(), media_type="text/javascript")
        return page(404, "Not found", f"The study has no file {path}.", "file_not_found")
    content, media_type = found
    headers = {"Cache-Control": "no-store"} if path == component.html_file else {}
    return Response(content, media_type=media_type, headers=headers)


@get("/r/{key:str}/init", tags=["participants"])
async def init_data(request: Request, key: FromPath[str], pos: FromQuery[int]) -> Response[Any]:
    """Everything jatos.js needs when a component page loads (JATOS's init data)."""
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    definition = await studies(request).definition(claims.study, claims.version)
    if definition is None or not 1 <= pos <= len(definition.components):
        return api_error(404, "component_not_found", f"no component at position {pos}")
    hub = hub_of(request)
    outcome = await run_command(request, RetrieveData(
        id=new_command_id("init"), batch=claims.batch, run=claims.run, gw=hub.gateway_id,
        pos=pos - 1))
    if not outcome.ok:
        return api_error(409, outcome.code, outcome.message)
    study_session: Any = {}
    if outcome.study_session_version:
        raw = await hub.redis.hget(hub.keys.study_session(claims.batch, claims.run),
                                   str(outcome.study_session_version))
        study_session = msgspec.json.decode(raw) if raw else {}
    batch = await catalog.get_batch(request.app.state.pg, claims.batch)
    run = await catalog.get_run(request.app.state.pg, claims.run)
    component = definition.components[pos - 1]
    await mark_seen(request, claims, force=True)
    return Response({
        "studyResultId": claims.run,
        "workerId": run.worker_id if run else "",
        "batchId": claims.batch,
        "studyId": claims.study,
        "studyVersion": claims.version,
        "componentId": component.id,
        "componentPos": pos,
        "componentTitle": component.title,
        "studyTitle": definition.title,
        "studyJsonInput": definition.json_input,
        "componentJsonInput": component.json_input,
        "batchJsonInput": batch.json_input if batch else None,
        "studyProperties": {
            "uuid": definition.uuid, "title": definition.title,
            "description": definition.description, "linearStudy": definition.linear,
            "endRedirectUrl": definition.end_redirect_url, "groupStudy": definition.group_study,
            **definition.properties,
        },
        "componentProperties": {
            "id": component.id, "title": component.title, "htmlFilePath": component.html_file,
            "reloadable": component.reloadable, "active": component.active,
            "comments": component.comments,
        },
        "componentList": [
            {"position": i + 1, "id": c.id, "title": c.title, "htmlFilePath": c.html_file,
             "active": c.active, "reloadable": c.reloadable}
            for i, c in enumerate(definition.components)
        ],
        "studySessionData": study_session,
        "urlQueryParameters": run.url_query if run else {},
        "sessionConfig": msgspec.to_builtins(definition.session_config),
        "channelUrl": f"/ws/batch/{claims.batch}?token={key}",
        "runKey": key,
    })


@post("/r/{key:str}/study-session", status_code=200, tags=["participants"])
async def write_study_session(request: Request, key: FromPath[str]) -> Response[Any]:
    """Replace the run's study session with the JSON body (jatos.setStudySessionData)."""
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    raw = await request.body()
    if len(raw) > request.app.state.settings.max_session_bytes:
        return api_error(413, "state_too_large", "the study session is too large")
    try:
        data = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError as exc:
        return api_error(400, "bad_json", str(exc))
    outcome = await run_command(request, WriteStudySession(
        id=request.headers.get("x-cohort-command-id") or new_command_id("ss"),
        batch=claims.batch, run=claims.run, gw=hub_of(request).gateway_id, data=data))
    if not outcome.ok:
        return api_error(409, outcome.code, outcome.message)
    await mark_seen(request, claims)
    return Response({"version": outcome.version})


async def _finish(request: Request, key: str, command_for: Any) -> Response[Any]:
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    raw = await request.body()
    try:
        outcome = await run_command(request, command_for(claims, raw))
    except msgspec.DecodeError as exc:
        return api_error(400, "bad_json", str(exc))
    if not outcome.ok:
        return api_error(409, outcome.code, outcome.message)
    await record_end(request, claims.run, outcome.run_state)
    definition = await studies(request).definition(claims.study, claims.version)
    return Response({
        "state": outcome.run_state,
        "confirmation_code": outcome.confirmation_code,
        "redirect": definition.end_redirect_url if definition else "",
    })


@post("/r/{key:str}/end", status_code=200, tags=["participants"])
async def end_run(request: Request, key: FromPath[str]) -> Response[Any]:
    """jatos.endStudy(successful, message): finish the run; answers the confirmation code."""
    def command(claims: ParticipantClaims, raw: bytes) -> EndRun:
        body = msgspec.json.decode(raw, type=EndBody) if raw else EndBody()
        return EndRun(id=request.headers.get("x-cohort-command-id") or "end",
                      batch=claims.batch, run=claims.run, gw=hub_of(request).gateway_id,
                      successful=body.successful, message=body.message)
    return await _finish(request, key, command)


@post("/r/{key:str}/abort", status_code=200, tags=["participants"])
async def abort_run(request: Request, key: FromPath[str]) -> Response[Any]:
    """jatos.abortStudy(message): end the run and erase its study session."""
    def command(claims: ParticipantClaims, raw: bytes) -> AbortRun:
        body = msgspec.json.decode(raw, type=AbortBody) if raw else AbortBody()
        return AbortRun(id=request.headers.get("x-cohort-command-id") or "abort",
                        batch=claims.batch, run=claims.run, gw=hub_of(request).gateway_id,
                        message=body.message)
    return await _finish(request, key, command)


@post("/r/{key:str}/heartbeat", status_code=200, tags=["participants"])
async def heartbeat(request: Request, key: FromPath[str]) -> Response[Any]:
    """jatos.js heartbeats keep the run's last-seen time (a silent run fails)."""
    claims = claims_of(request, key)
    if claims is None:
        return api_error(403, "forbidden", "bad or expired run key")
    await mark_seen(request, claims, force=True)
    return Response({"status": "ok"})


participant_routes = [enter, component_file, init_data, write_study_session, end_run, abort_run,
                      heartbeat]
