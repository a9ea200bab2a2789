"""Drive the machine's Chromium from async Python tests (through driver.mjs).

``driver.mjs`` runs playwright-core in Node with the Chromium at
``COHORT_CHROMIUM`` (default ``/usr/bin/chromium``; never a downloaded one) and a
fresh ``--user-data-dir``; this module talks to it one JSON line per call::

    async with Chromium.launch(tmp_path) as browser:
        await browser.goto(url)
        await browser.fill("input[name=username]", "ada")
        await browser.screenshot(ARTIFACTS / "login.png")

``ensure_installed()`` runs ``npm ci`` here when node_modules is missing or older
than the lock file (``cohort test`` does the same before pytest starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver.mjs"
CHROMIUM = os.environ.get("COHORT_CHROMIUM", "/usr/bin/chromium")


class BrowserError(Exception):
    pass


def chromium_path() -> str | None:
    """The Chromium to drive, or None when this machine has none."""
    found = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    return found if found and os.access(found, os.X_OK) else None


def ensure_installed() -> None:
    """playwright-core in tests/browser_support/node_modules (``npm ci``)."""
    modules = HERE / "node_modules"
    stamp = modules / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime and (
            modules / "playwright-core" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise BrowserError("npm is not on PATH: install Node.js 20+ with npm")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise BrowserError(f"npm ci in {HERE} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


async def require_browser() -> None:
    """In a test: skip without a Chromium, fail when its driver cannot be installed."""
    import pytest

    if chromium_path() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium, or COHORT_CHROMIUM)")
    try:
        await asyncio.to_thread(ensure_installed)
    except BrowserError as exc:
        pytest.fail(str(exc))


class Chromium:
    """One headless Chromium (one persistent context) and its pages (page 0 at start)."""

    def __init__(self, proc: asyncio.subprocess.Process, downloads: Path, timeout: float) -> None:
        self.proc = proc
        self.downloads = downloads
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    @classmethod
    def launch(cls, workdir: Path, *, timeout_ms: int = 15000) -> _Launch:
        return _Launch(workdir, timeout_ms)

    async def call(self, op: str, **args: Any) -> Any:
        """One driver operation; raises BrowserError with the driver's message."""
        request = {"id": next(self._ids), "op": op, **args}
        async with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), self.timeout)
        if not line:
            raise BrowserError(f"the driver exited during {op}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise BrowserError(f"{op} {args}: {answer['error']}")
        return answer["value"]

    # Shorthands for the common operations.
    async def goto(self, url: str, page: int = 0) -> dict[str, Any]:
        return await self.call("goto", url=url, page=page)

    async def click(self, selector: str, page: int = 0) -> None:
        await self.call("click", selector=selector, page=page)

    async def fill(self, selector: str, value: str, page: int = 0) -> None:
        await self.call("fill", selector=selector, value=value, page=page)

    async def select(self, selector: str, value: str, page: int = 0) -> None:
        await self.call("select", selector=selector, value=value, page=page)

    async def check(self, selector: str, checked: bool = True, page: int = 0) -> None:
        await self.call("check", selector=selector, checked=checked, page=page)

    async def text(self, selector: str, page: int = 0) -> str:
        return await self.call("text", selector=selector, page=page)

    async def texts(self, selector: str, page: int = 0) -> list[str]:
        return await self.call("texts", selector=selector, page=page)

    async def value(self, selector: str, page: int = 0) -> str:
        return await self.call("value", selector=selector, page=page)

    async def count(self, selector: str, page: int = 0) -> int:
        return await self.call("count", selector=selector, page=page)

    async def wait_for(self, selector: str, state: str = "visible", page: int = 0,
                       timeout: int | None = None) -> None:
        await self.call("waitFor", selector=selector, state=state, page=page, timeout=timeout)

    async def wait_text(self, selector: str, text: str, page: int = 0,
                        timeout: int | None = None) -> None:
        await self.call("waitText", selector=selector, text=text, page=page, timeout=timeout)

    async def wait_until(self, expression: str, arg: Any = None, page: int = 0,
                         timeout: int | None = None) -> Any:
        """Until the page function ``expression`` (called with ``arg``) returns truthy."""
        return await self.call("waitFunction", expression=expression, arg=arg, page=page,
                               timeout=timeout)

    async def eval(self, expression: str, arg: Any = None, page: int = 0) -> Any:
        return await self.call("eval", expression=expression, arg=arg, page=page)

    async def screenshot(self, path: Path, page: int = 0, full_page: bool = True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.call("screenshot", path=str(path), page=page, fullPage=full_page)
        return path

    async def download(self, selector: str, page: int = 0) -> dict[str, Any]:
        return await self.call("download", selector=selector, page=page)

    async def logs(self) -> list[dict[str, str]]:
        return await self.call("logs")

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(BrowserError, asyncio.TimeoutError, OSError):
                await self.call("close")
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class _Launch:
    def __init__(self, workdir: Path, timeout_ms: int) -> None:
        self.workdir = workdir
        self.timeout_ms = timeout_ms
        self.browser: Chromium | None = None

    async def __aenter__(self) -> Chromium:
        executable = chromium_path()
        if executable is None:
            raise BrowserError(f"no Chromium at {CHROMIUM} (set COHORT_CHROMIUM)")
        node = shutil.which("node")
        if node is None:
            raise BrowserError("node is not on PATH: install Node.js 20+")
        profile = self.workdir / "chromium-profile"
        downloads = self.workdir / "downloads"
        profile.mkdir(parents=True, exist_ok=True)
        downloads.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            node, str(DRIVER), "--executable", executable, "--user-data-dir", str(profile),
            "--downloads", str(downloads), "--timeout", str(self.timeout_ms),
            cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(self.workdir / "driver.log", "ab"),  # noqa: ASYNC230
            limit=64 * 1024 * 1024)
        self.browser = Chromium(proc, downloads, timeout=self.timeout_ms / 1000 + 30)
        try:
            await self.browser.call("logs")  # answers once Chromium is up
        except BaseException:
            await self.browser.close()
            raise
        return self.browser

    async def __aexit__(self, *exc: object) -> None:
        if self.browser is not None:
            await self.browser.close()
