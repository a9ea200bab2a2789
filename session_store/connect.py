"""Open a Redis client from a URL: a single server, or Redis Cluster with ``?cluster=true``.

Everything Cohort does is either a single-key command, a pipeline without
transactions, a multi-key XREAD over one partition, or a Lua script over one
partition; all of these keep to one slot per call, so both clients serve.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster


def wants_cluster(url: str) -> tuple[bool, str]:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"]
    cluster = any(k == "cluster" and v.lower() in ("1", "true", "yes")
                  for k, v in parse_qsl(parts.query))
    return cluster, urlunsplit(parts._replace(query=urlencode(query)))


def connect_redis(url: str, **options: Any) -> Redis:
    cluster, clean = wants_cluster(url)
    if cluster:
        return RedisCluster.from_url(clean, **options)  # type: ignore[return-value]
    return Redis.from_url(clean, **options)
