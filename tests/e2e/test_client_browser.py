"""The example study client_js/examples/three-session-types in real browsers.

Three participants, each in its own headless Chromium (its own profile, so its
own cookies), run the example study against a stack of two gateways: the first
page stores a name in the study session, the second shows a group chat (group
session, groups of at most 2) and a batch chat (batch session). Two of them
share a group and read each other's group chat; the third is in a group of its
own and reads only the batch chat; all three read the batch chat.

One participant reaches its gateway through a TCP proxy the test controls. The
proxy drops every connection and refuses new ones for a few seconds, then
accepts again: the page reconnects by itself, resumes where it was, and shows
what it missed without a reload; what it wrote while offline reaches the
others. Screenshots go to tests/artifacts/client_browser/ (gitignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.browser_support.browser import (
    Chromium,
    require_browser,
)
from tests.e2e.stack import REPO, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

EXAMPLE = REPO / "client_js" / "examples" / "three-session-types"
ARTIFACTS = REPO / "tests" / "artifacts" / "client_browser"
CUT_SECONDS = 4.0


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of one gateway, for cutting the line.

    ``cut()`` aborts every connection through it and stops listening, so new
    connections are refused; ``restore()`` listens again on the same port.
    """

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host,
                                                                 self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections.update((writer, up_writer))
        pipes = [asyncio.ensure_future(self._pipe(reader, up_writer)),
                 asyncio.ensure_future(self._pipe(up_reader, writer))]
        for task in pipes:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            self.connections.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.connections):
            writer.transport.abort()
        self.connections.clear()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()
        for task in list(self.tasks):
            task.cancel()


