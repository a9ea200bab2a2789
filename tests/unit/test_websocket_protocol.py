"""The gateway's WebSocket protocol (gateway/websocket.py) under a real uvicorn server,
over real sockets: a standard client (the ``websockets`` library) for what browsers do,
and raw frames for what they must not."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets

from gateway import front as front_module
from gateway import websocket as ws_module
from gateway.front import FrontProtocol
from gateway.server import uvicorn_config
from gateway.websocket import WebSocketProtocol, accept_key
from services.settings import Settings
from tests.asgi_server import running, serve_lifespan


class EchoApp:
    """Echoes messages; ``close:<code>`` closes; records every event it received.
    Paths: /refuse closes before accepting, /boom fails after accepting, /return
    returns right after accepting, /greet sends "hello" at once, /hold waits for
    ``release`` before reading, /late before accepting, /later before its first
    receive, /closer closes on ``release``
    without reading; /badsub and /badheader accept with a subprotocol nobody offered
    or a header with a line break."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.scopes: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.send_errors: list[Exception] = []
        self.done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        self.scopes.append(scope)
        try:
            await self.serve(scope, receive, send)
        finally:
            self.done.set()

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/later":
            await self.release.wait()
        assert (await receive())["type"] == "websocket.connect"
        if path == "/late":
            await self.release.wait()
        if path == "/refuse":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == "/badsub":  # a subprotocol the client never offered
            await send({"type": "websocket.accept", "subprotocol": "nope"})
        if path == "/badheader":  # a header that would split the response
            await send({"type": "websocket.accept", "headers": [(b"x-a", b"1\r\nx-b: 2")]})
        await send({"type": "websocket.accept",
                    "subprotocol": (scope["subprotocols"] or [None])[0]})
        if path == "/greet":  # a first frame right after the accept, as a channel's state
            await send({"type": "websocket.send", "text": "hello"})
        if path == "/boom":
            raise ValueError("a bug in the application")
        if path == "/return":
            return
        if path in ("/hold", "/closer"):
            await self.release.wait()
        if path == "/closer":  # closes with everything the client sent still unread, and
            # returns at once (as a participant channel does)
            await send({"type": "websocket.close", "code": 4000, "reason": "é" * 70})
            return
        closing = False
        while True:
            event = await receive()
            self.events.append(event)
            if event["type"] == "websocket.disconnect":
                try:  # what a send after the end does
                    await send({"type": "websocket.send", "text": "too late"})
                except Exception as exc:
                    self.send_errors.append(exc)
                return
            text = event.get("text")
            if closing:
                continue  # keep reading: the peer's answer ends the connection
            if text and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
                closing = True
                continue
            if text and text.startswith("flood:"):
                size, count = map(int, text[6:].split(","))
                for _ in range(count):
                    await send({"type": "websocket.send", "bytes": b"x" * size})
                    self.events.append({"type": "sent"})
                continue
            await send({"type": "websocket.send", "text": text} if text is not None
                       else {"type": "websocket.send", "bytes": event["bytes"]})

    def received(self) -> list[Any]:
        return [e.get("text", e.get("bytes")) for e in self.events
                if e["type"] == "websocket.receive"]

    def disconnect(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e["type"] == "websocket.disconnect"), None)


@contextlib.asynccontextmanager
async def serving(app: EchoApp, protocol: type[WebSocketProtocol] = WebSocketProtocol,
                  **config: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    async with running(app, ws=protocol, **config) as (port, server):
        yield f"{'wss' if config.get('ssl_certfile') else 'ws'}://127.0.0.1:{port}", server


class RawClient:
    """Speaks the wire directly, so it can send what a browser never would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str, path: str = "/echo", headers: dict[str, str] | None = None,
                      answered: bool = True) -> tuple[RawClient, str]:
        """Sends the handshake; its answer's head ("" with ``answered=False``: the
        caller reads it later, with ``read_head``)."""
        host, port = url.removeprefix("ws://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        fields = {"Host": f"{host}:{port}", "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Version": "13",
                  "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        fields.update(headers or {})
        request = f"GET {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in fields.items() if v) + "\r\n"
        writer.write(request.encode())
        client = cls(reader, writer)
        return client, await client.read_head() if answered else ""

    async def read_head(self) -> str:
        return (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)).decode()

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, mask: bool = True,
                   rsv: int = 0) -> None:
        first = (0x80 if fin else 0) | rsv | opcode
        size = len(payload)
        if size < 126:
            head = bytes((first, (0x80 if mask else 0) | size))
        elif size < 65536:
            head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, size)
        else:
            head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, size)
        if mask:
            key = os.urandom(4)
            whole = (key * (size // 4 + 1))[:size]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")
                       ).to_bytes(size, "big")
            head += key
        self.writer.write(head + payload)

    async def send_numbered(self, count: int) -> None:
        """Text messages m0, m1, ... m<count-1>."""
        for i in range(count):
            self.send_frame(TEXT, f"m{i}".encode())
        await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert not second & 0x80, "a server never masks"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def read_close(self) -> tuple[int, str]:
        """Skips data and pings until the close frame; its code and reason."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    async def rest(self) -> bytes:
        """What the server still sends before it closes the connection."""
        return await asyncio.wait_for(self.reader.read(), 5)

    async def at_eof(self) -> bool:
        return await self.rest() == b""


