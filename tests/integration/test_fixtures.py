"""The test fixtures isolate sessions and clean up after them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from service_fixtures import database_name, delete_prefixes

from services.settings import Settings
from session_store.keys import Keys

TESTS = Path(__file__).resolve().parents[1]


async def _keys(client: aioredis.Redis, prefix: str) -> set[bytes]:
    return {key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


def test_prefixes_are_unique_and_valid(key_prefix: str, make_prefix: Callable[[], str]) -> None:
    made = {make_prefix() for _ in range(50)}
    assert len(made) == 50 and key_prefix not in made
    for prefix in [key_prefix, *made]:
        assert re.fullmatch(r"t[0-9a-f]{12}", prefix)
        Keys(prefix, 8)  # no braces: valid for the key layout


def test_settings_use_the_session_services(
    settings: Settings, redis_url: str, database_url: str, key_prefix: str
) -> None:
    assert settings.redis_url == redis_url
    assert settings.database_url == database_url
    assert settings.key_prefix == key_prefix
    assert settings.partitions == 8
    assert settings.secret and settings.admin_token


async def test_prefixes_isolate_keys(
    redis: aioredis.Redis, key_prefix: str, make_prefix: Callable[[], str]
) -> None:
    mine = make_prefix()
    keys = Keys(mine, 8)
    await redis.xadd(keys.events("b1"), {"e": "1"})
    await redis.set(f"{mine}:plain", "1")
    await redis.set(f"{key_prefix}:other", "1")
    assert await _keys(redis, mine) == {keys.events("b1").encode(), f"{mine}:plain".encode()}
    assert f"{mine}:plain".encode() not in await _keys(redis, key_prefix)


async def test_delete_prefixes_removes_every_key_and_only_those(
    redis: aioredis.Redis, redis_url: str, make_prefix: Callable[[], str]
) -> None:
    doomed, kept = make_prefix(), make_prefix()
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1234):  # more than one SCAN page and one UNLINK batch
            pipe.set(f"{doomed}:{{p:{i % 8}}}:k{i}", i)
        pipe.set(f"{kept}:k", 1)
        pipe.set(f"{doomed}x:k", 1)  # a longer prefix starting the same way
        await pipe.execute()
    assert await delete_prefixes(redis_url, [doomed], batch=100) == 1234
    assert await _keys(redis, doomed) == set()
    assert await redis.get(f"{kept}:k") == b"1"
    assert await redis.get(f"{doomed}x:k") == b"1"
    await redis.delete(f"{doomed}x:k")


async def test_database_url_names_this_sessions_own_database(database_url: str) -> None:
    name = database_name(database_url)
    assert re.fullmatch(r"cohort_test_[0-9a-f]{12}", name)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()


async def test_redis62_url_is_redis_6_2(redis62_url: str) -> None:
    client = aioredis.Redis.from_url(redis62_url, decode_responses=True)
    try:
        assert (await client.info("server"))["redis_version"].startswith("6.2.")
    finally:
        await client.aclose()


INNER_TEST = """
from pathlib import Path

import asyncpg

OUT = Path(__file__).with_name("used.txt")


async def test_write_everywhere(redis, key_prefix, make_prefix, database_url):
    other = make_prefix()
    for prefix in (key_prefix, other):
        await redis.set(f"{prefix}:a", 1)
        await redis.xadd(f"{prefix}:{{p:3}}:s", {"f": "v"})
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE t (x int)")
    await conn.close()
    OUT.write_text(" ".join([key_prefix, other, database_url]))
"""


async def test_session_end_removes_keys_and_database(
    tmp_path: Path, redis: aioredis.Redis, redis_url: str, postgres_server_url: str
) -> None:
    """Run a whole pytest session in a subprocess, then look for what it left."""
    for name in ("conftest.py", "service_fixtures.py"):
        (tmp_path / name).write_text((TESTS / name).read_text())
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    (tmp_path / "pytest.ini").write_text(
        textwrap.dedent(
            """
            [pytest]
            asyncio_mode = auto
            asyncio_default_fixture_loop_scope = session
            asyncio_default_test_loop_scope = session
            """
        )
    )
    env = dict(
        os.environ,
        COHORT_TEST_REDIS_URL=redis_url,
        COHORT_TEST_DATABASE_URL=postgres_server_url,
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    key_prefix, other, url = (tmp_path / "used.txt").read_text().split()
    assert await _keys(redis, key_prefix) == set()
    assert await _keys(redis, other) == set()
    conn = await asyncpg.connect(postgres_server_url)
    try:
        exists = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", database_name(url)
        )
    finally:
        await conn.close()
    assert exists == 0