def example_zip() -> bytes:
    """The example study folder as a zip (study.toml at the top)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(EXAMPLE.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(EXAMPLE).as_posix())
    return buffer.getvalue()


async def publish_example(stack: Stack) -> list[str]:
    """Imports the example study, makes a batch and three personal links; their codes."""
    async with httpx.AsyncClient(base_url=stack.gateway_urls[0], timeout=30, headers={
            "Authorization": f"Bearer {stack.admin_token}"}) as client:
        imported = await client.post(
            "/api/studies", files={"file": ("three-session-types.zip", example_zip())})
        assert imported.status_code == 201, imported.text
        study = imported.json()["study_id"]
        batch = await client.post(f"/api/studies/{study}/batches", json={"label": "browsers"})
        assert batch.status_code == 201, batch.text
        links = await client.post(f"/api/studies/{study}/batches/{batch.json()['id']}/links",
                                  json={"type": "personal_single", "count": 3})
        assert links.status_code == 201, links.text
        return [link["code"] for link in links.json()]


@contextlib.asynccontextmanager
async def browsers(tmp_path: Path, count: int) -> AsyncIterator[list[Chromium]]:
    """``count`` Chromium processes, each with its own fresh profile."""
    await require_browser()
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for i in range(count):
            browser = await stack.enter_async_context(
                Chromium.launch(tmp_path / f"participant{i}", timeout_ms=20000))
            opened.append(browser)
        yield opened
        for browser in opened:
            problems = [e for e in await browser.logs() if e["type"] == "pageerror"]
            assert not problems, f"errors in the pages: {problems}"


async def shot(browser: Chromium, name: str) -> None:
    await browser.screenshot(ARTIFACTS / f"{name}.png")


async def log_texts(browser: Chromium, chat: str) -> list[str]:
    return await browser.eval(
        "(id) => [...document.querySelectorAll('#' + id + ' li:not(.pending)')]"
        ".map((li) => li.lastChild.textContent)", f"{chat}-log")


async def wait_message(browser: Chromium, chat: str, text: str, timeout: int = 15000) -> None:
    await browser.wait_until(
        "([id, text]) => [...document.querySelectorAll('#' + id + ' li:not(.pending)')]"
        ".some((li) => li.lastChild.textContent === text)", [f"{chat}-log", text],
        timeout=timeout)


async def say(browser: Chromium, chat: str, text: str) -> None:
    await browser.fill(f"#{chat}-input", text)
    await browser.click(f"#{chat}-send")


async def enter(browser: Chromium, base_url: str, code: str, name: str,
                screenshot: str = "") -> dict[str, Any]:
    """Follow the link, give a name on the first page, land on the chats."""
    await browser.goto(f"{base_url}/go/{code}")
    await browser.wait_until("() => !document.getElementById('continue').disabled")
    await browser.fill("#name", name)
    if screenshot:
        await shot(browser, screenshot)
    await browser.click("#continue")
    await browser.wait_for("#batch-log", state="attached")
    await browser.wait_until("() => !document.getElementById('batch-send').disabled")
    await browser.wait_text("#hello", f"Hello, {name}")
    return await browser.eval("() => ({path: location.pathname, run: jatos.studyResultId})")


async def wait_grouped(browser: Chromium, members: int) -> str:
    """Until the page is in a group of ``members`` (and shows it); the group id."""
    return await browser.wait_until(
        "(n) => jatos.hasJoinedGroup() && jatos.groupMembers.length === n"
        " && document.getElementById('group-members').children.length === n"
        " && jatos.groupResultId", members)


async def test_three_participants_three_session_types(
        make_stack: Any, tmp_path: Path) -> None:
    stack = make_stack(gateways=2, workers=1)
    codes = await publish_example(stack)
    proxy = await TcpProxy(stack.gateway_urls[0]).start()
    try:
        async with browsers(tmp_path, 3) as (ada, bob, cy):
            # Bob's line goes through the proxy; Ada and Cy use a gateway each.
            a = await enter(ada, stack.gateway_urls[0], codes[0], "Ada", screenshot="0-first-ada")
            group = await wait_grouped(ada, 1)
            b = await enter(bob, proxy.url, codes[1], "Bob")
            assert b["path"].endswith("/c/2/second.html")
            assert await wait_grouped(bob, 2) == group
            await wait_grouped(ada, 2)
            c = await enter(cy, stack.gateway_urls[1], codes[2], "Cy")
            other = await wait_grouped(cy, 1)
            assert other != group, "groups of at most 2: Cy gets a group of her own"
            assert len({a["run"], b["run"], c["run"]}) == 3

            # Names travel through the group session; the chats through the two sessions.
            await ada.wait_text("#group-status", "you and Bob")
            await bob.wait_text("#group-status", "you and Ada")
            await say(ada, "group", "Hi Bob, Ada here")
            await wait_message(bob, "group", "Hi Bob, Ada here")
            await say(bob, "group", "Hello Ada!")
            await wait_message(ada, "group", "Hello Ada!")
            await say(cy, "batch", "Hello everybody, Cy speaking")
            await say(ada, "batch", "Welcome to the batch")
            for browser in (ada, bob, cy):
                await wait_message(browser, "batch", "Hello everybody, Cy speaking")
                await wait_message(browser, "batch", "Welcome to the batch")
            await say(cy, "group", "Anyone in my group?")
            await wait_message(cy, "group", "Anyone in my group?")
            await asyncio.sleep(0.5)
            assert await log_texts(cy, "group") == ["Anyone in my group?"], \
                "Cy reads only her own group"
            for browser in (ada, bob):
                assert await log_texts(browser, "group") == ["Hi Bob, Ada here", "Hello Ada!"]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for name, browser in (("ada", ada), ("bob", bob), ("cy", cy)):
                await shot(browser, f"1-chatting-{name}")

            # Bob's line goes down for a few seconds; the page stays.
            await bob.eval("() => { window.__samePage = 'yes'; }")
            await proxy.cut()
            await bob.wait_until(
                "() => document.getElementById('connection').dataset.state === 'reconnecting'")
            await say(ada, "group", "Bob, are you there?")
            await say(cy, "batch", "Said while Bob was away")
            await say(bob, "batch", "Typed while offline")
            await bob.wait_for("#batch-log li.pending")
            await shot(bob, "2-offline-bob")
            await asyncio.sleep(CUT_SECONDS)
            assert await log_texts(bob, "group") == ["Hi Bob, Ada here", "Hello Ada!"]
            await proxy.restore()

            await bob.wait_until(
                "() => document.getElementById('connection').dataset.state === 'open'",
                timeout=20000)
            await wait_message(bob, "group", "Bob, are you there?")
            await wait_message(bob, "batch", "Said while Bob was away")
            for browser in (ada, bob, cy):
                await wait_message(browser, "batch", "Typed while offline")
            assert await bob.eval("() => window.__samePage") == "yes", "caught up without a reload"
            assert await bob.count("#batch-log li.pending") == 0
            assert proxy.accepted >= 2, "the page opened a new connection through the proxy"
            await say(bob, "group", "Back again")
            await wait_message(ada, "group", "Back again")
            await asyncio.sleep(0.3)
            assert "Back again" not in await log_texts(cy, "group")
            for name, browser in (("ada", ada), ("bob", bob), ("cy", cy)):
                await shot(browser, f"3-after-reconnect-{name}")

            # A narrow page: the two chats stack.
            await cy.eval("() => { document.querySelector('main').style.maxWidth = '420px'; }")
            assert await cy.eval(
                "() => document.querySelector('.chat.batch').getBoundingClientRect().top"
                " > document.querySelector('.chat.group').getBoundingClientRect().bottom")
            await shot(cy, "4-narrow-cy")
    finally:
        await proxy.stop()