def the_protocol(server: uvicorn.Server) -> WebSocketProtocol:
    """The server's one open WebSocket connection."""
    [protocol] = [c for c in server.server_state.connections
                  if isinstance(c, WebSocketProtocol)]
    return protocol


async def all_gone(server: uvicorn.Server, seconds: float = 5.0) -> bool:
    """Whether every connection of the server ended within ``seconds``."""
    for _ in range(int(seconds * 10)):
        if not server.server_state.connections:
            return True
        await asyncio.sleep(0.1)
    return not server.server_state.connections


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def test_accept_key_is_rfc_6455s() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_a_standard_client_exchanges_every_kind_of_message() -> None:
    app = EchoApp()
    async with serving(app) as (url, _), websockets.connect(
            f"{url}/echo?token=abc&x=1", compression=None, max_size=None,
            subprotocols=["cohort.v1"]) as client:  # type: ignore[list-item]
        assert client.subprotocol == "cohort.v1"
        await client.send("héllo")
        assert await client.recv() == "héllo"
        await client.send(b"\x00\x01\xff")
        assert await client.recv() == b"\x00\x01\xff"
        big = "x" * 300_000  # many reads on the server's side, a 64-bit length back
        await client.send(big)
        assert await client.recv() == big
        await client.send(["frag", "men", "ted"])
        assert await client.recv() == "fragmented"
        await asyncio.wait_for(await client.ping(b"are you there"), 5)
    await asyncio.wait_for(app.done.wait(), 5)
    scope = app.scopes[0]
    assert scope["path"] == "/echo" and scope["query_string"] == b"token=abc&x=1"
    assert (b"sec-websocket-version", b"13") in scope["headers"]
    assert scope["subprotocols"] == ["cohort.v1"] and scope["scheme"] == "ws"
    assert scope["client"][0] == "127.0.0.1"
    assert app.received() == ["héllo", b"\x00\x01\xff", big, "fragmented"]
    assert app.disconnect() == {"type": "websocket.disconnect", "code": 1000, "reason": ""}


@pytest.mark.parametrize(("headers", "status"), [
    ({"Sec-WebSocket-Key": ""}, "400"),
    ({"Sec-WebSocket-Key": base64.b64encode(b"short").decode()}, "400"),
    ({"Sec-WebSocket-Key": "not base64!"}, "400"),
    ({"Sec-WebSocket-Version": "8"}, "426"),
])
async def test_a_bad_handshake_is_answered_with_its_status(headers: dict[str, str],
                                                           status: str) -> None:
    app = EchoApp()
    async with serving(app) as (url, _):
        client, head = await RawClient.connect(url, headers=headers)
        assert head.startswith(f"HTTP/1.1 {status} ")
        if status == "426":
            assert "sec-websocket-version: 13" in head.lower()
        assert b"Sec-WebSocket" in await client.rest() or status == "426"  # the reason
    assert app.scopes == []  # the application never saw it


async def test_a_handshake_answer_carries_the_accept_key() -> None:
    async with serving(EchoApp()) as (url, _):
        key = base64.b64encode(os.urandom(16))
        _, head = await RawClient.connect(url, headers={"Sec-WebSocket-Key": key.decode()})
        assert head.startswith("HTTP/1.1 101 ")
        assert f"sec-websocket-accept: {accept_key(key).decode()}\r\n" in head


