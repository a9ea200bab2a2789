"""One hot batch end to end: committed patches/s, fan-out and latency, against raw Redis.

Run: python tests/bench/bench_hot_batch.py [--clients 100] [--writers 10] [--seconds 10]
     [--inflight 50] [--gateways 1] [--workers 1] [--client-procs 1] [--defer-apply]
     [--json out.json]      (about 25 s with the defaults; tests/bench/README.md)

Phases, in one run on one machine:

1. Baseline: XADD of event-sized entries into a local Redis stream from this one
   Python process (redis-py asyncio), pipelined (500 per round trip) and awaited
   one at a time. The stream is capped (MAXLEN ~) so the run does not grow Redis.
2. A real stack (``tests/e2e/stack.py``: gateway and worker processes on this
   machine, own key prefix). Idle round trip: one client on its own batch, 200
   sequential patches, each awaited (patch -> ack).
3. The hot batch: ``--clients`` participants on ONE batch, ``--writers`` of them
   also write unversioned ``add`` patches (``/w<i>/<n mod 64>``) for ``--seconds``,
   each keeping ``--inflight`` patches in flight. Every subscriber's arrival of
   every version is recorded; latency is from the send of the command that
   produced a version to each subscriber's arrival of it (perf_counter, which is
   CLOCK_MONOTONIC and so comparable between the processes of one machine).

At the end every subscriber must have seen every version exactly once, in order
(no gaps, no resyncs) and hold the same data, which must be what the acks imply.
CPU of the gateway, worker, Redis server and the load generator is measured over
the load window to show which one is the bottleneck.

The load generator is Python too: by default all clients are
``services.participant.Participant`` in this one process, applying every change.
``--client-procs N`` spreads the subscribers over N processes; ``--defer-apply``
makes them record and check versions on arrival and apply the patches after the
load (cheaper, so that more of the machine is left to the server).

Servers: $COHORT_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0) and
$COHORT_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test).
Every Redis key is under a fresh prefix ``bench<hex>`` and deleted at the end, as
are the run's rows in the ``batches`` table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import sys
import time
import traceback
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import websockets  # noqa: E402

from services.participant import Participant  # noqa: E402
from session_store.events import SessionPatched, encode_event  # noqa: E402
from session_store.jsonpatch import apply_patch  # noqa: E402
from tests.e2e.stack import Stack  # noqa: E402

try:  # only for CPU figures; /proc is read when it is missing
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

SCOPE = "batch_session"
SLOTS = 64  # keys per writer: the session stays small however long the run


# ---------------------------------------------------------------------------
# Small helpers


def pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summary_ms(samples: list[float]) -> dict[str, float]:
    values = sorted(samples)
    return {
        "p50_ms": pct(values, 50) * 1000,
        "p95_ms": pct(values, 95) * 1000,
        "p99_ms": pct(values, 99) * 1000,
        "max_ms": (values[-1] if values else float("nan")) * 1000,
        "samples": len(values),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sample_payload() -> bytes:
    """An event as the worker appends it for one writer patch (same size on the wire)."""
    return encode_event(SessionPatched(
        scope=SCOPE, version=123456, cmd="0123abcd-12345", run="0" * 32, gw="0" * 12,
        conn="0" * 16, ops=[{"op": "add", "path": "/w3/17", "value": 12345}],
    ))


# ---------------------------------------------------------------------------
# Clients


class CountingParticipant(Participant):
    """The protocol client of services/participant.py, counting update frames."""

    def __init__(self, ws_url: str) -> None:
        super().__init__(ws_url)
        self.update_frames = 0

    def _handle(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "update":
            self.update_frames += 1
        super()._handle(frame)

    def materialize(self) -> None:
        pass


class _RawChange(msgspec.Struct):
    v: int
    ops: msgspec.Raw


class _Peek(msgspec.Struct):
    type: str
    scope: str = ""
    pos: str = ""
    changes: list[_RawChange] = []


_peek = msgspec.json.Decoder(_Peek)
_ops = msgspec.json.Decoder(list)


class DeferredParticipant(CountingParticipant):
    """``--defer-apply``: a cheaper subscriber for the load generator.

    On arrival it does what Participant does minus the JSON Patch work: the
    update frame is decoded without materializing the ops, every version is
    checked to follow the previous one (a gap asks for a resync, as Participant
    does) and recorded in ``seen``/``arrivals``. The ops are kept and applied in
    ``materialize()`` after the load, so the final data check still covers every
    subscriber.
    """

    def __init__(self, ws_url: str) -> None:
        super().__init__(ws_url)
        self.deferred: list[msgspec.Raw] = []

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                await self._reading.wait()
                peek = _peek.decode(raw)
                if peek.type == "update" and peek.scope == self.scope:
                    self._update(peek)
                else:
                    if peek.type == "state":
                        self.deferred.clear()
                    self._handle(msgspec.json.decode(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.closed is not None and not self.closed.done():
                self.closed.set_result((self._ws.close_code, self._ws.close_reason or ""))

    def _update(self, frame: _Peek) -> None:
        self.update_frames += 1
        if self.data is None:
            return
        now = time.perf_counter()
        for change in frame.changes:
            version = change.v
            if version <= self.version:
                continue
            if version != self.version + 1:
                self.gaps += 1
                self.data = None
                self.deferred.clear()
                self._spawn(self._ws.send('{"type":"resync"}'))
                return
            self.deferred.append(change.ops)
            self.version = version
            self.seen.append(version)
            self.arrivals[version] = now
        self.pos = frame.pos
        self.changed.set()

    def materialize(self) -> None:
        for ops in self.deferred:
            self.data = apply_patch(self.data, _ops.decode(ops))
        self.deferred.clear()


async def join(stack: Stack, batch_id: str, gateway: int = 0,
               cls: type[CountingParticipant] = CountingParticipant) -> CountingParticipant:
    """As tests/e2e/conftest.py's join(), with a choice of client class."""
    ticket = await stack.participant(batch_id, gateway)
    participant = await cls(ticket["ws_url"]).connect()
    await participant.wait_ready()
    return participant


