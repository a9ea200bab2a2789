"""The experimenter's live view of a batch: a snapshot of runs, groups and the batch
session, editing the batch session (pushed to every participant), and a console
WebSocket that streams every event of the batch as it is committed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import msgspec
from litestar import Request, Response, Router, WebSocket, get, post, websocket
from litestar.di import Provide
from litestar.params import FromPath, JSONBody

from gateway.connection import Connection
from gateway.experimenter import (
    API_EXCEPTION_HANDLERS,
    ApiProblem,
    Me,
    auth_guard,
    authenticate,
    current_account,
    study_batch,
)
from gateway.hub import Hub
from gateway.view import BatchView
from session_store.commands import Patch
from session_store.events import BATCH_SESSION


class SessionEdit(msgspec.Struct, forbid_unknown_fields=True):
    """An experimenter's change to the batch session: RFC 6902 ops, and the version it
    was computed from (a compare-and-set) or none (applied in arrival order)."""

    ops: list[Any]
    version: int | None = None


class LiveFrame(msgspec.Struct, tag="live", tag_field="type"):
    batch: str
    pos: str
    snapshot: dict[str, Any]


def hub_of(request: Any) -> Hub:
    return request.app.state.hub


async def snapshot(hub: Hub, view: BatchView) -> dict[str, Any]:
    """Everything the console shows, as of the view's position."""
    state = view.state
    marks = await hub.redis.hgetall(hub.keys.last_seen(state.batch_id)) if state.runs else {}
    seen = {k.decode(): int(v) for k, v in marks.items()}
    now_ms = int(time.time() * 1000)
    return {
        "pos": state.pos,
        "label": state.label,
        "versions": state.versions,
        "batch_session": {"version": state.version(BATCH_SESSION),
                          "data": state.session(BATCH_SESSION)},
        "group_limits": msgspec.to_builtins(state.group_limits),
        "runs": [
            {"id": run_id, "state": run.state, "component": run.pos + 1 if run.pos >= 0 else 0,
             "components": run.components, "label": run.label, "worker": run.worker,
             "group": run.group, "link_type": run.link_type, "study_version": run.study_version,
             "last_seen_ms": abs(seen[run_id]) if run_id in seen else None,
             "connected": seen.get(run_id, -1) > 0 and run.is_active,
             "idle_s": round((now_ms - abs(seen[run_id])) / 1000, 1) if run_id in seen else None,
             "reason": run.reason, "message": run.message}
            for run_id, run in state.runs.items()
        ],
        "groups": [
            {"id": group_id, "state": group.state, "members": group.active,
             "history": group.history, "closed": group.closed, "messages": group.messages,
             "session_version": state.version(f"group_session:{group_id}"),
             "session": state.session(f"group_session:{group_id}")}
            for group_id, group in state.groups.items()
        ],
    }


async def live_view(request: Request, me: Any, study_id: str, batch_id: str) -> BatchView:
    batch = await study_batch(request, me, study_id, batch_id)
    view = await hub_of(request).open_view(batch_id)
    if view is None and batch.closed_at is not None:
        raise ApiProblem(410, "batch_closed", f"batch {batch_id} is closed; its timeline "
                         "stays replayable")
    if view is None:
        raise ApiProblem(404, "batch_not_found", f"batch {batch_id} is not open in the log")
    return view


@get("/studies/{study_id:str}/batches/{batch_id:str}/live", tags=["live"])
async def live_snapshot(request: Request, me: Me, study_id: FromPath[str],
                        batch_id: FromPath[str]) -> dict[str, Any]:
    """Runs (state, component, group, last seen, connected), groups and the batch session."""
    view = await live_view(request, me, study_id, batch_id)
    return await snapshot(hub_of(request), view)


