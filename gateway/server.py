"""Run one gateway process under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_asgi
from gateway.front import FrontProtocol
from gateway.websocket import WebSocketProtocol
from services.gctune import tune_gc
from services.settings import Settings


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    ours = settings.ws_protocol == "cohort"
    return uvicorn.Config(
        create_asgi(settings),
        host=settings.host,
        port=settings.port,
        # Our own RFC 6455 protocol: uvicorn's re-parse every handshake in Python and
        # pass each frame through several layers (gateway/websocket.py). Of uvicorn's,
        # websockets-sansio measured fastest for fan-out on this machine class.
        ws=WebSocketProtocol if ours else "websockets-sansio",
        # With ours, a connection's first request goes to it directly when it is an
        # upgrade, past uvicorn's HTTP protocol (gateway/front.py).
        http=FrontProtocol if ours else "auto",
        # Our own size check answers with an error frame; this only stops abuse.
        ws_max_size=max(4 * settings.max_message_bytes, 1024 * 1024),
        # Compression is per connection: it would turn "encode once, write the same
        # bytes to every subscriber" into a deflate per recipient.
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        # Our JSON logging (services.logs) is set up by the CLI; keep uvicorn's off it.
        log_config=None,
        access_log=False,
        lifespan="on",
    )


def run(settings: Settings) -> None:
    tune_gc()
    config = uvicorn_config(settings)
    # uvicorn logs every WebSocket handshake at INFO with its query string: a
    # participant's token in the log, and a log line per open of a join storm.
    # Its warnings and errors still come through; "gateway up" says it started.
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.setLevel(max(logging.WARNING, uvicorn_log.level))
    uvicorn.Server(config).run()