async def test_a_close_before_accepting_is_a_403() -> None:
    async with serving(EchoApp()) as (url, _):
        client, head = await RawClient.connect(url, path="/refuse")
        assert head.startswith("HTTP/1.1 403 ")
        assert await client.rest() == b"the WebSocket was refused\n"


TEXT, BINARY, CONT, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


@pytest.mark.parametrize(("frames", "code"), [
    ([(TEXT, b"unmasked", {"mask": False})], 1002),
    ([(TEXT, b"rsv1", {"rsv": 0x40})], 1002),
    ([(0x3, b"opcode 3", {})], 1002),
    ([(CONT, b"no start", {})], 1002),
    ([(TEXT, b"part", {"fin": False}), (TEXT, b"new message", {})], 1002),
    ([(PING, b"p" * 126, {})], 1002),
    ([(PING, b"half", {"fin": False})], 1002),
    ([(CLOSE, b"\x03", {})], 1002),
    ([(CLOSE, close_payload(1005), {})], 1002),
    ([(CLOSE, close_payload(1000, b"\xff"), {})], 1007),
    ([(TEXT, b"\xff\xfe not utf-8", {})], 1007),
    ([(BINARY, b"b" * 2000, {})], 1009),
    ([(TEXT, b"a" * 600, {"fin": False}), (CONT, b"a" * 600, {})], 1009),
])
async def test_a_protocol_error_closes_with_its_code_and_delivers_nothing_of_it(
        frames: list[tuple[int, bytes, dict[str, Any]]], code: int) -> None:
    app = EchoApp()
    async with serving(app, ws_max_size=1024) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(TEXT, b"before")
        assert await client.read_frame() == (TEXT, b"before")
        for opcode, payload, options in frames:
            client.send_frame(opcode, payload, **options)
        assert (await client.read_close())[0] == code
        assert await client.at_eof()
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.received() == ["before"]
    disconnect = app.disconnect()
    assert disconnect is not None and disconnect["code"] == code


async def test_a_peers_close_is_answered_and_reported() -> None:
    app = EchoApp()
    async with serving(app) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(CLOSE, close_payload(4001, b"gone"))
        assert await client.read_close() == (4001, "")
        assert await client.at_eof()
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.disconnect() == {"type": "websocket.disconnect", "code": 4001, "reason": "gone"}
    assert app.received() == []


async def test_the_applications_close_waits_for_the_peers_answer() -> None:
    app = EchoApp()
    async with serving(app) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(TEXT, b"close:4403")
        assert await client.read_close() == (4403, "bye")
        client.send_frame(TEXT, b"after the close")  # dropped: the application is done
        client.send_frame(CLOSE, close_payload(4403))
        assert await client.at_eof()
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.received() == ["close:4403"]
    assert app.disconnect() == {"type": "websocket.disconnect", "code": 4403, "reason": ""}


async def test_a_peer_that_never_answers_a_close_is_dropped_after_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_module, "CLOSE_TIMEOUT_S", 0.2)
    app = EchoApp()
    async with serving(app) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(TEXT, b"close:4000")
        assert (await client.read_close())[0] == 4000
        assert await client.at_eof()  # within read_frame's 5 s, after about 0.2 s
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.disconnect() == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


async def test_keepalive_drops_a_peer_that_does_not_answer_pings() -> None:
    app = EchoApp()
    async with serving(app, ws_ping_interval=0.1, ws_ping_timeout=0.2) as (url, _):
        silent, _ = await RawClient.connect(url)
        assert (await silent.read_frame())[0] == PING
        assert await silent.read_close() == (1011, "keepalive ping timeout")
        assert await silent.at_eof()
        await asyncio.wait_for(app.done.wait(), 5)
        assert app.disconnect() == {"type": "websocket.disconnect", "code": 1011,
                                    "reason": "keepalive ping timeout"}
        app.done.clear()
        # websockets answers pings itself: it stays connected through several.
        async with websockets.connect(f"{url}/echo", ping_interval=None) as client:
            await asyncio.sleep(0.8)
            await client.send("still here")
            assert await client.recv() == "still here"


