"""Talking to a deployment: setup over HTTP, participants over WebSockets, a lean HTTP client.

Setup takes either token:

- the admin token (``COHORT_ADMIN_TOKEN``): bare batches (``POST /api/batches``) and
  API-made participants (``POST /api/batches/<id>/participants``), as bots do;
- an experimenter API token: a tiny study is uploaded (``POST /api/studies``), batches
  are made under it with a ``general_multiple`` link, and participants enter through
  ``/go/<code>`` as browsers do (then ``/r/<key>/init`` names the run and the channel).

The ``results`` scenario always takes the second way (result data need a study).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import itertools
import os
import socket
import ssl
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from services.loadtest.stats import Recorder

try:
    import httpx
    import websockets

    from services.participant import CommandFailed, Participant
except ImportError as exc:  # pragma: no cover - the test extras bring both
    raise SystemExit(
        f"cohort loadtest needs the 'websockets' and 'httpx' packages ({exc}): "
        "pip install 'cohort[loadtest]' (or: pip install websockets httpx)") from None

__all__ = ["CommandFailed", "Deployment", "FrameCache", "HttpConnection", "LeanSocket",
           "LoadParticipant", "SetupError", "Ticket"]

PAGE = "<!doctype html><title>load test</title><script src='jatos.js'></script><p>load</p>"
STUDY_TOML = """title = "Cohort load test {tag}"
uuid = "cohort-loadtest-{tag}"
description = "Made by cohort loadtest; safe to delete."

[[components]]
id = "page"
title = "Page"
html_file = "page.html"
reloadable = true
"""


class SetupError(RuntimeError):
    """The deployment refused a setup step (bad token, unreachable, ...)."""


def study_zip(tag: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("loadtest/study.toml", STUDY_TOML.format(tag=tag))
        archive.writestr("loadtest/page.html", PAGE)
    return buffer.getvalue()


@dataclass
class Ticket:
    ws_url: str
    run_id: str
    key: str      # the participant token (= run key for study runs)
    base: str     # the gateway it was issued by


def ws_base(http_base: str) -> str:
    parts = urlsplit(http_base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}"


class Deployment:
    """A Cohort deployment: one or more gateway base URLs and a token."""

    def __init__(self, urls: list[str], token: str, label: str = "loadtest",
                 concurrency: int = 32) -> None:
        if not urls:
            raise SetupError("no --url given")
        self.urls = [u.rstrip("/") for u in urls]
        self.token = token
        self.label = label
        self.concurrency = concurrency
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=60,
            limits=httpx.Limits(max_connections=concurrency * 2,
                                max_keepalive_connections=concurrency * 2),
            trust_env=False)
        self.admin: bool | None = None  # None: not tried yet
        self.tag = uuid.uuid4().hex[:10]
        self._study: str | None = None
        self._study_lock = asyncio.Lock()
        self._codes: dict[str, str] = {}   # batch -> general_multiple link code
        self.study_ids: dict[str, str] = {}  # batch -> study

    async def close(self) -> None:
        await self.http.aclose()

    def url(self, index: int = 0) -> str:
        return self.urls[index % len(self.urls)]

    async def _call(self, method: str, url: str, expect: tuple[int, ...] = (200, 201),
                    **kwargs: Any) -> httpx.Response:
        for attempt in itertools.count():
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= 3:
                    raise SetupError(f"{method} {url}: {exc!r}") from exc
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if response.status_code in expect:
                return response
            if response.status_code in (502, 503) and attempt < 3:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            raise SetupError(f"{method} {url}: {response.status_code} {response.text[:300]}")
        raise AssertionError("unreachable")

    async def check(self) -> None:
        for base in self.urls:
            try:
                response = await self.http.get(f"{base}/readyz", timeout=10)
            except httpx.TransportError as exc:
                raise SetupError(f"{base} does not answer: {exc!r}") from exc
            if response.status_code != 200:
                raise SetupError(f"{base}/readyz: {response.status_code} {response.text[:200]}")

    # -- batches ---------------------------------------------------------------

    async def new_batch(self, label: str, groups: dict[str, Any] | None = None,
                        study: bool = False) -> str:
        """A new batch with an empty batch session (bare with the admin token, else in a study)."""
        if not study and self.admin is not False:
            response = await self.http.post(f"{self.url()}/api/batches",
                                            json={"label": label, "groups": groups or {}})
            if response.status_code == 201:
                self.admin = True
                return response.json()["id"]
            if response.status_code not in (401, 403):
                raise SetupError(f"POST /api/batches: {response.status_code} "
                                 f"{response.text[:300]}")
            self.admin = False
        study_id = await self.study()
        body: dict[str, Any] = {"label": label}
        if groups:
            body["group_settings"] = groups
        batch = (await self._call("POST", f"{self.url()}/api/studies/{study_id}/batches",
                                  json=body)).json()["id"]
        links = (await self._call(
            "POST", f"{self.url()}/api/studies/{study_id}/batches/{batch}/links",
            json={"type": "general_multiple", "count": 1})).json()
        self._codes[batch] = links[0]["code"]
        self.study_ids[batch] = study_id
        return batch

    async def study(self) -> str:
        async with self._study_lock:
            if self._study is None:
                response = await self._call(
                    "POST", f"{self.url()}/api/studies",
                    files={"file": (f"loadtest-{self.tag}.zip", study_zip(self.tag))})
                self._study = response.json()["study_id"]
            return self._study

    # -- participants ----------------------------------------------------------

    async def participant(self, batch: str, index: int = 0) -> Ticket:
        base = self.url(index)
        code = self._codes.get(batch)
        if code is None:
            ticket = (await self._call("POST", f"{base}/api/batches/{batch}/participants",
                                       json={})).json()
            return Ticket(ticket["ws_url"], ticket["run_id"], ticket["token"], base)
        key, page = await self.enter(base, code)
        await self._call("GET", f"{base}{page}")  # the first component's page starts it
        init = (await self._call("GET", f"{base}/r/{key}/init", params={"pos": 1})).json()
        return Ticket(ws_base(base) + init["channelUrl"], init["studyResultId"], key, base)

    async def enter(self, base: str, code: str) -> tuple[str, str]:
        """``GET /go/<code>`` as a browser does; answers the run key and the page it
        redirects to."""
        response = await self._call("GET", f"{base}/go/{code}", expect=(302, 303, 307),
                                    follow_redirects=False)
        path = urlsplit(response.headers["location"]).path
        parts = path.split("/")
        if len(parts) < 3 or parts[1] != "r":
            raise SetupError(f"/go/{code} redirected to {path!r}, not /r/<key>/...")
        return parts[2], path

    async def participants(self, batch: str, count: int, offset: int = 0,
                           rec: Recorder | None = None) -> list[Ticket]:
        gate = asyncio.Semaphore(self.concurrency)
        done = 0
        last_report = time.perf_counter()

        async def one(i: int) -> Ticket:
            nonlocal done, last_report
            async with gate:
                ticket = await self.participant(batch, offset + i)
            done += 1
            if rec is not None and time.perf_counter() - last_report > 2:
                last_report = time.perf_counter()
                rec.log(f"setup: {done:,}/{count:,} participants issued")
            return ticket

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def gateway_rss(self, base: str | None = None) -> float | None:
        """The gateway process's resident memory in MB, from its Prometheus metrics."""
        try:
            response = await self.http.get(f"{base or self.url()}/metrics", timeout=30)
        except httpx.TransportError:
            return None
        for line in response.text.splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1]) / 2**20
        return None


