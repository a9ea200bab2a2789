"""The participant WebSocket: authenticate, attach to the batch, turn frames into commands.

Channels are served straight from the ASGI server (``with_channels``), not
through a framework route: every frame of a busy batch, and every open of a
join storm, passes here, and litestar's routing, parameter parsing and
per-message wrappers cost more than the channel's own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from gateway import metrics
from gateway.connection import CLOSE_BATCH_CLOSED, Connection
from gateway.hub import Hub
from gateway.messages import (
    ErrorFrame,
    FailFrame,
    FixGroupMsg,
    GroupMsgMsg,
    Incoming,
    JoinGroupMsg,
    LeaveGroupMsg,
    PatchMsg,
    PingMsg,
    PongFrame,
    ReassignGroupMsg,
    ResyncMsg,
    decode_message,
    encode_frame,
)
from gateway.ratelimit import TokenBucket
from gateway.tokens import TokenError, TokenSigner
from services.settings import Settings
from session_store.commands import (
    FixGroup,
    JoinGroup,
    LeaveGroup,
    Patch,
    ReassignGroup,
    SendGroupMessage,
)

GROUP_COMMANDS = {
    JoinGroupMsg: JoinGroup, LeaveGroupMsg: LeaveGroup, ReassignGroupMsg: ReassignGroup,
    FixGroupMsg: FixGroup,
}

log = logging.getLogger("cohort.gateway.channel")

# Slashes doubled or trailing are forgiven, as litestar's router did.
CHANNEL_PATH = re.compile(r"/+ws/+batch/+([^/]+)/*")
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_INTERNAL_ERROR = 1011
PONG = encode_frame(PongFrame())

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ChannelSocket:
    """The few WebSocket operations a channel needs, on the server's ASGI calls."""

    __slots__ = ("query", "receive", "send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.query = query_params(scope.get("query_string", b""))
        self.receive = receive
        self.send = send

    async def accept(self) -> bool:
        """Accept the handshake; False if the client went away before it (uvicorn
        raises ``ClientDisconnected``, an ``OSError``, from the send instead)."""
        if (await self.receive())["type"] != "websocket.connect":
            return False
        await self.send({"type": "websocket.accept"})
        return True

    async def close(self, code: int, reason: str = "") -> None:
        await self.send({"type": "websocket.close", "code": code, "reason": reason})


def query_params(raw: bytes) -> dict[str, str]:
    """A query string's parameters; the first of repeated keys counts."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        pairs = parse_qsl(text, keep_blank_values=True)
    else:  # the usual channel URL (a URL-safe token, a position): nothing to unquote
        pairs = [(key, value) for key, _, value in
                 (part.partition("=") for part in text.split("&") if part)]
    query: dict[str, str] = {}
    for key, value in pairs:
        query.setdefault(key, value)
    return query


def with_channels(app: Any) -> ASGIApp:
    """``app`` (the litestar application) with ``/ws/batch/{id}`` served in front of it.
    The channel reads the application's state (settings, hub, signer), which its
    lifespan fills in."""
    state = app.state

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "websocket":
            path: str = scope.get("path", "")
            root = scope.get("root_path", "")
            match = CHANNEL_PATH.fullmatch(path[len(root):] if root and
                                           path.startswith(root) else path)
        if match is None:
            await app(scope, receive, send)
            return
        socket = ChannelSocket(scope, receive, send)
        try:
            await serve_channel(socket, state, match[1])
        except OSError as exc:  # the client went away mid-write
            log.info("channel lost", extra={"detail": repr(exc)})
        except Exception:
            log.exception("channel failed", extra={"path": path})
            with contextlib.suppress(Exception):
                await socket.close(CLOSE_INTERNAL_ERROR, "internal_error")

    return asgi


async def refuse(socket: ChannelSocket, code: str, message: str, close_code: int) -> None:
    metrics.BAD_INPUT.labels(code).inc()
    log.info("channel refused", extra={"code": code, "detail": message})
    await socket.send({"type": "websocket.send", "text": encode_frame(ErrorFrame(code, message))})
    await socket.close(close_code, code)


async def serve_channel(socket: ChannelSocket, app_state: Any, batch_id: str) -> None:
    settings: Settings = app_state.settings
    hub: Hub = app_state.hub
    signer: TokenSigner = app_state.signer
    if not await socket.accept():
        return
    try:
        claims = signer.verify(socket.query.get("token", ""))
    except TokenError as exc:
        await refuse(socket, "forbidden", str(exc), CLOSE_FORBIDDEN)
        return
    if claims.batch != batch_id:
        await refuse(socket, "forbidden", "this token is for another batch", CLOSE_FORBIDDEN)
        return
    view = await hub.open_view(batch_id)
    if view is None:
        await refuse(socket, "batch_not_found", f"batch {batch_id} does not exist",
                     CLOSE_NOT_FOUND)
        return

    if view.state.closed:
        await refuse(socket, "batch_closed", f"batch {batch_id} is closed", CLOSE_BATCH_CLOSED)
        return

    raw_send = socket.send

    async def send(frame: str) -> None:
        try:
            await raw_send({"type": "websocket.send", "text": frame})
        except RuntimeError as exc:
            # The server refuses a send after a close with a RuntimeError (uvicorn's
            # protocol after closing the socket itself on a keepalive timeout or a bad
            # frame; ours after the channel's own close): the client is gone, no bug.
            raise ConnectionResetError(str(exc)) from exc

    conn = Connection(
        conn_id=os.urandom(8).hex(), run=claims.run, view=view, scopes=set(),
        send=send, cap_bytes=settings.outbound_queue_bytes,
        overflows_before_close=settings.overflows_before_close,
        overflow_window_s=settings.overflow_window_s,
        max_unsent_answers=settings.max_unsent_answers,
    )
    hub.attach(conn, socket.query.get("since"))
    sender = receiver = None
    try:
        hub.note_seen(batch_id, claims.run, force=True)  # written with the storm's others
        # The first frame (the state) leaves in this step: in the sender task it would
        # wait a loop turn, behind every other channel of a join storm. Only one: the
        # first write of a new connection never waits, a second one could (a client
        # that reads nothing would then hold the channel before its receiver runs).
        await conn.send_queued(most=1)
        sender = asyncio.create_task(conn.run_sender())
        receiver = asyncio.create_task(_receive(socket, conn, hub, settings, batch_id))
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            # A client that went away is no failure; anything else is a bug to see,
            # and the client is told to reconnect.
            if failure is not None and not isinstance(failure, OSError):
                log.error("channel failed", exc_info=failure, extra={"run": conn.run})
                if conn.close_code is None:
                    conn.close_code, conn.close_reason = CLOSE_INTERNAL_ERROR, "internal_error"
    finally:
        hub.detach(conn)
        for task in (sender, receiver):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if conn.close_code is not None:
            log.info("closing a connection", extra={"run": conn.run,
                                                    "reason": conn.close_reason})
            with contextlib.suppress(Exception):
                await socket.close(conn.close_code, conn.close_reason)


async def _receive(socket: ChannelSocket, conn: Connection, hub: Hub, settings: Settings,
                   batch_id: str) -> None:
    limit = settings.max_message_bytes
    bucket = TokenBucket(settings.max_commands_per_s)
    throttled = False  # logged once per channel
    while True:
        if not conn.may_read:
            metrics.READ_PAUSES.inc()
            await conn.answers_written()
        message = await socket.receive()
        if message["type"] != "websocket.receive":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        msg = _parse(data, limit)
        if isinstance(msg, PingMsg):
            conn.push(PONG, essential=True)
            hub.note_seen(batch_id, conn.run)
            continue
        # Everything else counts against the channel's rate (bad input too: each
        # costs an error frame and a log line). Past it, the next message waits and
        # the rest behind it in TCP: delayed, never refused or reordered.
        if not bucket.take():
            await _throttle(bucket, conn, first=not throttled)
            throttled = True
        if isinstance(msg, tuple):
            _error(conn, *msg)
            continue
        origin = {"batch": batch_id, "run": conn.run, "gw": hub.gateway_id, "conn": conn.id}
        if isinstance(msg, PatchMsg):
            if msg.scope not in conn.scopes or msg.scope.startswith(("group:", "group_chat:")):
                conn.push(encode_frame(FailFrame(
                    id=msg.id, code="bad_scope",
                    message=f"scope {msg.scope!r} is not writable on this channel")),
                    essential=True)
                metrics.BAD_INPUT.labels("bad_scope").inc()
                continue
            hub.submit(Patch(id=msg.id, scope=msg.scope, ops=msg.ops, version=msg.version,
                             **origin))
        elif isinstance(msg, GroupMsgMsg):
            hub.submit(SendGroupMessage(id=msg.id, msg=msg.msg, to=msg.to, **origin))
        elif type(msg) in GROUP_COMMANDS:
            hub.submit(GROUP_COMMANDS[type(msg)](id=msg.id, **origin))
        elif isinstance(msg, ResyncMsg):
            conn.request_resync()


def _parse(data: str | bytes, limit: int) -> Incoming | tuple[str, str]:
    """The client's message, or the error code and text to answer it with."""
    if len(data) > limit:
        return "too_large", f"a message may be at most {limit} bytes"
    try:
        return decode_message(data)
    except msgspec.ValidationError as exc:
        return "bad_message", str(exc)
    except msgspec.DecodeError as exc:
        return "bad_json", str(exc)


async def _throttle(bucket: TokenBucket, conn: Connection, first: bool) -> None:
    """Sleep until the bucket has a token, and take it."""
    metrics.THROTTLED.inc()
    if first:
        log.info("channel throttled", extra={"run": conn.run, "rate": bucket.rate})
    delay = bucket.wait()
    while delay > 0.0:  # a timer to the next token, not a poll
        await asyncio.sleep(delay)
        delay = bucket.wait()
    bucket.take()


def _error(conn: Connection, code: str, message: str) -> None:
    metrics.BAD_INPUT.labels(code).inc()
    log.info("bad client message", extra={"code": code, "run": conn.run, "detail": message})
    conn.push(encode_frame(ErrorFrame(code, message)), essential=True)
