"""Settings from environment variables (``COHORT_*``), one frozen Struct per process."""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Any, Literal

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    # Every Redis key starts with this; tests use their own to stay isolated.
    key_prefix: str = "cohort"
    # Fixed at deploy time: a batch always hashes to the same partition.
    partitions: int = 16
    # HMAC secret shared by all gateways; the quick start generates one.
    secret: str = ""
    # Experimenter/admin API token until accounts exist (issue 3).
    admin_token: str = ""
    gateway_id: str = ""
    worker_id: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    demo: bool = False
    log_level: str = "info"
    # The gateway's WebSocket implementation: Cohort's own (gateway/websocket.py) or,
    # as a fallback should a client or proxy not get along with it, uvicorn's.
    ws_protocol: Literal["cohort", "uvicorn"] = "cohort"
    # Limits (every one has a test).
    max_message_bytes: int = 64 * 1024
    max_session_bytes: int = 1024 * 1024
    max_ops_per_patch: int = 1000
    outbound_queue_bytes: int = 4 * 1024 * 1024
    overflows_before_close: int = 3
    overflow_window_s: float = 60.0
    # Per channel: messages other than pings (commands, resync requests, bad input)
    # read per second, with one second's worth as a burst; past it the next message
    # is read only when it is within the rate (delayed, never refused; 0 = no limit).
    # Far above what a study's page sends; it keeps a runaway loop in one browser
    # from flooding its batch.
    max_commands_per_s: Annotated[float, msgspec.Meta(ge=0)] = 1000.0
    # Per channel: answers (acks, fails, errors, pongs) waiting unwritten because the
    # client sends but does not read. At this many the gateway reads nothing more from
    # it until half are written (its sends wait in TCP).
    max_unsent_answers: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Session worker.
    lease_ms: int = 3000
    snapshot_every: int = 500
    # A run not seen (socket open, ping, heartbeat) for this long fails.
    run_timeout_s: float = 600.0
    run_check_every_s: float = 5.0
    # Group members: shown closed after their channel is gone this long; removed
    # from the group (and their run failed) when not seen for group_idle_s.
    presence_grace_s: float = 10.0
    group_idle_s: float = 300.0
    command_batch: int = 1000
    # Under load the worker starts its next read of commands no earlier than this
    # after the last one began: each iteration costs two Redis round trips (the read
    # and the append script), so letting commands gather for a few ms costs less CPU
    # (worker and Redis) at the price of up to that much latency while the
    # partition is busy. Only after a read of several commands: the read after a
    # lone command does not wait. Whole milliseconds (the event loop's timer
    # resolution). Off by default: it pays only when the stack's CPU is the limit
    # (docs/decisions.md).
    worker_tick_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 0.0
    # Redis Cluster: how long a gateway keeps retrying a command write that failed in
    # a way that may pass (a dropped connection, a slot being migrated, a failover:
    # Redis's default node timeout is 15 s) before its commands fail.
    command_retry_s: Annotated[float, msgspec.Meta(ge=0)] = 20.0
    dedupe_ttl_s: int = 24 * 3600
    replies_maxlen: int = 10000
    # Gateway: how many recent changes per batch it keeps for resume.
    resume_window: int = 2000
    read_block_ms: int = 50
    token_ttl_s: int = 7 * 24 * 3600
    # Finalizer: archive batch timelines into Postgres, then trim Redis (docs/archive.md).
    archive_interval_s: float = 10.0
    # Events per batch always left in Redis (never fewer than resume_window).
    archive_keep: int = 5000
    # Events per archive transaction (one segment).
    archive_batch: int = 5000
    # The archiver's share of wall time while it catches up (0 < duty <= 1): after each
    # segment it pauses (1/duty - 1) x the time it worked since its last pause, so a
    # backlog is spread out instead of taking CPU, Redis and Postgres from live
    # traffic all at once. Pauses shrink when the pass's backlog needs the time
    # (docs/archive.md).
    archive_duty: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.25
    # The finalizer lowers its own CPU priority by this much (0 = leave it): archiving
    # may wait, live fan-out may not.
    finalizer_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    # Study imports.
    max_study_bytes: int = 200 * 1024 * 1024
    max_study_files: int = 10_000
    # Result data and files (docs/results.md): over a quota -> 413 quota_exceeded.
    max_result_bytes_per_component: int = 5 * 1024 * 1024
    max_result_bytes_per_run: int = 50 * 1024 * 1024
    max_file_bytes: int = 50 * 1024 * 1024
    max_log_bytes_per_run: int = 1024 * 1024
    # Result writes per batcher transaction, and batcher transactions at once per gateway.
    result_batch_rows: int = 500
    result_writers: int = 2

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``COHORT_<FIELD>`` for every field; unset fields keep their default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(f"COHORT_{field.name.upper()}")
            if raw is not None:
                values[field.name] = raw
        values.update(overrides)
        settings = msgspec.convert(values, cls, strict=False)
        if not settings.secret:
            settings = msgspec.structs.replace(settings, secret=secrets.token_hex(32))
        return settings
