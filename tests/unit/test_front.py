"""The gateway's first protocol: upgrades straight to our WebSocket protocol, anything
else to uvicorn's HTTP protocol (real uvicorn, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import front
from gateway.front import FrontProtocol, is_websocket_upgrade
from gateway.server import uvicorn_config
from gateway.websocket import WebSocketProtocol
from services.settings import Settings
from tests.asgi_server import running, serve_lifespan


class App:
    """HTTP: answers the path it was asked; WebSocket: echoes. Notes each scope type."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        self.scopes.append(scope["type"])
        if scope["type"] == "http":
            body = scope["path"].encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (event := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": event["text"]})


@contextlib.asynccontextmanager
async def serving(app: App, **config: Any) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    async with running(app, http=FrontProtocol, ws=WebSocketProtocol, **config) as started:
        yield started


class CountedHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol, counting the connections handed to it."""

    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountedHttp.made += 1
        super().__init__(*args, **kwargs)


@pytest.fixture(autouse=True)
def counted_http(monkeypatch: pytest.MonkeyPatch) -> None:
    CountedHttp.made = 0
    monkeypatch.setattr(front, "HttpProtocol", CountedHttp)


def protocols(server: uvicorn.Server) -> list[str]:
    return sorted(type(c).__name__ for c in server.server_state.connections)


def request(path: str, *headers: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers)
            + "\r\n").encode()


UPGRADE = ("Upgrade: websocket", "Connection: keep-alive, Upgrade",
           "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")


def test_what_counts_as_an_upgrade_is_what_uvicorn_counts() -> None:
    assert is_websocket_upgrade(request("/ws", *UPGRADE))
    assert is_websocket_upgrade(request("/ws", "UPGRADE: WebSocket", "connection: upgrade"))
    assert not is_websocket_upgrade(request("/ws", "Upgrade: websocket"))  # no Connection
    assert not is_websocket_upgrade(request("/ws", "Connection: upgrade"))
    assert not is_websocket_upgrade(request("/ws", *UPGRADE)[:-2])  # the head not complete
    assert not is_websocket_upgrade(request("/ws", *UPGRADE).replace(b"GET", b"PUT"))
    # Whatever uvicorn's parser might read otherwise is left to it:
    for odd in (("Upgrade : websocket", "Connection: upgrade"),  # space before a colon
                ("X-A: b", " connection: upgrade", "Upgrade: websocket"),  # a folded line
                (*UPGRADE, "Content-Length: 2"), (*UPGRADE, "Transfer-Encoding: chunked"),
                (*UPGRADE, "X-A: a\x01b"),  # a control character
                (*UPGRADE, "X-A: a\nX-B: b")):  # a line feed without its CR
        assert not is_websocket_upgrade(request("/ws", *odd)), odd
    assert not is_websocket_upgrade(request("/ws", *UPGRADE).replace(b"1.1", b"1.0"))
    assert not is_websocket_upgrade(request("/w s", *UPGRADE))


async def test_http_requests_keep_their_connection_through_uvicorns_protocol() -> None:
    app = App()
    async with serving(app) as (port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path in ("/a", "/b"):  # keep-alive: both on one connection
            writer.write(request(path))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(2) == path.encode()
        assert protocols(server) == ["CountedHttp"] and CountedHttp.made == 1
        writer.close()
    assert app.scopes == ["http", "http"]


async def test_an_upgrade_goes_straight_to_the_websocket_protocol() -> None:
    app = App()
    async with serving(app) as (port, server):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            assert protocols(server) == ["WebSocketProtocol"]
    assert CountedHttp.made == 0  # no HTTP protocol set up for it
    assert app.scopes == ["websocket"]


async def test_an_upgrade_whose_head_comes_in_pieces_still_opens() -> None:
    # The first bytes are no whole head: uvicorn's HTTP protocol reads it, then hands
    # the connection to the same WebSocket protocol, as before.
    app = App()
    async with serving(app) as (port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        whole = request("/ws", *UPGRADE)
        writer.write(whole[:20])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(whole[20:])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert protocols(server) == ["WebSocketProtocol"] and CountedHttp.made == 1
        writer.close()


@pytest.mark.parametrize(("swap", "status"), [
    (("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), b"426"),
    (("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key: short"), b"400")])
async def test_a_bad_handshake_taken_by_the_front_gets_its_status(
        swap: tuple[str, str], status: bytes) -> None:
    # Bad input gets a code and changes nothing: the application never sees it.
    app = App()
    async with serving(app) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("/ws", *(swap[1] if h == swap[0] else h for h in UPGRADE)))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.split(b" ")[1] == status
        writer.close()
    assert CountedHttp.made == 0 and app.scopes == []


async def test_an_upgrade_with_a_body_is_left_to_uvicorn() -> None:
    app = App()
    async with serving(app) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("/ws", *UPGRADE, "Content-Length: 2") + b"hi")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert CountedHttp.made == 1
        writer.close()


async def test_a_client_that_leaves_before_speaking_is_forgotten() -> None:
    app = App()
    async with serving(app) as (port, server):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        for _ in range(100):
            if not server.server_state.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.server_state.connections
    assert CountedHttp.made == 0 and app.scopes == []


async def test_a_server_stops_promptly_with_a_client_that_never_spoke() -> None:
    app = App()
    async with serving(app) as (port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(50):
            if protocols(server) == ["FrontProtocol"]:
                break
            await asyncio.sleep(0.01)
        assert protocols(server) == ["FrontProtocol"]
        started = time.monotonic()
    assert time.monotonic() - started < 2  # closed by the shutdown, not waited for
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize("ws_protocol", ["cohort", "uvicorn"])
def test_the_gateway_puts_it_first_with_its_own_websocket_protocol(ws_protocol: str) -> None:
    config = uvicorn_config(Settings(secret="s", ws_protocol=ws_protocol))
    assert (config.http is FrontProtocol) == (ws_protocol == "cohort")