# ---------------------------------------------------------------------------
# 1. Baseline: XADD from one Python process


async def baseline(redis_url: str, prefix: str, seconds: float, pipeline: int) -> dict[str, Any]:
    """XADD rates from this process; each is the best of three windows (the machine is shared)."""
    client = aioredis.Redis.from_url(redis_url)
    key = f"{prefix}:baseline"
    fields = {"e": sample_payload()}

    async def pipelined(window: float) -> float:
        # One round trip per `pipeline` entries.
        count, start = 0, time.perf_counter()
        while time.perf_counter() < start + window:
            pipe = client.pipeline(transaction=False)
            for _ in range(pipeline):
                pipe.xadd(key, fields, maxlen=100_000, approximate=True)
            await pipe.execute()
            count += pipeline
        return count / (time.perf_counter() - start)

    async def awaited(window: float) -> list[float]:
        # A round trip per entry.
        latencies: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() < start + window:
            t = time.perf_counter()
            await client.xadd(key, fields, maxlen=100_000, approximate=True)
            latencies.append(time.perf_counter() - t)
        return latencies

    try:
        await client.ping()
        await pipelined(0.2)  # warm up
        best = max([await pipelined(seconds / 3) for _ in range(3)])
        window = seconds / 9
        latencies = max([await awaited(window) for _ in range(3)], key=len)
        await client.unlink(key)
    finally:
        await client.aclose()
    return {
        "pipelined_xadd_per_s": best,
        "pipeline_size": pipeline,
        "entry_bytes": len(fields["e"]),
        "awaited_xadd_per_s": len(latencies) / window,
        "awaited_xadd_latency": summary_ms(latencies),
    }