async def test_frames_sent_before_the_accept_wait_for_it() -> None:
    app = EchoApp()
    async with serving(app) as (url, _):
        client, _ = await RawClient.connect(url, path="/late", answered=False)
        await asyncio.sleep(0.2)
        client.send_frame(TEXT, b"eager")  # before the 101: the application is deciding
        await asyncio.sleep(0.2)
        app.release.set()
        assert (await client.read_head()).startswith("HTTP/1.1 101 ")
        assert await client.read_frame() == (TEXT, b"eager")


async def test_reading_pauses_while_the_application_lags_and_nothing_is_lost() -> None:
    app = EchoApp()
    async with serving(app, ws_max_queue=4) as (url, server):
        client, _ = await RawClient.connect(url, path="/hold")
        await client.send_numbered(200)
        await asyncio.sleep(0.3)
        protocol = the_protocol(server)
        # Parsing stops with reading: what waits is bounded by the queue's size.
        assert protocol.read_paused and len(protocol.events) == 4
        app.release.set()
        for i in range(200):
            assert await client.read_frame() == (TEXT, f"m{i}".encode())
        assert not protocol.read_paused
    assert app.received() == [f"m{i}" for i in range(200)]


async def test_sending_waits_while_the_peer_does_not_read() -> None:
    app = EchoApp()
    async with serving(app) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(TEXT, b"flood:1000000,40")  # 40 MB: far beyond socket buffers
        await asyncio.sleep(0.5)
        stalled_at = sum(1 for e in app.events if e["type"] == "sent")
        assert stalled_at < 40
        for _ in range(40):
            opcode, payload = await client.read_frame()
            assert (opcode, len(payload)) == (BINARY, 1_000_000)
        assert sum(1 for e in app.events if e["type"] == "sent") == 40


async def test_a_peer_that_vanishes_is_reported_and_later_sends_fail() -> None:
    app = EchoApp()
    async with serving(app) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(TEXT, b"hi")
        await client.read_frame()
        client.writer.transport.abort()  # no close frame: the TCP connection just ends
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.disconnect() == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    [error] = app.send_errors
    assert isinstance(error, OSError)  # uvicorn's ClientDisconnected, as its own protocols


async def test_a_server_shutdown_closes_with_1012() -> None:
    app = EchoApp()
    async with serving(app) as (url, server):
        client, _ = await RawClient.connect(url)
        client.send_frame(TEXT, b"hi")
        await client.read_frame()
        server.should_exit = True
        assert (await client.read_close())[0] == 1012
        await asyncio.wait_for(app.done.wait(), 5)
        assert not server.server_state.connections
    assert app.disconnect() == {"type": "websocket.disconnect", "code": 1012, "reason": ""}
    [error] = app.send_errors
    assert isinstance(error, OSError)


async def test_an_application_that_fails_closes_with_1011() -> None:
    async with serving(EchoApp()) as (url, _):
        client, head = await RawClient.connect(url, path="/boom")
        assert head.startswith("HTTP/1.1 101 ")
        assert (await client.read_close())[0] == 1011
        assert await client.at_eof()


async def test_an_application_that_returns_closes_with_1000() -> None:
    async with serving(EchoApp()) as (url, _):
        client, _ = await RawClient.connect(url, path="/return")
        assert (await client.read_close())[0] == 1000
        assert await client.at_eof()


def test_the_gateway_runs_this_protocol_unless_told_otherwise() -> None:
    assert uvicorn_config(Settings(secret="s")).ws is WebSocketProtocol
    fallback = uvicorn_config(Settings(secret="s", ws_protocol="uvicorn"))
    assert fallback.ws == "websockets-sansio"


async def test_a_client_may_send_a_64_bit_length() -> None:
    app = EchoApp()
    async with serving(app, ws_max_size=1 << 20) as (url, _):
        client, _ = await RawClient.connect(url)
        client.send_frame(BINARY, b"z" * 70_000)  # over 65,535: the 8-byte length form
        assert await client.read_frame() == (BINARY, b"z" * 70_000)


async def test_a_client_that_pings_and_never_reads_cannot_grow_the_buffer() -> None:
    app = EchoApp()
    async with serving(app) as (url, server):
        client, _ = await RawClient.connect(url)
        client.writer.transport.pause_reading()  # this client reads nothing more
        for _ in range(100):
            for _ in range(1000):  # 100,000 pings of 125 bytes: 12.5 MB of pongs
                client.send_frame(PING, b"p" * 125)
            await client.writer.drain()
        await asyncio.sleep(0.3)
        protocol = the_protocol(server)
        assert protocol.transport.get_write_buffer_size() < 1_000_000
        client.writer.transport.abort()


