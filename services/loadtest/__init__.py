"""``cohort loadtest``: simulated participants over real WebSockets and HTTP.

    cohort loadtest SCENARIO --url URL [--url URL2 ...] [--token T] [--participants N]
                    [--duration S] [--rate R] [--session-bytes B] [--json out.json]

Against any deployment: a gateway base URL (several ``--url``: participants are spread
over them round robin) and the admin token (``$COHORT_ADMIN_TOKEN`` by default) or an
experimenter API token (setup then goes through a tiny uploaded study and its links).
Scenarios (services/loadtest/scenarios.py; docs in each function):

- ``hot-batch``: every participant on one batch session; ``--writers`` of them patch
  it at ``--rate`` each (open loop; ``--rate 0``: closed loop, ``--inflight`` each);
- ``ab``: A/B balancing with a versioned compare-and-set, retried on conflict; the
  totals are checked exactly at the end;
- ``groups``: groups of two exchanging group messages and group-session patches at
  ``--rate`` each (open loop), the oTree live-page workload;
- ``join-storm``: the batch session filled to ``--session-bytes``, then
  ``--participants`` open their channels (all at once, or ``--rate`` per second);
  open-to-full-state latency;
- ``results``: result-data submissions (``POST /r/<key>/result-data?pos=1``) by
  participants who entered a tiny study through its ``/go`` link;
- ``rtt``: one client, one patch at a time, patch to its own ack;
- ``idle``: ``--participants`` idle channels; the gateway's RSS from its /metrics.

A deployment reads at most ``COHORT_MAX_COMMANDS_PER_S`` (1,000 by default) commands
per second from one channel: closed-loop ``hot-batch`` and ``rtt`` go past that on one
participant and would measure the limit, so run them against a deployment with a
higher limit or 0 (none), as tests/bench does.

While running, one progress line per second on stderr (sent, acked, delivered/s,
errors); at the end a summary table on stdout (throughput, p50/p95/p99 latency,
errors, resyncs) and, with ``--json``, the same as JSON. The exit status is 0 when
every check of the scenario passed.

The load generator is one Python process (uvloop when installed): on a small machine
it competes with the deployment for CPU, so it spends little per participant. Its
WebSocket client is a minimal RFC 6455 protocol (``LeanSocket``; ``--ws-client
websockets`` for the library); a frame that many participants receive as the same
bytes (an update fanned out, a join storm's state) is decoded once and compared
byte for byte for the others; an open costs one deadline, not a task. See
tests/bench/bench_suite.py for runs with baselines and CPU shares.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from services.gctune import tune_gc

SCENARIO_NAMES = ("hot-batch", "ab", "groups", "join-storm", "results", "rtt", "idle")

# Per scenario: participants, duration, rate (per sender; 0 = closed loop).
DEFAULTS: dict[str, tuple[int, float, float]] = {
    "hot-batch": (100, 10.0, 0.0),
    "ab": (50, 10.0, 0.0),
    "groups": (500, 10.0, 10.0),
    "join-storm": (1000, 0.0, 0.0),
    "results": (200, 10.0, 0.0),
    "rtt": (1, 5.0, 0.0),
    "idle": (1000, 10.0, 0.0),
}


def add_loadtest_command(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "simulated participants against a deployment (WebSockets and HTTP): throughput, " \
           "latency, errors"
    cmd = sub.add_parser("loadtest", parents=[common], help=text, description=text,
                         allow_abbrev=False)
    cmd.set_defaults(handler=cmd_loadtest)
    add_arguments(cmd)


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("scenario", choices=SCENARIO_NAMES)
    cmd.add_argument("--url", action="append", dest="urls", metavar="URL",
                     help="a gateway's base URL (repeat for several; default "
                     "$COHORT_PUBLIC_URL or http://127.0.0.1:8000)")
    cmd.add_argument("--token", help="admin token or experimenter API token "
                     "(default: $COHORT_ADMIN_TOKEN)")
    cmd.add_argument("--participants", "-n", type=int,
                     help="simulated participants (default per scenario: "
                     + ", ".join(f"{k} {v[0]}" for k, v in DEFAULTS.items()) + ")")
    cmd.add_argument("--duration", "-d", type=float,
                     help="seconds of load (default 10; rtt 5; join-storm: until all opened)")
    cmd.add_argument("--rate", "-r", type=float,
                     help="per sending participant per second, open loop (hot-batch: per "
                     "writer; groups: per participant, default 10; join-storm: channel "
                     "opens per second; results: submissions per participant); 0 = as fast "
                     "as answers come (closed loop)")
    cmd.add_argument("--session-bytes", type=int, default=100_000,
                     help="join-storm: batch session size before the storm (default 100000)")
    cmd.add_argument("--writers", type=int, default=10,
                     help="hot-batch: participants that write (default 10)")
    cmd.add_argument("--inflight", type=int, default=20,
                     help="closed loop: commands in flight per writer (default 20)")
    cmd.add_argument("--apply", action="store_true",
                     help="hot-batch: every subscriber applies every change and its data are "
                     "checked (costs the load generator much more CPU)")
    cmd.add_argument("--open-concurrency", type=int, default=200,
                     help="WebSocket handshakes at once while setting up (default 200)")
    cmd.add_argument("--json", type=Path, help="also write the summary here")
    cmd.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    cmd.add_argument("--mark-start", metavar="FILE",
                     help="write the time to FILE when the load starts (to attach a profiler)")
    cmd.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    cmd.add_argument("--ws-client", choices=("lean", "websockets"), default="lean",
                     help="the participants' WebSocket client: a minimal RFC 6455 client "
                     "(default; cheapest per frame) or the websockets library")


def options_from(args: argparse.Namespace) -> Any:
    from services.loadtest.scenarios import Options

    participants, duration, rate = DEFAULTS[args.scenario]
    urls = args.urls or [os.environ.get("COHORT_PUBLIC_URL") or "http://127.0.0.1:8000"]
    return Options(
        urls=urls,
        token=args.token if args.token is not None else os.environ.get("COHORT_ADMIN_TOKEN", ""),
        participants=args.participants if args.participants is not None else participants,
        duration=args.duration if args.duration is not None else duration,
        rate=args.rate if args.rate is not None else rate,
        session_bytes=args.session_bytes, writers=args.writers, inflight=args.inflight,
        apply=args.apply, open_concurrency=args.open_concurrency, quiet=args.quiet,
        mark_start=args.mark_start, transport=args.ws_client,
    )


async def run(scenario: str, opts: Any) -> dict[str, Any]:
    """Run one scenario against a deployment; returns its summary."""
    from services.loadtest.clients import Deployment
    from services.loadtest.scenarios import SCENARIOS
    from services.loadtest.stats import Recorder, raise_nofile

    raise_nofile(opts.participants + 256)
    rec = Recorder(scenario, quiet=opts.quiet)
    if opts.mark_start:
        rec.mark_start = Path(opts.mark_start)
    dep = Deployment(opts.urls, opts.token, label=opts.label,
                     concurrency=min(64, max(8, opts.participants // 10)))
    try:
        await dep.check()
        return await SCENARIOS[scenario](opts, dep, rec)
    finally:
        await dep.close()


def cmd_loadtest(args: argparse.Namespace) -> int:
    import logging

    from services.loadtest.clients import SetupError
    from services.loadtest.stats import render_table

    for noisy in ("httpx", "httpcore", "websockets"):  # one line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    opts = options_from(args)
    # The generator is the instrument: a full collection in it would show up as
    # latency of the system under test (tune_gc's docstring has the figures).
    tune_gc()
    runner: Any = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    try:
        result = runner(run(args.scenario, opts))
    except SetupError as exc:
        print(f"cohort loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(render_table(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if result["ok"] else 1