# ---------------------------------------------------------------------------
# CPU of the processes involved


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (psutil, else Linux /proc)."""
    try:
        if psutil is not None:
            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    try:
        if psutil is not None:
            t = psutil.cpu_times()
            return sum(t) - t.idle - getattr(t, "iowait", 0.0)
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
        return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
    except Exception:
        return None


class CpuMeter:
    """CPU of each process over a window, as % of one core (100% = one core saturated)."""

    def __init__(self, stack: Stack, redis_url: str) -> None:
        self.pids = {"bench": os.getpid()}
        self.pids.update({name: popen.pid for name, popen in stack.procs.items()})
        self.redis_url = redis_url
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.wall = 0.0

    def _redis_cpu(self) -> float | None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            info = client.info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _snapshot(self) -> dict[str, float]:
        values = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        values["redis-server"] = self._redis_cpu()
        values["machine (all cores)"] = machine_busy_seconds()
        return {name: v for name, v in values.items() if v is not None}

    def start(self) -> None:
        self._start = self._snapshot()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        wall = self.wall = time.perf_counter() - self._t0
        result = {name: 100 * (end[name] - self._start[name]) / wall
                  for name in end if name in self._start}
        machine = result.pop("machine (all cores)", None)
        if machine is not None:
            result["machine (all cores)"] = machine
            # Anything else on the machine (other test runs) competes for the same cores.
            result["other processes"] = max(0.0, machine - sum(
                v for k, v in result.items() if k != "machine (all cores)"))
        return result


# ---------------------------------------------------------------------------
# 2. Idle round trip


async def idle_round_trip(stack: Stack, batch: str, count: int) -> dict[str, Any]:
    await stack.create_batch(batch, "bench idle")
    client = await join(stack, batch)
    try:
        for n in range(20):  # warm up: connections, scripts, code paths
            await client.patch([{"op": "add", "path": "/idle", "value": n}])
        latencies = []
        for n in range(count):
            t = time.perf_counter()
            await client.patch([{"op": "add", "path": "/idle", "value": n}])
            latencies.append(time.perf_counter() - t)
    finally:
        await client.close()
    return summary_ms(latencies)


# ---------------------------------------------------------------------------
# 3. The hot batch


@dataclass
class LoadResult:
    start: float = 0.0
    stop_sending: float = 0.0
    sent: int = 0
    fails: list[dict[str, Any]] = field(default_factory=list)
    # version -> (perf_counter of the send, writer index, n)
    acked: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    ack_latencies: list[float] = field(default_factory=list)
    last_ack: float = 0.0
    unanswered: int = 0


async def run_writers(writers: list[CountingParticipant], seconds: float, inflight: int,
                      result: LoadResult) -> None:
    outstanding: set[asyncio.Future[dict[str, Any]]] = set()
    result.start = time.perf_counter()
    deadline = result.start + seconds

    async def write(index: int, client: CountingParticipant) -> None:
        window = asyncio.Semaphore(inflight)

        def done(sent_at: float, n: int, future: asyncio.Future[dict[str, Any]]) -> None:
            window.release()
            outstanding.discard(future)
            if future.cancelled():
                return
            now = time.perf_counter()
            frame = future.result()
            if frame["type"] == "ack":
                result.acked[frame["version"]] = (sent_at, index, n)
                result.ack_latencies.append(now - sent_at)
                result.last_ack = max(result.last_ack, now)
            else:
                result.fails.append(frame)

        n = 0
        while True:
            await window.acquire()
            if time.perf_counter() >= deadline:
                window.release()
                return
            n += 1
            sent_at = time.perf_counter()
            future = client.send_patch(
                [{"op": "add", "path": f"/w{index}/{n % SLOTS}", "value": n}])
            outstanding.add(future)
            result.sent += 1
            future.add_done_callback(lambda f, t=sent_at, k=n: done(t, k, f))

    async def progress() -> None:
        last, t_last = 0, time.perf_counter()
        while True:
            await asyncio.sleep(1)
            now = time.perf_counter()
            acks = len(result.acked)
            log(f"  load: {acks} acked ({(acks - last) / (now - t_last):,.0f}/s), "
                f"{len(outstanding)} in flight")
            last, t_last = acks, now

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(write(i, c) for i, c in enumerate(writers)))
        result.stop_sending = deadline
        if outstanding:
            await asyncio.wait(set(outstanding), timeout=30)
        result.unanswered = len(outstanding)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter


def expected_data(writers: int, acked: dict[int, tuple[float, int, int]]) -> dict[str, Any]:
    """The session the acks imply: per writer slot, the value of the last version written."""
    data: dict[str, Any] = {f"w{i}": {} for i in range(writers)}
    for version in sorted(acked):
        _, index, n = acked[version]
        data[f"w{index}"][str(n % SLOTS)] = n
    return data


def client_report(c: CountingParticipant, joined: int, final: int) -> dict[str, Any]:
    """What the checks and the latency figures need of one subscriber (picklable)."""
    c.materialize()
    arrivals = array("d", (c.arrivals.get(v, math.nan) for v in range(joined + 1, final + 1)))
    return {
        "joined": joined, "version": c.version, "gaps": c.gaps, "resyncs": c.resyncs,
        # Every version after the state it joined with, once each, in order.
        "seen_ok": c.seen == list(range(joined + 1, final + 1)), "seen": len(c.seen),
        "data": c.data, "errors": c.errors[:2], "update_frames": c.update_frames,
        "arrivals": arrivals.tobytes(),  # [v - joined - 1] -> perf_counter, nan if missing
    }


async def catch_up(clients: list[CountingParticipant], version: int, timeout: float) -> bool:
    try:
        await asyncio.gather(*(c.wait_version(version, timeout=timeout) for c in clients))
    except TimeoutError:
        return False
    return True


def verify(reports: list[dict[str, Any]], base: int, final: int, writers: int,
           result: LoadResult) -> list[str]:
    failures = []
    reference = reports[0]["data"]
    for i, r in enumerate(reports):
        problems = []
        if r["gaps"] or r["resyncs"]:
            problems.append(f"{r['gaps']} gaps, {r['resyncs']} resyncs")
        if r["version"] != final:
            problems.append(f"at version {r['version']}, not {final}")
        if not r["seen_ok"]:
            problems.append(f"saw {r['seen']} versions, not exactly {r['joined'] + 1}..{final}")
        if r["data"] != reference:
            problems.append("data differs from client 0")
        if r["errors"]:
            problems.append(f"error frames: {r['errors']}")
        if problems:
            failures.append(f"client {i}: " + "; ".join(problems))
    if result.fails:
        failures.append(f"{len(result.fails)} patches failed, e.g. {result.fails[0]}")
    if result.unanswered:
        failures.append(f"{result.unanswered} patches never answered")
    if len(result.acked) != final - base:
        failures.append(f"{len(result.acked)} acks for {final - base} versions")
    implied = expected_data(writers, result.acked)
    if not isinstance(reference, dict) or {k: reference.get(k) for k in implied} != implied:
        failures.append("the final data is not what the acks imply")
    return failures


# -- subscribers in other processes (--client-procs) ---------------------------------


def subscriber_shard(urls: list[str], defer: bool, use_uvloop: bool, timeout: float,
                     pipe: Connection) -> None:
    """Child process: hold some subscribers; talk to the parent over ``pipe``.

    -> ("joined", versions); <- ("wait", v) -> ("ready", ok); <- ("final", v) ->
    ("done", ok, reports). Any exception -> ("error", traceback).
    """
    runner: Any = asyncio.run
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(_shard(urls, defer, timeout, pipe))


async def _shard(urls: list[str], defer: bool, timeout: float, pipe: Connection) -> None:
    cls = DeferredParticipant if defer else CountingParticipant
    clients: list[CountingParticipant] = []
    try:
        for url in urls:
            clients.append(await cls(url).connect())
        for c in clients:
            await c.wait_ready()
        joined = [c.version for c in clients]
        pipe.send(("joined", joined))
        while True:
            kind, version = await asyncio.to_thread(pipe.recv)
            if kind == "wait":
                pipe.send(("ready", await catch_up(clients, version, timeout)))
            elif kind == "final":
                ok = await catch_up(clients, version, timeout)
                reports = [client_report(c, j, version) for c, j in zip(clients, joined,
                                                                         strict=True)]
                pipe.send(("done", ok, reports))
                return
            else:
                return
    except Exception:
        pipe.send(("error", traceback.format_exc()))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


class Shard:
    """The parent's handle on one subscriber process."""

    def __init__(self, urls: list[str], args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(
            target=subscriber_shard, daemon=True,
            args=(urls, args.defer_apply, not args.no_uvloop, args.catch_up_timeout, child))
        self.process.start()
        self.timeout = args.catch_up_timeout + 60

    async def ask(self, message: tuple[str, int] | None, want: str) -> tuple[Any, ...]:
        if message is not None:
            self.pipe.send(message)
        if not await asyncio.to_thread(self.pipe.poll, self.timeout):
            raise RuntimeError(f"subscriber process {self.process.pid}: no {want!r} in time")
        answer = self.pipe.recv()
        if answer[0] != want:
            raise RuntimeError(f"subscriber process {self.process.pid}: {answer}")
        return answer

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pipe.send(("stop", 0))
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


async def hot_batch(stack: Stack, batch: str, args: argparse.Namespace,
                    cpu: CpuMeter) -> dict[str, Any]:
    await stack.create_batch(batch, "bench hot")
    cls = DeferredParticipant if args.defer_apply else CountingParticipant
    # Writers and an even share of the subscribers here; the rest in --client-procs - 1
    # child processes, so that the load generator can use more than one core.
    share = math.ceil(args.clients / args.client_procs)
    here = max(args.writers, args.clients - share * (args.client_procs - 1))
    clients: list[CountingParticipant] = []
    shards: list[Shard] = []
    try:
        for chunk in range(0, here, 25):
            clients += await asyncio.gather(*(
                join(stack, batch, gateway=i % args.gateways, cls=cls)
                for i in range(chunk, min(here, chunk + 25))))
        tickets = [await stack.participant(batch, i % args.gateways)
                   for i in range(here, args.clients)]
        urls = [t["ws_url"] for t in tickets]
        for start in range(0, len(urls), share):
            shards.append(Shard(urls[start:start + share], args))
            cpu.pids[f"bench clients{len(shards)}"] = shards[-1].process.pid
        joined = [c.version for c in clients]
        for shard in shards:
            await shard.ask(None, "joined")
        writers = clients[: args.writers]
        # One container per writer, then everyone at the same version.
        await asyncio.gather(*(w.patch([{"op": "add", "path": f"/w{i}", "value": {}}])
                               for i, w in enumerate(writers)))
        base = max(c.version for c in writers)
        ready = [await catch_up(clients, base, args.catch_up_timeout)]
        ready += [(await s.ask(("wait", base), "ready"))[1] for s in shards]
        if not all(ready):
            raise RuntimeError(f"subscribers did not reach version {base}")
        log(f"{args.clients} clients ({len(clients)} here, {len(shards)} other processes) at "
            f"version {base}; {len(writers)} writers x {args.inflight} in flight "
            f"for {args.seconds}s")

        result = LoadResult()
        cpu.start()
        await run_writers(writers, args.seconds, args.inflight, result)
        cpu_load = cpu.stop()
        final = max(result.acked, default=base)
        for shard in shards:
            shard.pipe.send(("final", final))
        caught_up = await catch_up(clients, final, args.catch_up_timeout)
        reports = [client_report(c, j, final) for c, j in zip(clients, joined, strict=True)]
        for shard in shards:
            _, ok, shard_reports = await shard.ask(None, "done")
            caught_up = caught_up and ok
            reports += shard_reports
        failures = verify(reports, base, final, len(writers), result)
        if not caught_up:
            failures.insert(0, f"subscribers did not catch up within {args.catch_up_timeout}s")

        # Latency: send of the command that made version v -> each subscriber's arrival of v.
        delivery: list[float] = []
        last_arrival = result.last_ack
        for r in reports:
            arrivals = array("d")
            arrivals.frombytes(r["arrivals"])
            offset = r["joined"] + 1
            for version, (sent_at, _, _) in result.acked.items():
                index = version - offset
                if 0 <= index < len(arrivals) and not math.isnan(arrivals[index]):
                    delivery.append(arrivals[index] - sent_at)
                    last_arrival = max(last_arrival, arrivals[index])
        committed = len(result.acked)
        delivered = len(delivery)
        frames = sum(r["update_frames"] for r in reports)
        ack_window = max(1e-9, result.last_ack - result.start)
        delivery_window = max(1e-9, last_arrival - result.start)
        return {
            "clients": len(reports),
            "writers": len(writers),
            "inflight_per_writer": args.inflight,
            "seconds": args.seconds,
            "client_procs": 1 + len(shards),
            "sent": result.sent,
            "committed": committed,
            "committed_per_s": committed / ack_window,
            "delivered": delivered,
            "delivered_per_s": delivered / delivery_window,
            "drain_s": last_arrival - result.stop_sending,
            "subscriber": "deferred apply" if args.defer_apply else "Participant",
            "update_frames": frames,
            "changes_per_frame": delivered / max(1, frames),
            "send_to_ack": summary_ms(result.ack_latencies),
            "send_to_delivery": summary_ms(delivery),
            "cpu_percent_of_one_core": cpu_load,
            # CPU time each process spent per committed patch over the load window.
            "cpu_us_per_commit": {
                name: pct / 100 * cpu.wall / max(1, committed) * 1e6
                for name, pct in cpu_load.items()
                if not name.startswith(("machine", "other"))},
            "ok": not failures,
            "failures": failures,
        }
    finally:
        for shard in shards:
            shard.stop()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# ---------------------------------------------------------------------------
# Report


def table(figures: dict[str, Any]) -> str:
    base = figures["baseline"]
    xadd = base["pipelined_xadd_per_s"]
    rtt = base["awaited_xadd_latency"]["p50_ms"]
    hot = figures["hot_batch"]
    idle = figures["idle_round_trip"]
    rows: list[tuple[str, str, str]] = [
        (f"baseline: pipelined XADD ({base['pipeline_size']} per round trip)",
         f"{xadd:>12,.0f} /s", "1.000"),
        ("baseline: awaited XADD, one at a time",
         f"{base['awaited_xadd_per_s']:>12,.0f} /s", f"{base['awaited_xadd_per_s'] / xadd:.3f}"),
        ("baseline: awaited XADD round trip p50", f"{rtt:>12.3f} ms", "1x"),
        ("committed patches (acks)", f"{hot['committed_per_s']:>12,.0f} /s",
         f"{hot['committed_per_s'] / xadd:.3f}"),
        (f"delivered changes (committed x {hot['clients']} subscribers)",
         f"{hot['delivered_per_s']:>12,.0f} /s", f"{hot['delivered_per_s'] / xadd:.3f}"),
    ]
    for label, key in (("send -> ack", "send_to_ack"),
                       ("send -> delivery, all subscribers", "send_to_delivery")):
        for q in ("p50", "p95", "p99"):
            ms = hot[key][f"{q}_ms"]
            rows.append((f"{label} {q}", f"{ms:>12.2f} ms", f"{ms / rtt:,.0f}x"))
    for q in ("p50", "p99"):
        ms = idle[f"{q}_ms"]
        rows.append((f"idle round trip patch -> ack {q}", f"{ms:>12.3f} ms", f"{ms / rtt:,.1f}x"))
    width = max(len(r[0]) for r in rows)
    out = [
        f"Cohort hot batch: {hot['clients']} clients, {hot['writers']} writers x "
        f"{hot['inflight_per_writer']} in flight, {hot['seconds']}s, "
        f"{figures['config']['gateways']} gateway(s), {figures['config']['workers']} worker(s), "
        f"subscribers: {hot['subscriber']} in {hot['client_procs']} process(es)",
        f"machine: {figures['machine']['cores']} cores ({figures['machine']['cpu']}), "
        f"Python {figures['machine']['python']}, Redis {figures['machine']['redis']}",
        "",
        f"{'figure':<{width}}  {'value':>15}  vs baseline",
        f"{'-' * width}  {'-' * 15}  -----------",
    ]
    out += [f"{a:<{width}}  {b:>15}  {c:>11}" for a, b, c in rows]
    out += [
        "",
        "vs baseline: throughput / pipelined XADD/s; latency / awaited XADD round trip p50",
        f"committed {hot['committed']:,} patches ({hot['sent']:,} sent), "
        f"delivered {hot['delivered']:,} changes, subscribers drained "
        f"{hot['drain_s']:.2f}s after the last send; {hot['update_frames']:,} update frames, "
        f"{hot['changes_per_frame']:.1f} changes per frame",
        "CPU over the load window (% of one core): " + ", ".join(
            f"{name} {value:.0f}%" for name, value in hot["cpu_percent_of_one_core"].items()),
        "CPU per committed patch: " + ", ".join(
            f"{name} {us:.0f} us" for name, us in hot["cpu_us_per_commit"].items())
        + " (1e6 / us = patches/s that process could take on one whole core)",
        "correctness: " + ("OK (every subscriber saw every version once, in order, "
                           "and holds the same data the acks imply)"
                           if hot["ok"] else "FAILED"),
    ]
    out += [f"  - {f}" for f in hot["failures"][:20]]
    other = hot["cpu_percent_of_one_core"].get("other processes", 0.0)
    if other > 25:
        out.append(f"WARNING: other processes used {other:.0f}% of a core during the load "
                   "(the machine is shared): these figures are lower than an idle machine's")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="subscribers (default 100)")
    parser.add_argument("--writers", type=int, default=10,
                        help="how many of the clients also write (default 10)")
    parser.add_argument("--inflight", type=int, default=50,
                        help="patches in flight per writer (default 50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration (default 10)")
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--pipeline", type=int, default=500, help="XADDs per pipeline")
    parser.add_argument("--idle-patches", type=int, default=200)
    parser.add_argument("--catch-up-timeout", type=float, default=60.0)
    parser.add_argument("--client-procs", type=int, default=1,
                        help="spread the subscribers over this many processes (default 1)")
    parser.add_argument("--defer-apply", action="store_true",
                        help="cheaper subscribers: record and check versions on arrival, "
                             "apply the patches after the load (see DeferredParticipant)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="use the default asyncio loop in this process")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 0 < args.writers <= args.clients:
        parser.error("--writers must be between 1 and --clients")
    if args.client_procs < 1:
        parser.error("--client-procs must be at least 1")
    return args


async def run(args: argparse.Namespace, stack: Stack, redis_url: str, prefix: str
              ) -> dict[str, Any]:
    log(f"baseline: XADD for {args.baseline_seconds}s pipelined + "
        f"{args.baseline_seconds / 3:.1f}s awaited")
    base = await baseline(redis_url, prefix, args.baseline_seconds, args.pipeline)
    log(f"starting {args.gateways} gateway(s) and {args.workers} worker(s), prefix {prefix}")
    await asyncio.to_thread(stack.start)
    idle = await idle_round_trip(stack, f"{prefix}-idle", args.idle_patches)
    log(f"idle round trip p50 {idle['p50_ms']:.2f} ms")
    cpu = CpuMeter(stack, redis_url)
    hot = await hot_batch(stack, f"{prefix}-hot", args, cpu)
    client = redis.Redis.from_url(redis_url)
    info = client.info("server")
    client.close()
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(),
                    "python": platform.python_version(), "redis": info.get("redis_version")},
        "baseline": base,
        "idle_round_trip": idle,
        "hot_batch": hot,
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cleanup(redis_url: str, database_url: str, prefix: str) -> int:
    """Delete every key under the prefix and the batch rows this run created."""
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    with contextlib.suppress(Exception):
        import asyncpg

        async def drop_rows() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute("DELETE FROM batches WHERE id LIKE $1", f"{prefix}-%")
            finally:
                await conn.close()

        asyncio.run(drop_rows())
    return deleted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    redis_url = os.environ.get("COHORT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url = os.environ.get("COHORT_BENCH_DATABASE_URL",
                                  "postgresql://postgres@127.0.0.1:5432/test")
    prefix = "bench" + secrets.token_hex(6)
    # Closed-loop writers go past one channel's default rate limit: the benchmark
    # measures the stack (COHORT_MAX_COMMANDS_PER_S overrides).
    unlimited = {} if "COHORT_MAX_COMMANDS_PER_S" in os.environ else {"max_commands_per_s": 0}
    stack = Stack(redis_url, database_url, prefix, gateways=args.gateways, workers=args.workers,
                  **unlimited)
    runner: Any = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop  # installed with uvicorn[standard]; the gateway runs on it too

            runner = uvloop.run
    figures = None
    # SIGTERM cleans up like Ctrl-C: stop the processes and delete the keys.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        figures = runner(run(args, stack, redis_url, prefix))
    finally:
        stack.stop()
        deleted = cleanup(redis_url, database_url, prefix)
        log(f"stopped the stack, deleted {deleted} keys under {prefix}:*")
        if figures is not None and figures["hot_batch"]["ok"]:
            shutil.rmtree(stack.log_dir, ignore_errors=True)
        else:
            for name in stack.procs:
                tail = stack.log(name).strip().splitlines()[-5:]
                if tail:
                    log(f"last lines of {name}.log:\n    " + "\n    ".join(tail))
            log(f"process logs kept in {stack.log_dir}")
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["hot_batch"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
