"""The ``cohort replay`` and ``cohort timeline`` commands (registered by services/cli.py).

    cohort replay BATCH --scope S [--at POS|TIME]   the scope's state, as JSON
    cohort timeline export BATCH [-o FILE] [--scope S] [--kind K] [--run R]
                                                    JSON Lines, with a progress bar
    cohort timeline stats BATCH [--json]            events per scope, kind and minute

They read Redis and Postgres at $COHORT_REDIS_URL / $COHORT_DATABASE_URL under
$COHORT_KEY_PREFIX, like the services (results_store.replay merges the two).
A position is a stream entry ID (``1732230000000-0``); a time is ISO 8601 or
epoch milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from services.settings import Settings


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    def add(parent: Any, name: str, handler: Callable[[argparse.Namespace], int], text: str
            ) -> argparse.ArgumentParser:
        cmd = parent.add_parser(name, parents=[common], help=text, description=text,
                                allow_abbrev=False)
        cmd.set_defaults(handler=handler)
        return cmd

    replay = add(sub, "replay", cmd_replay, "print a scope's state at a position or time")
    replay.add_argument("batch")
    replay.add_argument("--scope", required=True,
                        help="batch, batch_session, group:G, group_session:G, group_chat:G, "
                        "lobby or run:R")
    replay.add_argument("--at", help="a position (<ms>-<seq>) or a time (ISO 8601 or epoch "
                        "ms); default: now")

    text = "a batch's timeline (events in Postgres and Redis)"
    group = sub.add_parser("timeline", help=text, description=text, allow_abbrev=False)
    timeline = group.add_subparsers(dest="timeline_command", required=True, metavar="command")
    export = add(timeline, "export", cmd_export,
                 "write the timeline as JSON Lines ({pos, time, event[, study_session]})")
    export.add_argument("batch")
    export.add_argument("-o", "--output", type=Path, help="default: standard output")
    export.add_argument("--scope", action="append", default=[], help="only this scope "
                        "(repeatable)")
    export.add_argument("--kind", action="append", default=[], help="only this event kind "
                        "(repeatable)")
    export.add_argument("--run", default="", help="only events of this run")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    stats = add(timeline, "stats", cmd_stats, "print events per scope, kind and minute")
    stats.add_argument("batch")
    stats.add_argument("--json", action="store_true", help="as JSON")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"log_level": args.log_level} if getattr(args, "log_level", None) else {}
    return Settings.from_env(**overrides)


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``await work(replay)`` with stores from the settings; clear errors, exit 1."""
    import asyncpg

    from results_store.replay import Replay, ReplayError
    from session_store.connect import open_redis
    from session_store.keys import Keys

    async def run() -> int:
        settings = _settings(args)
        redis = await open_redis(settings.redis_url)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            replay = Replay(redis, pool, Keys(settings.key_prefix, settings.partitions))
            if not await replay.exists(args.batch):
                raise ReplayError("batch_not_found", f"batch {args.batch} does not exist")
            return await work(replay)
        finally:
            await pool.close()
            await redis.aclose()

    try:
        return asyncio.run(run())
    except ReplayError as exc:
        raise SystemExit(f"cohort: {exc.code}: {exc.message}") from None
    except asyncpg.UndefinedTableError:
        raise SystemExit("cohort: the database has no schema yet: run `cohort migrate`") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"cohort: store error: {exc}") from None


def cmd_replay(args: argparse.Namespace) -> int:
    from results_store.replay import ReplayError, iso, key_of, parse_at

    try:
        at = parse_at(args.at) if args.at else None
    except ReplayError as exc:
        raise SystemExit(f"cohort: {exc.code}: {exc.message}") from None
    except ValueError:
        raise SystemExit(f"cohort: bad_position: not a position or time: {args.at!r}") from None

    async def work(replay: Any) -> int:
        state, part = await replay.scope_state(args.batch, args.scope, at)
        out: dict[str, Any] = {"batch": args.batch, **part, "pos": state.pos,
                               "time": iso(key_of(state.pos)[0])}
        if args.scope.startswith("run:"):
            out["study_session"] = await replay.study_session_at(state, args.scope[4:])
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0

    return _run(args, work)


class Progress:
    """A plain progress bar on standard error: ``[#####-----]  52%  520,000/1,000,000``."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr, width: int = 30,
                 every_s: float = 0.2) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.every_s = every_s
        self.done = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def advance(self, n: int, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if not force and now - self.shown < self.every_s:
            return
        self.shown = now
        share = min(1.0, self.done / self.total)
        filled = int(share * self.width)
        rate = self.done / max(now - self.started, 1e-9)
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {share:4.0%} "
                          f"{self.done:,}/{self.total:,} events {rate:,.0f}/s")
        self.stream.flush()

    def finish(self) -> None:
        self.total = self.done or 1
        self.advance(0, force=True)
        self.stream.write("\n")
        self.stream.flush()


def cmd_export(args: argparse.Namespace) -> int:
    from results_store.replay import EventFilter

    flt = EventFilter.build(scopes=args.scope, kinds=args.kind, run=args.run)

    async def work(replay: Any) -> int:
        progress = None if args.quiet else Progress(await replay.count_estimate(args.batch))
        out = args.output.open("wb") if args.output else sys.stdout.buffer
        written = 0
        try:
            async for chunk in replay.export(args.batch, flt):
                out.write(chunk)
                lines = chunk.count(b"\n")
                written += lines
                if progress:
                    progress.advance(lines)
        finally:
            if args.output:
                out.close()
            else:
                out.flush()
        if progress:
            progress.finish()
        if args.output:
            print(f"{written} events written to {args.output}", file=sys.stderr)
        return 0

    return _run(args, work)


def cmd_stats(args: argparse.Namespace) -> int:
    async def work(replay: Any) -> int:
        stats = await replay.stats(args.batch)
        if args.json:
            print(json.dumps(stats, indent=2))
            return 0
        print(f"batch {stats['batch']}: {stats['events']} events, {stats['first']} .. "
              f"{stats['last']}")
        for title, counts in (("scope", stats["scopes"]), ("kind", stats["kinds"]),
                              ("minute (UTC)", stats["minutes"])):
            print(f"\nevents per {title}:")
            width = max((len(k) for k in counts), default=0)
            for key, n in counts.items():
                print(f"  {key:<{width}}  {n:>9}")
        return 0

    return _run(args, work)
