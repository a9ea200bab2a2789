"""A real uvicorn server in the test's own event loop, for tests of the gateway's
protocol classes (gateway/websocket.py, gateway/front.py) under their ASGI apps."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


async def serve_lifespan(receive: Any, send: Any) -> None:
    """A test app's whole lifespan: start, then wait for the shutdown."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


@contextlib.asynccontextmanager
async def running(app: Any, **config: Any) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    """uvicorn serving ``app`` on a free local port (``config``: its settings, e.g.
    ``ws=`` and ``http=`` protocol classes); its port and server, stopped after."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None,
        log_level="warning", **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield port, server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
