"""The gateway's WebSocket protocol for uvicorn: RFC 6455 under the ASGI interface.

uvicorn hands an upgrade request to a protocol class of our choosing (``ws=`` in
gateway/server.py). Its own classes re-parse the request httptools already parsed
(in Python), build a frame object per message and pass every frame through several
layers; in a join storm that was more than half of the gateway's CPU (docs/decisions.md).
This one reads the request (straight from the socket through gateway/front.py, or as
uvicorn re-serialized it when its HTTP protocol read it first), parses frames straight
from the receive buffer, and writes a frame as its header and payload.

What it keeps of a full server: the handshake checks (400 / 426 answers), masking,
fragmentation, ping and pong, the closing handshake, keepalive pings with a timeout,
the message size limit (1009), UTF-8 checks (1007), protocol errors (1002), read
back-pressure (reading pauses while the application has ``ws_max_queue`` messages
waiting) and write back-pressure (``send`` waits while the transport's buffer is full).
No extensions are offered, so permessage-deflate never applies (gateway/server.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import struct
from collections import deque
from typing import Any
from urllib.parse import unquote

from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_local_addr,
    get_remote_addr,
    is_ssl,
)

try:  # websockets (a uvicorn[standard] dependency) ships the unmasking loop in C
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | memoryview) -> bytes:
        size = len(data)
        key = (bytes(mask) * (size // 4 + 1))[:size]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


log = logging.getLogger("cohort.gateway.websocket")

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HANDSHAKE_LIMIT = 64 * 1024  # the front only hands over a whole head; this is a backstop
CLOSE_TIMEOUT_S = 10.0  # how long our close frame waits for the peer's answer

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (OP_TEXT, OP_BINARY)

# Close codes a peer may send (RFC 6455 7.4; 1004-1006 and 1015 are never on the wire).
VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                               1012, 1013, 1014)) | frozenset(range(3000, 5000))

CONNECTING, OPEN, CLOSING, CLOSED = range(4)


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())


def frame_header(opcode: int, size: int) -> bytes:
    """A final, unmasked frame's header (servers never mask)."""
    if size < 126:
        return bytes((0x80 | opcode, size))
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size)
    return struct.pack("!BBQ", 0x80 | opcode, 127, size)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; "no status" and "abnormal" (1005, 1006) are never on the wire."""
    if code in (1005, 1006):
        return frame_header(OP_CLOSE, 0)
    if code not in VALID_CLOSE_CODES:
        raise ValueError(f"close code {code} may not be sent")
    # At most 123 bytes of reason, cut at a character (a cut one is no UTF-8).
    cut = reason.encode()[:123].decode(errors="ignore").encode()
    payload = struct.pack("!H", code) + cut
    return frame_header(OP_CLOSE, len(payload)) + payload


def unsafe_header(value: bytes) -> bool:
    return b"\r" in value or b"\n" in value


def http_response(status: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    lines = [b"HTTP/1.1 " + status.encode()]
    lines += [name + b": " + value for name, value in headers]
    if status[:3] != "101":
        lines += [b"content-type: text/plain; charset=utf-8",
                  b"content-length: " + str(len(body)).encode(), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class LastEncoded:
    """The UTF-8 of the last text sent. Fan-out writes one frame (one ``str``, encoded
    once by gateway/messages.py) to every subscriber in turn; ASGI hands it over as
    text, and encoding non-ASCII text costs about 1 µs per KB, per recipient."""

    __slots__ = ("data", "text")

    def __init__(self) -> None:
        self.text = ""
        self.data = b""

    def __call__(self, text: str) -> bytes:
        if text is not self.text:  # identity: no hash or comparison of a long frame
            self.text, self.data = text, text.encode()
        return self.data


utf8 = LastEncoded()


class HandshakeError(Exception):
    def __init__(self, status: str, message: str,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


def parse_request(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The target and headers (names lower-cased) of an upgrade request, checked."""
    head, *lines = raw.split(b"\r\n")
    parts = head.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[2].startswith(b"HTTP/1."):
        raise HandshakeError("400 Bad Request", "a WebSocket opens with GET over HTTP/1.1")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise HandshakeError("400 Bad Request", "malformed header line")
        headers.append((name.strip().lower(), value.strip()))
    return parts[1], headers