async def test_closing_while_reading_is_paused_still_reads_the_answer() -> None:
    app = EchoApp()
    async with serving(app, ws_max_queue=4) as (url, _):
        client, _ = await RawClient.connect(url, path="/closer")
        await client.send_numbered(50)
        await asyncio.sleep(0.2)
        app.release.set()
        code, reason = await client.read_close()
        # Cut to 123 bytes at a character: still UTF-8 (read_close decoded it).
        assert code == 4000 and reason == "é" * 61
        client.send_frame(CLOSE, close_payload(4000))
        # The server reads the answer behind the unread messages and closes at once,
        # not at the 10 s close timeout.
        assert await asyncio.wait_for(client.rest(), 3) == b""


@pytest.mark.parametrize("ending", ["keepalive", "keepalive, reading paused", "shutdown"])
async def test_a_peer_that_reads_nothing_is_cut_off(ending: str) -> None:
    """close() alone waits for the write buffer to drain: forever, for this peer."""
    app = EchoApp()
    keepalive = ({"ws_ping_interval": 0.2, "ws_ping_timeout": 0.3, "ws_max_queue": 4}
                 if ending.startswith("keepalive") else {})
    async with serving(app, **keepalive) as (url, server):
        client, _ = await RawClient.connect(url)
        client.writer.transport.pause_reading()
        client.send_frame(TEXT, b"flood:1000000,40")  # the application blocks in send
        if ending == "keepalive, reading paused":  # its queue fills: reading pauses too
            await client.send_numbered(20)
        await asyncio.sleep(0.1)
        assert sum(1 for e in app.events if e["type"] == "sent") < 40
        if ending == "shutdown":
            server.should_exit = True
        await asyncio.wait_for(app.done.wait(), 5)
        assert await all_gone(server)
        assert sum(1 for e in app.events if e["type"] == "sent") < 40
        client.writer.transport.abort()


async def test_pings_without_a_timeout_do_not_multiply() -> None:
    async with serving(EchoApp(), ws_ping_interval=0.05, ws_ping_timeout=None) as (url, _):
        client, _ = await RawClient.connect(url)
        pings = 0
        deadline = asyncio.get_running_loop().time() + 0.6
        while asyncio.get_running_loop().time() < deadline:
            opcode, payload = await client.read_frame()
            if opcode == PING:
                pings += 1
                client.send_frame(0xA, payload)  # answered at once
        assert 6 <= pings <= 14  # one every 50 ms, not a chain more per answer


@pytest.mark.parametrize("path", ["/badsub", "/badheader"])
async def test_accepting_with_what_the_client_cannot_take_is_a_500(path: str) -> None:
    async with serving(EchoApp()) as (url, _):
        _, head = await RawClient.connect(url, path=path)
        assert head.startswith("HTTP/1.1 500 ") and "x-b" not in head


async def test_what_comes_before_the_accept_is_buffered_boundedly() -> None:
    app = EchoApp()
    async with serving(app, ws_max_size=1024) as (url, server):
        client, _ = await RawClient.connect(url, path="/late", answered=False)
        await asyncio.sleep(0.1)
        for i in range(20_000):  # about 2 MB of small frames, before any answer
            client.send_frame(TEXT, f"early {i:05} ".encode() * 8)
        await asyncio.sleep(0.5)
        protocol = the_protocol(server)
        # Reading paused past ws_max_size: one read more at most, not the 2 MB.
        assert protocol.read_paused and len(protocol.buffer) < 600_000
        app.release.set()
        await client.read_head()
        for i in range(20_000):
            assert await client.read_frame() == (TEXT, f"early {i:05} ".encode() * 8)


async def test_reading_resumes_after_the_accept_when_the_first_receive_came_late() -> None:
    """More than ws_max_size before the accept pauses reading; few messages in it must
    not leave it paused once they are parsed."""
    app = EchoApp()
    async with serving(app, ws_max_size=1024) as (url, _):
        client, _ = await RawClient.connect(url, path="/later", answered=False)
        await asyncio.sleep(0.1)
        client.send_frame(TEXT, b"a" * 700)
        client.send_frame(TEXT, b"b" * 700)
        await asyncio.sleep(0.2)
        app.release.set()
        assert (await client.read_head()).startswith("HTTP/1.1 101 ")
        assert await client.read_frame() == (TEXT, b"a" * 700)
        assert await client.read_frame() == (TEXT, b"b" * 700)
        client.send_frame(TEXT, b"and after")
        assert await client.read_frame() == (TEXT, b"and after")


