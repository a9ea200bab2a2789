"""The load generator's own client pieces: the shared decode of frames, the lean socket's
handshake and deadline (over real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from services.loadtest.clients import FrameCache, LeanSocket, LoadParticipant, Ticket
from services.loadtest.stats import Recorder


def state_frame(version: int, fill: str) -> bytes:
    return msgspec.json.encode({"type": "state", "scope": "batch_session", "version": version,
                                "pos": "1-0", "data": {"fill": fill}})


def test_a_state_received_by_many_is_decoded_once() -> None:
    cache = FrameCache()
    first = cache.state(state_frame(3, "x" * 1000))
    again = cache.state(state_frame(3, "x" * 1000))  # another subscriber's equal bytes
    assert again is first and cache.misses == 1 and cache.hits == 1
    # Same length and head, another ending: decoded for itself, never mixed up.
    other = cache.state(state_frame(3, "x" * 999 + "y"))
    assert other is not first and other["data"]["fill"].endswith("y")
    assert first["data"]["fill"] == "x" * 1000 and cache.misses == 2


def test_only_the_batch_sessions_state_is_shared_between_participants() -> None:
    # A group session's data are patched in place by each member: never shared.
    cache, rec = FrameCache(), Recorder("test", quiet=True)
    ticket = Ticket("ws://127.0.0.1:1/ws/batch/b?token=t", "run", "t", "http://127.0.0.1:1")
    one, two = (LoadParticipant(ticket, rec, cache, index=i) for i in (1, 2))
    batch = state_frame(2, "shared")
    group = msgspec.json.encode({"type": "state", "scope": "group_session:g1", "version": 1,
                                 "pos": "1-0", "data": {"m": []}})
    for p in (one, two):
        p._on_frame(batch)
        p._on_frame(group)
    assert one.data is two.data and one.data == {"fill": "shared"}
    assert one.group_session["data"] == two.group_session["data"] == {"m": []}
    assert one.group_session["data"] is not two.group_session["data"]
    assert rec.errors == 0


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/batch/b?token=t"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_refused_handshake_raises_with_the_answer(serve: Any) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /ws/batch/b?token=t HTTP/1.1\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    url = await serve(refuse)
    with pytest.raises(ConnectionError, match="403 Forbidden"):
        await LeanSocket(lambda raw: None).open(url, timeout=5)


async def test_an_unanswered_handshake_ends_at_the_deadline(serve: Any) -> None:
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # until the client gives up
        closed.set()

    url = await serve(silent)
    sock = LeanSocket(lambda raw: None)
    with pytest.raises(TimeoutError):
        await sock.open(url, timeout=0.3)
    await asyncio.wait_for(closed.wait(), 5)  # the socket was not left open
    assert sock.handshake.done()


async def test_a_url_without_a_path_asks_for_the_root(serve: Any) -> None:
    asked: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    url = (await serve(answer)).split("/ws/")[0] + "?token=t"
    with pytest.raises(ConnectionError, match="404"):
        await LeanSocket(lambda raw: None).open(url, timeout=5)
    assert asked == [b"GET /?token=t HTTP/1.1"]