def header_tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    return {token.strip().lower() for key, value in headers if key == name
            for token in value.split(b",")}


def handshake_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's Sec-WebSocket-Key, after the checks RFC 6455 4.2.1 asks of a server."""
    if b"websocket" not in header_tokens(headers, b"upgrade"):
        raise HandshakeError("400 Bad Request", "missing 'Upgrade: websocket'")
    if b"upgrade" not in header_tokens(headers, b"connection"):
        raise HandshakeError("400 Bad Request", "missing 'Connection: Upgrade'")
    versions = [value for key, value in headers if key == b"sec-websocket-version"]
    if versions != [b"13"]:
        raise HandshakeError("426 Upgrade Required", "only WebSocket version 13 is spoken",
                             ((b"sec-websocket-version", b"13"),))
    keys = [value for key, value in headers if key == b"sec-websocket-key"]
    try:
        valid = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HandshakeError("400 Bad Request", "missing or invalid Sec-WebSocket-Key")
    return keys[0]


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection, served to the ASGI application (uvicorn's ``ws=``)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        self.max_size: int = config.ws_max_size
        self.max_queue: int = max(1, config.ws_max_queue)
        self.ping_interval: float | None = config.ws_ping_interval
        self.ping_timeout: float | None = config.ws_ping_timeout

        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.state = CONNECTING
        self.scope: dict[str, Any] = {}
        self.key = b""
        self.buffer = bytearray()
        self.fragments: list[bytes] | None = None
        self.fragments_opcode = OP_TEXT
        self.fragments_size = 0
        # Events for the application's receive(), and its wait for one.
        self.events: deque[dict[str, Any]] = deque()
        self.event_waiters: list[asyncio.Future[None]] = []
        self.last_event: dict[str, Any] | None = None
        self.disconnect_queued = False
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.close_sent = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.abort_timer: asyncio.TimerHandle | None = None
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.ping_payload: bytes | None = None
        # The 101 answer, held back until the first frame or the end of this loop turn,
        # so that an application which sends at once (the channel sends the state)
        # writes both in one go: in a join storm, one send and one wake-up of the
        # client fewer per channel.
        self.held_answer: bytes | None = None

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._stop_timers()
        if self.scope:  # no closing handshake (or not all of it): the peer is gone
            self._disconnect(1006)
        self.state = CLOSED
        self.write_paused = False
        self._wake_drain()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()

    def eof_received(self) -> bool | None:
        """The peer ended its side without a close frame: it is gone."""
        if self.scope:
            self._disconnect(1006)
        self.state = CLOSED
        self._close_transport()
        return True  # _close_transport closes (and cuts off a peer that reads nothing)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.state in (OPEN, CLOSING):
            self._read_frames()
        elif self.state == CONNECTING:
            if not self.scope:
                self._read_handshake()
            elif len(self.buffer) > self.max_size and not self.read_paused:
                # Frames sent before the handshake's answer wait for it, boundedly.
                self.read_paused = True
                self.transport.pause_reading()

    # -- the handshake ---------------------------------------------------------

    def _read_handshake(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > HANDSHAKE_LIMIT:
                self._refuse(HandshakeError("431 Request Header Fields Too Large",
                                            "the request's headers are too large"))
            return
        raw = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        try:
            target, headers = parse_request(raw)
            self.key = handshake_key(headers)
        except HandshakeError as exc:
            self._refuse(exc)
            return
        raw_path, _, query = target.partition(b"?")
        root_path: str = self.config.root_path
        subprotocols = [token.strip().decode("latin-1") for name, value in headers
                        if name == b"sec-websocket-protocol" for token in value.split(b",")]
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": root_path,
            "path": root_path + unquote(raw_path.decode("latin-1")),
            "raw_path": root_path.encode("latin-1") + raw_path,
            "query_string": query,
            "headers": headers,
            "subprotocols": [p for p in subprotocols if p],
            "state": self.app_state.copy(),
        }
        self._event({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _refuse(self, exc: HandshakeError, grace: float | None = None) -> None:
        """Answer a request that is no WebSocket handshake with its HTTP status."""
        body = (str(exc) + "\n").encode()
        self.transport.write(http_response(exc.status, self.default_headers + exc.headers,
                                           body))
        self.state = CLOSED
        self._close_transport(grace)

    def _accept(self, message: dict[str, Any]) -> None:
        headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                   (b"sec-websocket-accept", accept_key(self.key)), *self.default_headers]
        extra = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
        if any(unsafe_header(name) or unsafe_header(value) for name, value in extra):
            raise RuntimeError("a header with a line break")
        headers += extra
        subprotocol = message.get("subprotocol")
        if subprotocol:
            if subprotocol not in self.scope["subprotocols"]:
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered")
            headers.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
        self.held_answer = http_response("101 Switching Protocols", headers)
        self.loop.call_soon(self._release_answer)
        self.state = OPEN
        if self.ping_interval:
            self.ping_timer = self.loop.call_later(self.ping_interval, self._ping)
        if self.read_paused:  # frames came before the answer: reading paused for them
            self._resume_reading()
        elif self.buffer:
            self._read_frames()

    # -- frames in -------------------------------------------------------------

    def _read_frames(self) -> None:
        buf = self.buffer
        pos = 0
        try:
            while self.state in (OPEN, CLOSING) and not self.read_paused:
                available = len(buf) - pos
                if available < 2:
                    break
                first, second = buf[pos], buf[pos + 1]
                if first & 0x70:
                    raise ProtocolError(1002, "reserved bits set (no extension was agreed)")
                if not second & 0x80:
                    raise ProtocolError(1002, "client frames must be masked")
                opcode, size, head = first & 0x0F, second & 0x7F, 2
                if size == 126:
                    if available < 4:
                        break
                    size, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
                elif size == 127:
                    if available < 10:
                        break
                    size, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
                if opcode >= OP_CLOSE:
                    if not first & 0x80 or size > 125:
                        raise ProtocolError(1002, "control frames are short and whole")
                elif self.fragments_size + size > self.max_size:
                    raise ProtocolError(1009, f"message over {self.max_size} bytes")
                end = pos + head + 4 + size
                if len(buf) < end:
                    break
                start = pos + head + 4
                payload = apply_mask(memoryview(buf)[start:end], buf[start - 4:start])
                pos = end
                self._frame(bool(first & 0x80), opcode, payload)
        except ProtocolError as exc:
            self._fail(exc.code, exc.reason)
            return
        finally:
            if pos:
                del buf[:pos]

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode in DATA_OPCODES:
            if self.fragments is not None:
                raise ProtocolError(1002, "a new message began inside a fragmented one")
            if fin:
                self._message(opcode, payload)
            else:
                self.fragments, self.fragments_opcode = [payload], opcode
                self.fragments_size = len(payload)
        elif opcode == OP_CONT:
            if self.fragments is None:
                raise ProtocolError(1002, "a continuation frame without a message")
            self.fragments.append(payload)
            self.fragments_size += len(payload)
            if fin:
                whole = b"".join(self.fragments)
                self.fragments, self.fragments_size = None, 0
                self._message(self.fragments_opcode, whole)
        elif opcode == OP_CLOSE:
            self._peer_closed(payload)
        elif opcode == OP_PING:
            # Not while our writes wait for the peer to read: a client that pings
            # and never reads would grow the buffer without end (a pong answers the
            # latest ping only, RFC 6455 5.5.3).
            if not self.close_sent and not self.write_paused:
                self._write(frame_header(OP_PONG, len(payload)) + payload)
        elif opcode == OP_PONG:
            if self.ping_payload is not None and payload == self.ping_payload:
                self.ping_payload = None
                if self.pong_timer is not None:
                    self.pong_timer.cancel()
                    self.pong_timer = None
                    # Without a timeout _ping has already scheduled the next one.
                    if self.ping_interval and self.state == OPEN:
                        self.ping_timer = self.loop.call_later(self.ping_interval, self._ping)
        else:
            raise ProtocolError(1002, f"unknown opcode {opcode}")

    def _message(self, opcode: int, payload: bytes) -> None:
        if self.close_sent:
            return  # the application is past its close: nothing more for it
        if opcode == OP_TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise ProtocolError(1007, "a text message that is not UTF-8") from None
            self._event({"type": "websocket.receive", "text": text})
        else:
            self._event({"type": "websocket.receive", "bytes": payload})
        if len(self.events) >= self.max_queue and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _peer_closed(self, payload: bytes) -> None:
        code, reason = 1005, ""
        if len(payload) == 1:
            raise ProtocolError(1002, "a close frame with a one-byte payload")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in VALID_CLOSE_CODES:
                raise ProtocolError(1002, f"close code {code} is not allowed")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise ProtocolError(1007, "a close reason that is not UTF-8") from None
        self._disconnect(code, reason)
        if self.close_sent:  # the answer to our close: the closing handshake is done
            self.state = CLOSED
            self._close_transport()
            return
        self._write(frame_header(OP_CLOSE, 2 if payload else 0) + payload[:2])  # the echo
        self.close_sent = True
        self.state = CLOSED
        self._close_transport()

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error: say why in a close frame and drop the connection."""
        log.info("websocket protocol error", extra={"code": code, "detail": reason})
        if not self.close_sent:
            self._write(close_frame(code, reason))
            self.close_sent = True
        self._disconnect(code, reason)
        self.state = CLOSED
        self._close_transport()

    # -- keepalive -------------------------------------------------------------

    def _ping(self) -> None:
        self.ping_timer = None
        if self.state != OPEN or self.close_sent:
            return
        self.ping_payload = os.urandom(4)
        self._write(frame_header(OP_PING, 4) + self.ping_payload)
        if self.ping_timeout:
            self.pong_timer = self.loop.call_later(self.ping_timeout, self._pong_missed)
        elif self.ping_interval:
            self.ping_timer = self.loop.call_later(self.ping_interval, self._ping)

    def _pong_missed(self) -> None:
        self.pong_timer = None
        if self.state != OPEN:
            return
        if self.read_paused and not self.write_paused:
            # The pong may wait behind the application's backlog. (Not when our
            # writes wait too: then the peer is not reading at all.)
            assert self.ping_timeout
            self.pong_timer = self.loop.call_later(self.ping_timeout, self._pong_missed)
            return
        self._fail(1011, "keepalive ping timeout")
        self.transport.abort()  # an unresponsive peer: nothing it has not read will be

    def _stop_timers(self) -> None:
        for timer in (self.ping_timer, self.pong_timer, self.close_timer, self.abort_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = self.close_timer = self.abort_timer = None

    def _close_transport(self, grace: float | None = None) -> None:
        """Close once what is written has gone out; a peer that does not read that
        within ``grace`` (default CLOSE_TIMEOUT_S) is cut off (close() alone would
        wait for it forever)."""
        self.transport.close()
        if self.abort_timer is None and self.transport.get_write_buffer_size():
            self.abort_timer = self.loop.call_later(
                CLOSE_TIMEOUT_S if grace is None else grace, self.transport.abort)
        self._wake_drain()  # a send waiting for the buffer learns of the end now

    # -- the ASGI side ---------------------------------------------------------

    def _disconnect(self, code: int, reason: str = "") -> None:
        """The application's last event (once, whatever ended the connection)."""
        if not self.disconnect_queued:
            self.disconnect_queued = True
            self._event({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for waiter in self.event_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self._out(data)

    def _out(self, *parts: bytes) -> None:
        """Write ``parts`` as one write, behind the held-back 101 answer if any."""
        if self.held_answer is not None:
            parts = (self.held_answer, *parts)
            self.held_answer = None
        if len(parts) == 1:
            self.transport.write(parts[0])
        else:  # no copy of a large payload: the transport writes all parts at once
            self.transport.writelines(parts)

    def _release_answer(self) -> None:
        if self.held_answer is not None and not self.transport.is_closing():
            self._out()

    def _wake_drain(self) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        while not self.events:
            if self.last_event is not None and self.last_event["type"] == "websocket.disconnect":
                return self.last_event  # asked again after the end: the same answer
            waiter = self.loop.create_future()
            self.event_waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self.event_waiters.remove(waiter)
        event = self.last_event = self.events.popleft()
        if self.read_paused and len(self.events) < self.max_queue:
            self._resume_reading()
        return event

    def _resume_reading(self) -> None:
        """The application caught up: parse what is buffered, then read again."""
        if self.state == CONNECTING:
            return  # frames wait for the accept, which resumes (_accept)
        self.read_paused = False
        if self.state in (OPEN, CLOSING):
            self._read_frames()
            if not self.read_paused and self.state in (OPEN, CLOSING):
                self.transport.resume_reading()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.state == CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
                return
            if kind == "websocket.close":  # refused before the handshake: HTTP 403
                self._refuse(HandshakeError("403 Forbidden", "the WebSocket was refused"))
                return
            raise RuntimeError(f"expected 'websocket.accept' or 'websocket.close', "
                               f"got {kind!r}")
        if self.state == CLOSED and not self.close_sent:
            raise ClientDisconnected()
        if self.close_sent:
            if self.transport.is_closing():
                raise ClientDisconnected()
            raise RuntimeError(f"{kind!r} after 'websocket.close'")
        if kind == "websocket.send":
            while self.write_paused:
                waiter = self.loop.create_future()
                self.drain_waiters.append(waiter)
                await waiter
                if self.close_sent or self.state == CLOSED:  # closed while we waited
                    raise ClientDisconnected()
            text = message.get("text")
            if text is not None:
                data, opcode = utf8(text), OP_TEXT
            else:
                data, opcode = bytes(message.get("bytes") or b""), OP_BINARY
            header = frame_header(opcode, len(data))
            if len(data) < 4096:
                self._out(header + data)
            else:
                self._out(header, data)
        elif kind == "websocket.close":
            self._write(close_frame(message.get("code") or 1000, message.get("reason") or ""))
            self.close_sent = True
            self.state = CLOSING
            if self.ping_timer is not None:
                self.ping_timer.cancel()
                self.ping_timer = None
            # The peer's answer must be read, behind whatever the application left
            # unread (messages after the close are dropped: the queue cannot grow).
            if self.read_paused:
                self._resume_reading()
            if self.state == CLOSING:  # (the answer may have been read just now)
                self.close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.transport.abort)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")

    async def run_asgi(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            log.exception("exception in the WebSocket application")
            if self.state == CONNECTING:
                self._refuse(HandshakeError("500 Internal Server Error", "internal error"))
            elif self.state == OPEN:
                self._fail(1011, "internal error")
        else:
            if self.state == CONNECTING:
                log.error("the WebSocket application returned without accepting or closing")
                self._refuse(HandshakeError("500 Internal Server Error", "internal error"))
        finally:
            if self.state == OPEN:  # returned without a close: close it properly
                self._write(close_frame(1000))
                self.close_sent = True
                self._disconnect(1000)
                self.state = CLOSED
            if self.state != CLOSING:  # CLOSING: waits for the peer's answer (or the timer)
                self._close_transport()

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every open connection)."""
        self._stop_timers()
        if self.state == OPEN:
            self._disconnect(1012)
            with contextlib.suppress(Exception):
                self._write(close_frame(1012))
            self.close_sent = True
        elif self.state == CONNECTING:
            if self.scope:  # the application has not answered yet
                self._disconnect(1012)
            with contextlib.suppress(Exception):
                self._refuse(HandshakeError("503 Service Unavailable", "shutting down"), 1.0)
        self.state = CLOSED
        self._close_transport(grace=1.0)