# ---------------------------------------------------------------------------
# WebSocket participants


class _Change(msgspec.Struct):
    v: int
    ops: msgspec.Raw


class _Update(msgspec.Struct):
    type: str
    scope: str
    pos: str
    changes: list[_Change]


_update_decoder = msgspec.json.Decoder(_Update)
_decoder = msgspec.json.Decoder()
_list_decoder = msgspec.json.Decoder(list)


class Peek:
    """What a subscriber needs of an update frame, decoded once for everyone."""

    __slots__ = ("changes", "contiguous", "first", "last", "pos")

    def __init__(self, frame: _Update) -> None:
        self.changes = frame.changes
        self.pos = frame.pos
        self.first = frame.changes[0].v if frame.changes else 0
        self.last = frame.changes[-1].v if frame.changes else 0
        self.contiguous = self.last - self.first + 1 == len(frame.changes) and all(
            c.v == self.first + i for i, c in enumerate(frame.changes))


def _peek(raw: str | bytes) -> Peek:
    return Peek(_update_decoder.decode(raw))


class FrameCache:
    """The gateway writes one shared frame to every subscriber; decode it once here too.

    Keyed by (length, first 112 characters: type, scope, pos and the first version),
    and a hit must be the same text, so a mix-up cannot pass unnoticed.
    """

    def __init__(self, size: int = 512) -> None:
        self._entries: dict[tuple[int, Any], tuple[Any, Any]] = {}
        self._states: dict[tuple[int, Any], tuple[Any, Any]] = {}
        self._size = size
        self.hits = 0
        self.misses = 0

    def get(self, raw: str | bytes) -> Peek:
        return self._lookup(self._entries, self._size, raw, _peek)

    def state(self, raw: str | bytes) -> dict[str, Any]:
        """A ``state`` frame, decoded once for every subscriber that got the same bytes
        (a join storm's 1,000 copies of a 100 KB state cost one decode and 999
        comparisons). Shared: callers must not change it. States are large: only the
        last few are kept."""
        return self._lookup(self._states, 4, raw, _decoder.decode)

    def _lookup(self, entries: dict[tuple[int, Any], tuple[Any, Any]], size: int,
                raw: Any, decode: Callable[[Any], Any]) -> Any:
        key = (len(raw), raw[:112])
        hit = entries.get(key)
        if hit is not None and hit[0] == raw:
            self.hits += 1
            return hit[1]
        self.misses += 1
        value = decode(raw)
        if len(entries) >= size:
            del entries[next(iter(entries))]
        entries[key] = (raw, value)
        return value


