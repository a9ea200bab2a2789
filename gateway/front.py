"""The first protocol of every gateway connection (uvicorn's ``http=``).

It waits for the connection's first bytes. A complete WebSocket upgrade request goes
straight to our WebSocket protocol (gateway/websocket.py); anything else goes to
uvicorn's HTTP protocol, which then serves the connection as it always did. Through
uvicorn's HTTP protocol every upgrade cost a parser and request state set up for
HTTP, then the request serialized again for the WebSocket protocol to parse: about a
tenth of the gateway's work in a join storm.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.websocket import WebSocketProtocol

try:  # what uvicorn's http="auto" picks
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as HttpProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as HttpProtocol  # type: ignore[assignment]


def is_websocket_upgrade(data: bytes) -> bool:
    """Whether ``data`` holds a whole GET request head asking for a WebSocket, as
    uvicorn decides it: ``Upgrade: websocket`` with ``upgrade`` among the Connection
    tokens (the WebSocket protocol then checks the rest and answers 400 or 426)."""
    if not data.startswith(b"GET "):
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    upgrade = connection = False
    for line in data[:end].lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip()
        if name == b"upgrade":
            upgrade = value.strip() == b"websocket"
        elif name == b"connection":
            connection = b"upgrade" in (token.strip() for token in value.split(b","))
    return upgrade and connection


class FrontProtocol(asyncio.Protocol):
    """Hands the connection on at its first bytes (see the module's docstring)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Counted as open, so a server shutdown reaches a client that never spoke.
        self.server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)

    def shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.server_state.connections.discard(self)
        protocol_class: type[asyncio.Protocol] = HttpProtocol
        # uvicorn's concurrency limit is judged by its HTTP protocol: leave it to it.
        if self.config.limit_concurrency is None and is_websocket_upgrade(data):
            protocol_class = WebSocketProtocol
        protocol = protocol_class(config=self.config,  # type: ignore[call-arg]
                                  server_state=self.server_state, app_state=self.app_state,
                                  _loop=self.loop)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(data)
