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
import re
from typing import Any

try:  # what uvicorn's http="auto" picks
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as HttpProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as HttpProtocol  # type: ignore[assignment]


# What a request head must look like to be taken here; anything else (whitespace
# before a colon, folded lines, control characters, a body) is left to uvicorn's parser,
# which refuses or serves it as it always did. Whole-head scans in C, not a loop over
# lines: on a browser's dozen headers, 12 µs a join instead of 20.
REQUEST_LINE = re.compile(rb"GET [^\x00-\x20\x7f]+ HTTP/1\.1")
PLAIN = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))  # besides CR LF
LINE_NOT_A_HEADER = re.compile(rb"\r\n(?![!#$%&'*+\-.^_`|~0-9a-z]+:)")  # folded, " :"
HEADERS_OF_NOTE = re.compile(
    rb"\r\n(upgrade|connection|content-length|transfer-encoding):[ \t]*([^\r\n]*)")


def is_websocket_upgrade(data: bytes) -> bool:
    """Whether ``data`` holds a whole, plain GET request head asking for a WebSocket, as
    uvicorn decides it: ``Upgrade: websocket`` with ``upgrade`` among the Connection
    tokens (the WebSocket protocol then checks the rest and answers 400 or 426)."""
    if not data.startswith(b"GET "):
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[:end].lower()
    line_end = head.find(b"\r\n")
    if (not REQUEST_LINE.fullmatch(data[:line_end if line_end >= 0 else end])
            or head.translate(None, PLAIN).replace(b"\r\n", b"")  # a control character
            or LINE_NOT_A_HEADER.search(head)):
        return False
    upgrade = connection = False
    for name, value in HEADERS_OF_NOTE.findall(head):  # the last of repeated ones counts
        value = value.rstrip(b" \t")
        if name == b"upgrade":
            upgrade = value == b"websocket"
        elif name == b"connection":
            connection = b"upgrade" in (token.strip() for token in value.split(b","))
        else:
            return False  # a body: uvicorn's parser reads it
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
        ws_class = self.config.ws_protocol_class
        # uvicorn's concurrency limit is judged by its HTTP protocol: leave it to it.
        if (ws_class is not None and self.config.limit_concurrency is None
                and is_websocket_upgrade(data)):
            protocol_class = ws_class
        protocol = protocol_class(config=self.config,  # type: ignore[call-arg]
                                  server_state=self.server_state, app_state=self.app_state,
                                  _loop=self.loop)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(data)
