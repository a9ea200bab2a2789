"""Run one gateway process under uvicorn."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from services.settings import Settings


def run(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # websockets-sansio measured fastest for fan-out on this machine class.
        ws="websockets-sansio",
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
