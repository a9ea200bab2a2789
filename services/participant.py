"""A participant speaking the wire protocol from Python: for tests, bots and load tools.

It keeps the batch session as the browser library does: the full state on open,
then each update folded in by version, with gaps detected. It records every
version it saw (and when), so tests can check order and benchmarks latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import msgspec
import websockets

from session_store.jsonpatch import apply_patch

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class CommandFailed(Exception):
    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code: str = frame.get("code", "")
        self.version: int = frame.get("version", 0)
        self.frame = frame


class Participant:
    def __init__(self, ws_url: str, scope: str = "batch_session", run_id: str = "") -> None:
        self.ws_url = ws_url
        self.run_id = run_id
        self.scope = scope
        self.data: Any = None
        self.version = 0
        self.pos: str | None = None
        self.seen: list[int] = []          # versions in the order they arrived
        self.arrivals: dict[int, float] = {}  # version -> perf_counter at arrival
        self.resyncs = 0
        self.gaps = 0
        self.errors: list[dict[str, Any]] = []
        self.states = 0
        self._ws: Any = None
        self._reader: asyncio.Future[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._sends: set[asyncio.Future[None]] = set()
        self._prefix = uuid.uuid4().hex[:8]
        self._first_state = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self.changed = asyncio.Event()
        self.closed: asyncio.Future[tuple[int | None, str]] | None = None
        # Groups: the last membership frame, the group session, messages received.
        self.group: dict[str, Any] | None = None
        self.group_events: list[dict[str, Any]] = []
        self.group_session: dict[str, Any] = {"data": None, "version": 0, "seen": []}
        self.messages: list[dict[str, Any]] = []

    async def connect(
        self, since: str | None = None, rcvbuf: int | None = None, **ws_options: Any
    ) -> Participant:
        """Open the channel; ``rcvbuf`` shrinks the socket's receive buffer (slow-client tests)."""
        url = self.ws_url + (f"&since={since}" if since else "")
        self._first_state = asyncio.Event()
        if rcvbuf is not None:
            # Set before connecting, so the TCP window never grows past it.
            parsed = urlsplit(url)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (parsed.hostname, parsed.port))
            ws_options["sock"] = sock
        self._ws = await websockets.connect(url, max_size=None, **ws_options)
        self.closed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        return self

    async def wait_ready(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._first_state.wait()

    async def reconnect(self) -> None:
        await self.close()
        await self.connect(since=self.pos)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    @property
    def transport(self) -> Any:
        return self._ws.transport

    async def send_raw(self, text: str | bytes) -> None:
        await self._ws.send(text)

    def next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def patch(
        self, ops: list[Any], version: int | None = None, cmd_id: str | None = None,
        timeout: float = 30.0, scope: str | None = None,
    ) -> int:
        """Send a patch and wait: returns the committed version, raises CommandFailed."""
        frame = await asyncio.wait_for(self.send_patch(ops, version, cmd_id, scope), timeout)
        if frame["type"] == "fail":
            raise CommandFailed(frame)
        return frame["version"]

    def send_patch(
        self, ops: list[Any], version: int | None = None, cmd_id: str | None = None,
        scope: str | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        msg: dict[str, Any] = {"scope": scope or self.scope, "ops": ops}
        if version is not None:
            msg["version"] = version
        return self.send_command("patch", cmd_id, **msg)

    def send_command(self, kind: str, cmd_id: str | None = None,
                     **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """Send any command; the future resolves with its ack or fail frame."""
        cmd_id = cmd_id or self.next_id()
        future = self._pending.get(cmd_id)
        if future is None or future.done():
            future = self._pending[cmd_id] = asyncio.get_running_loop().create_future()
        msg = {"type": kind, "id": cmd_id, **fields}
        self._spawn(self._ws.send(_encoder.encode(msg).decode()))
        return future

    async def command(self, kind: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.send_command(kind, **fields), timeout)
        if frame["type"] == "fail":
            raise CommandFailed(frame)
        return frame

    async def join_group(self) -> str:
        """Join a group (the fullest open one, or a new one); returns its id."""
        return (await self.command("join_group")).get("group", "")  # "": waiting (by arrival)

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (checked after every frame)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def next_error(self, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.errors:
            if time.monotonic() > deadline:
                raise TimeoutError("no error frame arrived")
            await asyncio.sleep(0.01)
        return self.errors.pop(0)

    async def wait_version(self, version: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.version < version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"at version {self.version}, waiting for {version}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def hold(self) -> None:
        """Stop reading (the socket's buffers fill up, as with a frozen browser tab)."""
        self._reading.clear()

    def release(self) -> None:
        self._reading.set()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                await self._reading.wait()
                self._handle(_decoder.decode(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.closed is not None and not self.closed.done():
                self.closed.set_result((self._ws.close_code, self._ws.close_reason or ""))

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "update" and frame["scope"] == self.scope:
            if self.data is None:
                return
            for change in frame["changes"]:
                if change["v"] <= self.version:
                    continue  # already in a state we were sent
                if change["v"] != self.version + 1:
                    self.gaps += 1
                    self.data = None
                    self._spawn(self._ws.send('{"type":"resync"}'))
                    return
                self.data = apply_patch(self.data, change["ops"])
                self.version = change["v"]
                self.seen.append(change["v"])
                self.arrivals[change["v"]] = time.perf_counter()
            self.pos = frame["pos"]
            self.changed.set()
        elif kind == "state" and frame["scope"] == self.scope:
            self.data = frame["data"]
            self.version = frame["version"]
            self.pos = frame["pos"]
            self.states += 1
            if frame.get("resync"):
                self.resyncs += 1
            self._first_state.set()
            self.changed.set()
        elif kind in ("state", "update") and frame["scope"].startswith("group_session:"):
            self._handle_group_session(frame)
        elif kind == "group":
            self.group = frame if frame.get("joined", True) else None
            self.group_events.extend(frame.get("changes", []))
            if self.group is None:
                self.group_session = {"data": None, "version": 0, "seen": []}
            self.changed.set()
        elif kind == "group_msg":
            self.messages.append(frame)
            self.changed.set()
        elif kind in ("ack", "fail"):
            future = self._pending.pop(frame["id"], None)
            if future is not None and not future.done():
                future.set_result(frame)
        elif kind == "error":
            self.errors.append(frame)

    def _handle_group_session(self, frame: dict[str, Any]) -> None:
        gs = self.group_session
        if frame["type"] == "state":
            gs.update(data=frame["data"], version=frame["version"])
        elif gs["data"] is not None:
            for change in frame["changes"]:
                if change["v"] <= gs["version"]:
                    continue
                if change["v"] != gs["version"] + 1:
                    self.gaps += 1
                gs["data"] = apply_patch(gs["data"], change["ops"])
                gs["version"] = change["v"]
                gs["seen"].append(change["v"])
        self.changed.set()
