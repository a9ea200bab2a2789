"""The participant channel is served in front of the litestar application, straight
on the ASGI calls: what reaches it, what goes past it, and how it refuses and fails.
(Channels that do their work are tested end to end against real gateways.)"""

from __future__ import annotations

import asyncio
import types
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest

from gateway.app import create_asgi
from gateway.channel import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL_ERROR,
    ChannelSocket,
    query_params,
    with_channels,
)
from gateway.tokens import TokenSigner
from services.settings import Settings


class Peer:
    """The server's side of one ASGI connection: scripted messages in, sent ones kept."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0) if self.incoming else {"type": "websocket.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(dict(message))


class InnerApp:
    """Stands in for the litestar application: records what was passed on to it."""

    def __init__(self, signer: Any) -> None:
        self.state = types.SimpleNamespace(
            settings=Settings(secret="s", admin_token="t"), hub=None, signer=signer)
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append((scope["type"], scope.get("path", "")))


def ws_scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {"type": "websocket", "path": path, "query_string": query}


async def test_everything_but_participant_channels_goes_to_the_application() -> None:
    inner = InnerApp(TokenSigner("s", 60))
    app = with_channels(inner)
    peer = Peer()
    await app({"type": "lifespan"}, peer.receive, peer.send)
    await app({"type": "http", "path": "/ws/batch/b1"}, peer.receive, peer.send)
    near_misses = ["/ws/console/b1", "/ws/batch", "/ws/batch/", "/ws/batchX/b1",
                   "/ws/batch/b1/extra", "/x/ws/batch/b1"]
    for path in near_misses:
        await app(ws_scope(path), peer.receive, peer.send)
    assert inner.calls == [("lifespan", ""), ("http", "/ws/batch/b1"),
                           *(("websocket", path) for path in near_misses)]
    assert peer.sent == []


@pytest.mark.parametrize("path", ["/ws/batch/b1", "/ws/batch/b1/", "//ws//batch/b1"])
async def test_channel_paths_are_read_as_the_router_read_them(path: str) -> None:
    signer = TokenSigner("s", 60)
    token = signer.issue("run1", "other").encode()
    peer = Peer({"type": "websocket.connect"})
    inner = InnerApp(signer)
    await with_channels(inner)(ws_scope(path, b"token=" + token), peer.receive, peer.send)
    assert inner.calls == []  # served as the channel of batch "b1" (the token is not)
    assert msgspec.json.decode(peer.sent[1]["text"])["message"] == (
        "this token is for another batch")


def test_the_first_of_repeated_query_keys_counts() -> None:
    socket = ChannelSocket(ws_scope("/ws/batch/b1", b"token=A&token=B&since=&x=%2B"),
                           Peer().receive, Peer().send)
    assert socket.query == {"token": "A", "since": "", "x": "+"}


@pytest.mark.parametrize("query", [
    b"token=abc-_.~x&since=1700000000000-3", b"token=A&token=B", b"a&b=&c=1", b"",
    b"&&x=y&", b"t=a=b", b"=v&k", b"x=%41+b&x=2", b"n=caf\xe9", b"a=%zz"])
def test_query_parameters_read_as_parse_qsl_reads_them(query: bytes) -> None:
    # The quick path (nothing to unquote) must agree with the standard reading.
    expected: dict[str, str] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        expected.setdefault(key, value)
    assert query_params(query) == expected


async def test_the_server_application_passes_http_to_litestar() -> None:
    app = create_asgi(Settings(secret="s", admin_token="t"))
    peer = Peer({"type": "http.request", "body": b"", "more_body": False})
    await app({"type": "http", "method": "GET", "path": "/livez", "raw_path": b"/livez",
               "root_path": "", "query_string": b"", "headers": [], "scheme": "http",
               "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "asgi": {"version": "3.0"},
               "http_version": "1.1", "app": None}, peer.receive, peer.send)
    assert peer.sent[0]["status"] == 200
    assert msgspec.json.decode(peer.sent[1]["body"]) == {"status": "ok"}


async def test_a_bad_token_is_refused_with_a_code_and_4403() -> None:
    inner = InnerApp(TokenSigner("s", 60))
    peer = Peer({"type": "websocket.connect"})
    await with_channels(inner)(ws_scope("/ws/batch/b1", b"token=garbage"), peer.receive,
                               peer.send)
    assert inner.calls == []
    accept, error, close = peer.sent
    assert accept == {"type": "websocket.accept"}
    assert msgspec.json.decode(error["text"])["code"] == "forbidden"
    assert (close["type"], close["code"], close["reason"]) == (
        "websocket.close", CLOSE_FORBIDDEN, "forbidden")


async def test_a_token_for_another_batch_is_refused() -> None:
    signer = TokenSigner("s", 60)
    token = signer.issue("run1", "other").encode()
    peer = Peer({"type": "websocket.connect"})
    await with_channels(InnerApp(signer))(ws_scope("/ws/batch/b1", b"token=" + token),
                                          peer.receive, peer.send)
    assert msgspec.json.decode(peer.sent[1]["text"])["message"] == (
        "this token is for another batch")
    assert peer.sent[2]["code"] == CLOSE_FORBIDDEN


async def test_a_client_gone_before_the_handshake_gets_nothing() -> None:
    peer = Peer({"type": "websocket.disconnect", "code": 1006})
    await with_channels(InnerApp(TokenSigner("s", 60)))(ws_scope("/ws/batch/b1"),
                                                        peer.receive, peer.send)
    assert peer.sent == []


async def test_a_failing_channel_is_logged_and_closed_with_1011(caplog: Any) -> None:
    class BrokenSigner:
        def verify(self, token: str) -> None:
            raise RuntimeError("broken on purpose")

    peer = Peer({"type": "websocket.connect"})
    await with_channels(InnerApp(BrokenSigner()))(ws_scope("/ws/batch/b1", b"token=x"),
                                                  peer.receive, peer.send)
    assert peer.sent[-1] == {"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR,
                             "reason": "internal_error"}
    assert any(r.message == "channel failed" and r.exc_info for r in caplog.records)


async def test_a_client_gone_mid_write_is_logged_without_a_traceback(caplog: Any) -> None:
    from uvicorn.protocols.utils import ClientDisconnected

    class GonePeer(Peer):
        async def send(self, message: dict[str, Any]) -> None:
            raise ClientDisconnected()

    peer = GonePeer({"type": "websocket.connect"})
    caplog.set_level("INFO", logger="cohort.gateway.channel")
    await with_channels(InnerApp(TokenSigner("s", 60)))(ws_scope("/ws/batch/b1"),
                                                        peer.receive, peer.send)
    lost = [r for r in caplog.records if r.message == "channel lost"]
    assert lost and lost[0].levelname == "INFO" and not lost[0].exc_info
    assert not any(r.message == "channel failed" for r in caplog.records)


class BuggyHub:
    """Just enough of a hub to open a channel, whose command path has a bug."""

    gateway_id = "gw-test"

    def __init__(self) -> None:
        self.detached = False

    async def open_view(self, batch_id: str) -> Any:
        return types.SimpleNamespace(state=types.SimpleNamespace(closed=False))

    def attach(self, conn: Any, since: str | None) -> None:
        conn.scopes.add("batch_session")

    def note_seen(self, *args: Any, **kwargs: Any) -> None:
        return None

    def detach(self, conn: Any) -> None:
        self.detached = True

    def submit(self, command: Any) -> None:
        raise RuntimeError("a bug on purpose")


async def test_a_bug_inside_an_open_channel_is_logged_and_closes_it_with_1011(
        caplog: Any) -> None:
    signer = TokenSigner("s", 60)
    inner = InnerApp(signer)
    inner.state.hub = hub = BuggyHub()
    patch = {"type": "patch", "id": "p1", "scope": "batch_session",
             "ops": [{"op": "add", "path": "/a", "value": 1}]}
    peer = Peer({"type": "websocket.connect"},
                {"type": "websocket.receive", "text": msgspec.json.encode(patch).decode()})
    token = signer.issue("run1", "b1").encode()
    await with_channels(inner)(ws_scope("/ws/batch/b1", b"token=" + token), peer.receive,
                               peer.send)
    assert peer.sent[-1] == {"type": "websocket.close", "code": CLOSE_INTERNAL_ERROR,
                             "reason": "internal_error"}
    failed = [r for r in caplog.records if r.message == "channel failed"]
    assert failed and "a bug on purpose" in str(failed[0].exc_info[1])
    assert hub.detached


class GoneAfterOpenHub(BuggyHub):
    """A hub whose channel has a frame to send at once; commands are fine."""

    def attach(self, conn: Any, since: str | None) -> None:
        conn.scopes.add("batch_session")
        conn.push('{"type":"pong"}')

    def submit(self, command: Any) -> None:
        return None


class LostPeer(Peer):
    """Accepts, then every frame's write fails with ``error``; never sends a frame."""

    def __init__(self, error: Exception) -> None:
        super().__init__({"type": "websocket.connect"})
        self.error = error

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        await asyncio.Event().wait()  # the client stays silent
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            raise self.error
        self.sent.append(dict(message))


def lost_client_errors() -> list[Exception]:
    from uvicorn.protocols.utils import ClientDisconnected

    return [ClientDisconnected(), RuntimeError(
        "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.")]


@pytest.mark.parametrize("error", lost_client_errors(), ids=["disconnected", "closed"])
async def test_a_client_lost_inside_an_open_channel_is_no_failure(
        caplog: Any, error: Exception) -> None:
    signer = TokenSigner("s", 60)
    inner = InnerApp(signer)
    inner.state.hub = hub = GoneAfterOpenHub()
    peer = LostPeer(error)
    token = signer.issue("run1", "b1").encode()
    async with asyncio.timeout(5):  # the channel ends when its sender's write fails
        await with_channels(inner)(ws_scope("/ws/batch/b1", b"token=" + token),
                                   peer.receive, peer.send)
    assert hub.detached
    assert not any(r.message == "channel failed" for r in caplog.records)
    assert [m["type"] for m in peer.sent] == ["websocket.accept"]
