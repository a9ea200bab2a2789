"""Open a Redis client from a URL: a single server, or Redis Cluster with ``?cluster=true``.

Everything Cohort does is either a single-key command, a pipeline without
transactions, a multi-key XREAD over one partition, or a Lua script over one
partition; all of these keep to one slot per call, so both clients serve.

No per-reply socket timeout: redis-py wraps every reply read in an
``asyncio.timeout`` when one is set, which cost the gateway 7-11% of its CPU
under load (py-spy). A dead server or a half-open connection is found by TCP
keepalive (idle 30 s, then 3 probes 5 s apart: ``KEEPALIVE``) and by a
PING before a connection idle for ``HEALTH_CHECK_S`` is reused; where a hang
matters, callers bound the wait themselves (``Hub.request``, the worker's
lease, which lapses on its own and fences a stuck owner out by its epoch).

When every pooled connection is busy (a join storm's burst, say), a caller
waits for one to come back instead of failing with ``MaxConnectionsError``.
(redis-py's ``BlockingConnectionPool`` does that too, but takes a lock and a
timeout on every command: ~20% fewer commands/s here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import MaxConnectionsError

MAX_CONNECTIONS = 200
# How long a caller waits for a free pooled connection before it fails.
POOL_WAIT_S = 30.0
HEALTH_CHECK_S = 30

# Keepalive probes after 30 s idle, every 5 s, 3 of them: set here rather than
# relying on a redis-py version's defaults (older ones leave the OS's 2 hours).
KEEPALIVE: dict[int, int] = {
    opt: value for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5),
                                   ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None
}

DEFAULTS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "socket_keepalive_options": KEEPALIVE,
    "health_check_interval": HEALTH_CHECK_S,
}


class WaitingPool(ConnectionPool):
    """redis-py's pool, except that a caller finding every connection in use waits
    (first come, first served, up to ``POOL_WAIT_S``) for one to be released rather
    than failing at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POOL_WAIT_S
        while True:
            if not self._waiters:  # nobody queued ahead of us
                try:
                    return await super().get_connection(*args, **kwargs)
                except MaxConnectionsError:
                    pass
            left = deadline - loop.time()
            if left <= 0:
                return await super().get_connection(*args, **kwargs)  # a last try, or the error
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # handed a place it will not use: pass it on
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                # Handed a released connection's place: take it before anyone else.
                try:
                    return await super().get_connection(*args, **kwargs)
                except MaxConnectionsError:
                    continue
                except asyncio.CancelledError:
                    self._wake_next()  # cancelled before taking it: pass the place on
                    raise

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


def wants_cluster(url: str) -> tuple[bool, str]:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"]
    cluster = any(k == "cluster" and v.lower() in ("1", "true", "yes")
                  for k, v in parse_qsl(parts.query))
    return cluster, urlunsplit(parts._replace(query=urlencode(query)))


def connect_redis(url: str, **options: Any) -> Redis:
    cluster, clean = wants_cluster(url)
    options = {**DEFAULTS, **options}
    if cluster:
        return RedisCluster.from_url(clean, **options)  # type: ignore[return-value]
    options.setdefault("max_connections", MAX_CONNECTIONS)
    return Redis.from_pool(WaitingPool.from_url(clean, **options))


async def open_redis(url: str, **options: Any) -> Redis:
    """``connect_redis``, and on a cluster learn its slot map before anything else
    runs. redis-py's cluster client learns it on first use; when a process's first
    commands went out concurrently (a gateway starts its partition readers and its
    command sender at once), it dropped connections under them and re-sent the
    commands (about one start in eight here). Re-sends can still come later (a
    dropped connection, a resharding): the gateway's command writes are numbered
    so that a re-sent one appends nothing, and the worker's appends are fenced
    and deduplicated."""
    client = connect_redis(url, **options)
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client
