"""Closing a batch for good, by the experimenter API.

    POST /api/batches/{id}/close   body (optional): {"force": false}

200 ``{"batch", "closed_at", "pos", "already"}``: no participant enters again,
the log refuses every further command, participant channels are closed with 4410,
and the finalizer archives the whole timeline and then removes the batch from
Redis (replay keeps working, from Postgres). 409 ``runs_active`` while runs are
still going, unless ``force``, which ends them as failed (reason
``batch_closed``). Closing a closed batch answers 200 with ``already``.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from gateway.hub import Hub
from gateway.replay import Guard, error
from results_store.closing import Closed, CloseRefused, close_batch
from session_store.commands import CloseBatch, Outcome


class CloseRequest(msgspec.Struct, forbid_unknown_fields=True):
    force: bool = False


_request = msgspec.json.Decoder(CloseRequest)


async def close_through_hub(pool: asyncpg.Pool, hub: Hub, batch_id: str, force: bool,
                            by: str = "admin") -> Closed:
    """Close ``batch_id``, the command going through this gateway's hub; ``by`` is the
    run name the log records for it (the API's ``admin``, or an experimenter)."""
    async def send(force: bool) -> Outcome:
        return await hub.request(CloseBatch(
            id=f"close-{uuid.uuid4().hex}", batch=batch_id, run=by, gw=hub.gateway_id,
            force=force))

    return await close_batch(pool, batch_id, send, force)


def make_close_route(guard: Guard) -> HTTPRouteHandler:
    @post("/api/batches/{batch_id:str}/close", guards=[guard], status_code=200,
          tags=["batches"], name="close-batch")
    async def close(request: Request, batch_id: FromPath[str]) -> Response[Any]:
        """Close the batch for good (see the module text)."""
        body = await request.body()
        try:
            wanted = _request.decode(body) if body.strip() else CloseRequest()
        except msgspec.DecodeError as exc:
            return error(400, "bad_request", str(exc))
        try:
            closed = await close_through_hub(request.app.state.pg, request.app.state.hub,
                                             batch_id, wanted.force)
        except CloseRefused as refused:
            return error(refused.status, refused.code, refused.message)
        except TimeoutError:
            return error(503, "unavailable", "the session store did not answer in time: the "
                         "batch may still close (the finalizer then closes it in Postgres "
                         "too); ask again to find out")
        return Response(msgspec.to_builtins(closed))

    return close