async def test_a_peer_that_ends_its_side_is_gone_even_with_unread_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_module, "CLOSE_TIMEOUT_S", 0.3)
    app = EchoApp()
    async with serving(app) as (url, server):
        client, _ = await RawClient.connect(url)
        client.writer.transport.pause_reading()
        client.send_frame(TEXT, b"flood:1000000,40")  # the application blocks in send
        await asyncio.sleep(0.2)
        client.writer.write_eof()  # a FIN, no close frame, and nothing read
        await asyncio.wait_for(app.done.wait(), 5)  # not keepalive's 40 s
        assert await all_gone(server)
        client.writer.transport.abort()
    # It ended in the middle of its flood: its send failed (the peer was gone).
    assert sum(1 for e in app.events if e["type"] == "sent") < 40


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (Debian's openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("front", [False, True], ids=["via-uvicorn-http", "via-front"])
async def test_it_works_over_tls(self_signed: tuple[Path, Path], front: bool,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind uvicorn's TLS the transport differs (buffering, writelines); wss in the scope.
    Reached through uvicorn's HTTP protocol or straight from the gateway's front one."""
    if front:  # the upgrade must not pass through uvicorn's HTTP protocol
        monkeypatch.setattr(front_module, "HttpProtocol", None)
    cert, key = self_signed
    context = ssl.create_default_context(cafile=str(cert))
    app = EchoApp()
    extra: dict[str, Any] = {"http": FrontProtocol} if front else {}
    async with serving(app, ssl_certfile=str(cert), ssl_keyfile=str(key), **extra) as (url, _):
        assert url.startswith("wss://")
        async with websockets.connect(f"{url}/echo", ssl=context, max_size=None,
                                      compression=None) as client:
            big = "y" * 300_000
            await client.send(big)
            assert await client.recv() == big
            await client.send("small")
            assert await client.recv() == "small"
        await asyncio.wait_for(app.done.wait(), 5)
    assert app.scopes[0]["scheme"] == "wss"
    assert app.received() == [big, "small"]


def test_a_text_sent_to_many_is_encoded_once() -> None:
    frame = '{"type":"update","data":"Grüße, 你好"}' * 100
    first = ws_module.utf8(frame)
    assert first == frame.encode()
    assert ws_module.utf8(frame) is first  # the next recipient: the same bytes
    other = "".join(["é"] * 3)  # equal text, another object: encoded for itself
    assert ws_module.utf8(other) == "ééé".encode() and ws_module.utf8(frame) == first


class WriteLog:
    """A real transport, with the writes made through it noted (each as its parts)."""

    def __init__(self, transport: Any, log: list[list[bytes]]) -> None:
        self._transport, self._log = transport, log

    def write(self, data: bytes) -> None:
        self._log.append([bytes(data)])
        self._transport.write(data)

    def writelines(self, parts: Any) -> None:
        parts = [bytes(p) for p in parts]
        self._log.append(parts)
        self._transport.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.mark.parametrize("path", ["/greet", "/hold"])
async def test_the_handshake_answer_leaves_with_the_first_frame_or_alone(path: str) -> None:
    writes: list[list[bytes]] = []

    class Logged(WebSocketProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(WriteLog(transport, writes))

    app = EchoApp()
    async with serving(app, protocol=Logged) as (url, _):
        client, head = await RawClient.connect(url, path=path)
        assert head.startswith("HTTP/1.1 101 ")
        if path == "/greet":
            assert await client.read_frame() == (TEXT, b"hello")
            # one write: the answer and the frame (a join storm's 101 and state)
            assert len(writes) == 1 and writes[0][0].startswith(b"HTTP/1.1 101 ")
            assert b"".join(writes[0]).endswith(b"hello")
        else:  # nothing sent at once: the answer alone, at the end of the loop turn
            assert len(writes) == 1 and b"".join(writes[0]).endswith(b"\r\n\r\n")
            app.release.set()
        client.send_frame(CLOSE, close_payload(1000))
        assert await client.read_close() == (1000, "")