_UPDATE_PREFIX = '{"type":"update","scope":"batch_session",'
_STATE_PREFIX = '{"type":"state"'
_UPDATE_PREFIX_B = _UPDATE_PREFIX.encode()
_STATE_PREFIX_B = _STATE_PREFIX.encode()
_BATCH_STATE_PREFIX_B = b'{"type":"state","scope":"batch_session",'
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=64)
def _endpoint(scheme: str, netloc: str) -> tuple[str, int, bool]:
    """(host, port, tls) of a ws:// or wss:// URL's netloc; every participant of a run
    shares a few, so each is split once."""
    parts = urlsplit(f"{scheme}://{netloc}")
    tls = scheme == "wss"
    return parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) in an HTTP response head."""
    for line in head.split(b"\r\n")[1:]:
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name:
            return value.strip()
    return None


class LeanSocket(asyncio.Protocol):
    """A minimal RFC 6455 client: text frames in and out, pings answered, close handled.

    Frames are parsed straight from ``data_received`` and handed to ``on_text`` as
    bytes: no task, queue or assembler per message, a few microseconds a frame where
    the ``websockets`` client costs tens. Client frames are masked with the all-zero
    key (a valid key: the payload is sent as is).
    """

    def __init__(self, on_text: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self._key = b""
        self._request = b""
        self._rest = b""
        self._open = False
        self._fragments: list[bytes] | None = None

    async def open(self, url: str, timeout: float = 60.0, rcvbuf: int | None = None) -> None:
        scheme, _, rest = url.partition("://")
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        netloc, target = rest[:cut], rest[cut:]
        host, port, tls = _endpoint(scheme, netloc)
        loop = asyncio.get_running_loop()
        self._key = base64.b64encode(os.urandom(16))
        # Written by connection_made, as soon as the connection is up (not a loop turn
        # later, when this task resumes).
        self._request = (
            f"GET {target if target.startswith('/') else '/' + target} HTTP/1.1\r\n"
            f"Host: {netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\n".encode()
            + b"Sec-WebSocket-Key: " + self._key + b"\r\n\r\n")
        sock = None
        # One deadline for connect and handshake; asyncio.timeout adds no task per
        # open (wait_for's task and shield were a fifth of a join storm's client CPU).
        try:
            async with asyncio.timeout(timeout):
                if rcvbuf is not None:
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    sock.setblocking(False)
                    await loop.sock_connect(sock, (host, port))
                await loop.create_connection(
                    lambda: self, None if sock else host, None if sock else port, sock=sock,
                    ssl=ssl.create_default_context() if tls else None,
                    server_hostname=host if tls else None)
                await self.handshake
        except BaseException:
            if not self.handshake.done():
                self.handshake.cancel()  # nothing may set an exception nobody reads
            if self.transport is not None:
                self.transport.abort()
            elif sock is not None:
                sock.close()
            raise

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        with contextlib.suppress(OSError, AttributeError):
            transport.get_extra_info("socket").setsockopt(  # type: ignore[union-attr]
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if self.close_code is None:
            self.close_code = 1006
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"closed before the handshake: {exc}"))
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        if not self._open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._rest = data
                return
            self._handshake(data[:end])
            data = data[end + 4:]
            if not self._open:
                return
        pos = self._parse(data)
        if pos < len(data):
            self._rest = data[pos:]

    def _handshake(self, head: bytes) -> None:
        if self.handshake.done():  # open() gave up (timeout or cancelled)
            return
        accept = base64.b64encode(hashlib.sha1(self._key + _WS_GUID).digest())
        status = head[:head.find(b"\r\n")].split(b" ", 2)
        if (len(status) < 2 or status[1] != b"101"
                or _header(head, b"sec-websocket-accept") != accept):
            self.handshake.set_exception(ConnectionError(
                f"handshake refused: {head[:300].decode(errors='replace')}"))
            assert self.transport is not None
            self.transport.close()
            return
        self._open = True
        self.handshake.set_result(None)

    def _parse(self, data: bytes) -> int:
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            if b1 & 0x80:  # servers never mask
                self._fail(1002, "masked server frame")
                return n
            end = pos + head + length
            if end > n:
                break
            payload = data[pos + head:end]
            pos = end
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                if b0 & 0x80:
                    self.on_text(payload)
                else:
                    self._fragments = [payload]
            elif opcode == 0 and self._fragments is not None:
                self._fragments.append(payload)
                if b0 & 0x80:
                    whole, self._fragments = b"".join(self._fragments), None
                    self.on_text(whole)
            elif opcode == 9:
                self._frame(0xA, payload)
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode(errors="replace")
                if self._open:
                    self._frame(0x8, payload[:2])
                self._open = False
                assert self.transport is not None
                self.transport.close()
                return n
        return pos

    def _fail(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if self.transport is not None:
            self.transport.close()

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head + b"\0\0\0\0" + payload)

    # -- what Participant uses of a websockets connection -----------------------

    def send_text(self, text: bytes) -> None:
        if self._open:
            self._frame(0x1, text)

    async def send(self, text: str | bytes) -> None:
        self.send_text(text.encode() if isinstance(text, str) else text)

    async def close(self) -> None:
        if self.transport is None:  # never connected
            if not self.done.done():
                self.done.set_result(None)
            return
        if self._open:
            self._frame(0x8, (1000).to_bytes(2, "big"))
            self._open = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.done), 2)
        if self.transport is not None:
            self.transport.close()
        await self.done


class LoadParticipant(Participant):
    """The participant client of services/participant.py, cheaper per frame.

    The protocol logic is Participant's: the full state on open, versions in order,
    a resync on a gap, acks and fails resolving the command futures, the group
    frames. Two things differ, both for the load generator's CPU:

    - the transport is ``LeanSocket`` (``transport="websockets"``: the ``websockets``
      library, as Participant uses it);
    - a batch-session update frame is decoded once for all subscribers of this
      process (``FrameCache``); each subscriber checks that the versions follow its
      own, counts them, and notes (first, last, arrival) for the latency figures.
      With ``apply=True`` it also applies every change to its copy of the data, as
      the browser library does (slower; the integration test uses it).
    """

    def __init__(self, ticket: Ticket, rec: Recorder, cache: FrameCache, index: int = 0,
                 apply: bool = False, keep_data: bool = True, record_frames: bool = False,
                 transport: str = "lean") -> None:
        super().__init__(ticket.ws_url, run_id=ticket.run_id)
        self.ticket = ticket
        self.index = index
        self.rec = rec
        self.cache = cache
        self.apply = apply
        self.keep_data = keep_data
        self.record_frames = record_frames
        self.lean = transport == "lean"
        self.frames: list[tuple[int, int, float]] = []
        self.delivered = 0
        self.opened_at = 0.0
        self.state_at: float | None = None
        self.state_bytes = 0
        self.has_state = False
        self.expect_close = False

    async def open(self, **ws_options: Any) -> LoadParticipant:
        self.opened_at = time.perf_counter()
        if self.lean:
            await self.connect(**ws_options)
        else:
            await self.connect(open_timeout=60, ping_interval=None, compression=None,
                               **ws_options)
        return self

    async def connect(self, since: str | None = None, rcvbuf: int | None = None,
                      **ws_options: Any) -> Participant:
        if not self.lean:
            return await super().connect(since, rcvbuf, **ws_options)
        url = self.ws_url + (f"&since={since}" if since else "")
        self._first_state = asyncio.Event()
        sock = LeanSocket(self._on_frame)
        self._ws = sock
        await sock.open(url, rcvbuf=rcvbuf)
        self.closed = closed = asyncio.get_running_loop().create_future()
        self._reader = sock.done  # what close() awaits; a callback, not a task per channel
        sock.done.add_done_callback(lambda _: self._on_closed(sock, closed))
        return self

    def _on_closed(self, sock: LeanSocket, closed: asyncio.Future[tuple[int | None, str]]
                   ) -> None:
        if not closed.done():
            closed.set_result((sock.close_code, sock.close_reason))
        if not self.expect_close:
            self.rec.error(f"participant {self.index}: channel closed "
                           f"({sock.close_code} {sock.close_reason})")

    def _on_frame(self, raw: bytes) -> None:
        try:
            if raw.startswith(_UPDATE_PREFIX_B):
                self._update(self.cache.get(raw), time.perf_counter())
                return
            if raw.startswith(_STATE_PREFIX_B):
                self.state_bytes = len(raw)
                # The batch session's data is only read unless --apply: the same state
                # bytes share one decode. (A group session's state is patched in place.)
                if not self.apply and raw.startswith(_BATCH_STATE_PREFIX_B):
                    self._handle(self.cache.state(raw))
                    return
            self._handle(_decoder.decode(raw))
        except Exception as exc:  # a bug here must show, not hang the run
            self.rec.error(f"participant {self.index}: frame handling failed: {exc!r}")

    def send_command(self, kind: str, cmd_id: str | None = None,
                     **fields: Any) -> asyncio.Future[dict[str, Any]]:
        if not self.lean:
            return super().send_command(kind, cmd_id, **fields)
        cmd_id = cmd_id or self.next_id()
        future = self._pending.get(cmd_id)
        if future is None or future.done():
            future = self._pending[cmd_id] = asyncio.get_running_loop().create_future()
        self._ws.send_text(_encoder.encode({"type": kind, "id": cmd_id, **fields}))
        return future

    async def _read(self) -> None:  # the websockets transport only
        try:
            async for raw in self._ws:
                if not self._reading.is_set():
                    await self._reading.wait()
                if raw.startswith(_UPDATE_PREFIX):
                    self._update(self.cache.get(raw), time.perf_counter())
                    continue
                if raw.startswith(_STATE_PREFIX):
                    self.state_bytes = len(raw)
                self._handle(_decoder.decode(raw))
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must show, not hang the run
            self.rec.error(f"participant {self.index}: reader failed: {exc!r}")
        finally:
            if self.closed is not None and not self.closed.done():
                self.closed.set_result((self._ws.close_code, self._ws.close_reason or ""))
            if not self.expect_close:
                self.rec.error(f"participant {self.index}: channel closed "
                               f"({self._ws.close_code} {self._ws.close_reason or ''})")

    async def close(self) -> None:
        self.expect_close = True
        await super().close()

    def _update(self, peek: Peek, now: float) -> None:
        if not self.has_state:
            return  # before the first state, or waiting for a resync
        old = self.version
        if peek.last <= old:
            return
        if not peek.contiguous or peek.first > old + 1:
            self.gaps += 1
            self.rec.gaps += 1
            self.has_state = False
            self._spawn(self._ws.send('{"type":"resync"}'))
            return
        if self.apply:
            for change in peek.changes:
                if change.v > old:
                    self.data = _apply(self.data, _list_decoder.decode(change.ops))
        self.version = peek.last
        self.pos = peek.pos
        self.delivered += peek.last - old
        if self.record_frames:
            self.frames.append((old + 1, peek.last, now))
        self.changed.set()

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "state" and frame["scope"] == self.scope:
            super()._handle(frame)
            if self.state_at is None:
                self.state_at = time.perf_counter()
            if frame.get("resync"):
                self.rec.resyncs += 1
            self.has_state = True
            if not self.keep_data:
                self.data = {}
            return
        if kind == "error":
            self.rec.error(f"participant {self.index}: error frame {frame}")
        super()._handle(frame)


def _apply(data: Any, ops: list[Any]) -> Any:
    from session_store.jsonpatch import apply_patch

    return apply_patch(data, ops)


# ---------------------------------------------------------------------------
# A lean HTTP/1.1 keep-alive client (result submissions: httpx costs more CPU
# per request than the gateway does)


class HttpConnection:
    """One keep-alive connection, one request at a time, as one browser tab."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.netloc = parts.netloc
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        context = ssl.create_default_context() if self.tls else None
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, ssl=context, limit=2**20)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self._writer is None:
                await self._open()
            assert self._reader is not None and self._writer is not None
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.netloc}",
                    f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in (headers or {}).items()]
            try:
                self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                status_line = await self._reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed by the server")
                return await self._response(status_line)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _response(self, status_line: bytes) -> tuple[int, bytes]:
        assert self._reader is not None
        status = int(status_line.split(b" ", 2)[1])
        length = -1
        chunked = close = False
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self._reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self._reader.readline()
                    break
                parts.append(await self._reader.readexactly(size))
                await self._reader.readline()
            body = b"".join(parts)
        elif length >= 0:
            body = await self._reader.readexactly(length)
        else:
            body = await self._reader.read()
            close = True
        if close:
            await self.close()
        return status, body