@post("/studies/{study_id:str}/batches/{batch_id:str}/session", status_code=200, tags=["live"])
async def edit_batch_session(request: Request, me: Me, study_id: FromPath[str],
                             batch_id: FromPath[str], data: JSONBody[SessionEdit]
                             ) -> Response[Any]:
    """Change the batch session; the change reaches every participant at once. With
    ``version`` it applies only if nobody changed the session since (409 otherwise,
    with the current state to retry from)."""
    view = await live_view(request, me, study_id, batch_id)
    hub = hub_of(request)
    outcome = await hub.request(Patch(
        id=f"console-{uuid.uuid4().hex}", batch=batch_id, run=f"experimenter:{me.username}",
        gw=hub.gateway_id, scope=BATCH_SESSION, ops=data.ops, version=data.version))
    if outcome.ok:
        return Response({"version": outcome.version, "pos": outcome.pos})
    state = view.state
    status = 409 if outcome.code in ("version_mismatch", "batch_closed") else 400
    return Response({"code": outcome.code, "message": outcome.message,
                     "version": state.version(BATCH_SESSION),
                     "data": state.session(BATCH_SESSION)}, status_code=status)


@websocket("/ws/console/{batch_id:str}")
async def console_channel(socket: WebSocket, batch_id: FromPath[str]) -> None:
    """Every event of the batch as it commits (``events`` frames), after a ``live``
    snapshot. Authenticated like the API (bearer header, ``?token=``, or the console's
    session cookie)."""
    await socket.accept()
    try:
        account = await authenticate(socket)
        hub: Hub = socket.app.state.hub
        batch = await socket.app.state.pg.fetchrow(
            "SELECT study_id FROM batches WHERE id = $1", batch_id)
        if batch is None:
            raise ApiProblem(404, "batch_not_found", f"there is no batch {batch_id!r}")
        if batch["study_id"] is not None:
            from results_store import accounts
            if not await accounts.can_access(socket.app.state.pg, account, batch["study_id"]):
                raise ApiProblem(403, "forbidden", "you have no access to this batch")
        elif not account.is_admin:
            raise ApiProblem(403, "forbidden", "only administrators see bare batches")
        view = await hub.open_view(batch_id)
        if view is None:
            raise ApiProblem(404, "batch_not_found", f"batch {batch_id} is not open in the log")
    except ApiProblem as problem:
        await socket.send({"type": "websocket.send", "text": msgspec.json.encode(
            {"type": "error", "code": problem.code, "message": problem.message}).decode()})
        await socket.close(code=4403 if problem.status in (401, 403) else 4404)
        return

    async def send(frame: str) -> None:
        await socket.send({"type": "websocket.send", "text": frame})

    # A console that falls behind is closed (its page reconnects for a fresh snapshot).
    conn = Connection(conn_id=f"console-{uuid.uuid4().hex[:12]}", run="", view=view, scopes=set(),
                      send=send, cap_bytes=hub.settings.outbound_queue_bytes,
                      overflows_before_close=1, overflow_window_s=60.0,
                      max_unsent_answers=hub.settings.max_unsent_answers)
    conn.push(encode_frame_live(batch_id, view.state.pos, await snapshot(hub, view)))
    view.add_console(conn)
    sender = asyncio.create_task(conn.run_sender())
    receiver = asyncio.create_task(_drain(socket))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        view.remove_console(conn)
        receiver.cancel()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _drain(socket: Any) -> None:
    while (await socket.receive())["type"] == "websocket.receive":
        pass


def encode_frame_live(batch_id: str, pos: str, data: dict[str, Any]) -> str:
    return msgspec.json.encode(LiveFrame(batch=batch_id, pos=pos, snapshot=data)).decode()


live_routes = Router(
    path="/api",
    route_handlers=[live_snapshot, edit_batch_session],
    dependencies={"me": Provide(current_account)},
    guards=[auth_guard],
    exception_handlers=API_EXCEPTION_HANDLERS,
)

__all__ = ["console_channel", "live_routes", "snapshot"]
