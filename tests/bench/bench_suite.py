"""The performance suite: every ``cohort loadtest`` scenario at fixed sizes against a real
stack, its baselines measured in the same run, the targets, and how the cores were shared.

Run: .venv/bin/python tests/bench/bench_suite.py [--affinity both|pinned|unpinned]
     [--only rtt,hot-batch,...] [--quick] [--py-spy DIR] [--json out.json]
     (about 10 minutes with the defaults: both affinity modes, one run each; not part of
     the test run: ``cohort test`` leaves tests/bench out)

What it does, in one process tree on this machine:

1. Starts a stack (``tests/e2e/stack.py``: one gateway, one worker, one finalizer) with
   its own Redis key prefix and a scratch Postgres database on the benchmark server,
   both removed at the end (also after an error or Ctrl-C).
2. For each affinity mode:
   - ``pinned``: the stack's processes on core 0 (``os.sched_setaffinity``, every
     thread), the load generator and the baseline clients on core 1. Redis and
     Postgres are shared servers of the machine: they are not pinned and float.
   - ``unpinned``: everything may run on both cores.
   It measures the baselines, then runs each scenario as its own process
   (``python -m services.cli loadtest ... --json``) and samples the CPU time of every
   process involved over the load window.
3. Prints each figure, its target, its baseline and the ratio, and the CPU shares.

Baselines (same machine, same run, same affinity):

- pipelined XADD from one Python process (redis-py asyncio, 500 per round trip), and
  one awaited XADD's round trip;
- a bare ``websockets`` server (``broadcast()``; uvloop) with the same client code as
  the load generator: messages/s to 100 clients, broadcast latency at Cohort's frame
  shape, echo round trip, a relay between pairs at the groups rate, a join storm
  (100 KB on open), and its resident memory with as many idle connections;
- asyncpg ``COPY`` of result-sized rows into a table.

Servers: $COHORT_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0) and
$COHORT_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test; the
scratch database is made on that server).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402

from services.gctune import tune_gc  # noqa: E402
from services.loadtest.clients import FrameCache, LeanSocket  # noqa: E402
from services.loadtest.stats import Histogram, own_rss_mb, raise_nofile  # noqa: E402

STACK_CORE = {0}
LOAD_CORE = {1}
ALL_CORES = {0, 1}
TOKEN = "e2e-admin-token"

# Targets (the issue): name -> (figure key, comparison, threshold, unit)
TARGETS = {
    "hot_committed_max": (">=", 5000, "/s"),
    "hot_p99_delivery_at_5000": ("<", 100, "ms"),
    "groups_p50": ("<", 10, "ms"),
    "groups_p99": ("<", 50, "ms"),
    "groups_errors": ("==", 0, ""),
    "rtt_p50": ("<", 3, "ms"),
    "storm_wall": ("<", 10, "s"),
    "storm_p99": ("<", 200, "ms"),
    "storm_paced_p99": ("<", 200, "ms"),
    "storm_1000_p99": ("<", 200, "ms"),
    "results_acked": (">=", 2000, "/s"),
    "idle_rss": ("<", 1024, "MB"),
}


def log(message: str) -> None:
    print(f"[suite {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Sizes


def plan(quick: bool) -> list[dict[str, Any]]:
    """The scenario runs, in order (idle last: its setup is the longest)."""
    scale = 0.1 if quick else 1.0
    secs = 3.0 if quick else 10.0

    def n(count: int) -> int:
        return max(2, int(count * scale))

    return [
        {"key": "rtt", "scenario": "rtt", "args": ["-n", "1", "-d", str(min(secs, 5.0))]},
        {"key": "hot_5000", "scenario": "hot-batch",
         "args": ["-n", str(n(100)), "--writers", "10", "--rate", str(500 * scale if quick
                                                                        else 500),
                  "-d", str(secs)]},
        {"key": "hot_max", "scenario": "hot-batch",
         "args": ["-n", str(n(100)), "--writers", "10", "--rate", "0", "--inflight", "20",
                  "-d", str(secs)]},
        {"key": "groups", "scenario": "groups",
         "args": ["-n", str(n(500)), "--rate", "10", "-d", str(secs)]},
        {"key": "groups_half", "scenario": "groups",
         "args": ["-n", str(n(500)), "--rate", "5", "-d", str(secs)]},
        {"key": "ab", "scenario": "ab", "args": ["-n", str(n(50)), "-d", str(secs)]},
        {"key": "storm", "scenario": "join-storm",
         "args": ["-n", str(n(1000)), "--session-bytes", "100000", "--rate", "0"]},
        {"key": "storm_paced", "scenario": "join-storm",
         "args": ["-n", str(n(1000)), "--session-bytes", "100000", "--rate", "100"]},
        # All 1,000 within one second: between the burst and the 10 s of the target.
        {"key": "storm_1000", "scenario": "join-storm",
         "args": ["-n", str(n(1000)), "--session-bytes", "100000", "--rate", "1000"]},
        {"key": "results", "scenario": "results", "args": ["-n", str(n(200)), "-d", str(secs)]},
        {"key": "idle", "scenario": "idle",
         "args": ["-n", str(n(10_000)), "-d", str(secs), "--open-concurrency", "200"]},
    ]


# ---------------------------------------------------------------------------
# CPU accounting


class CpuSampler:
    """CPU seconds of named processes (and Redis, Postgres, the machine) every 0.25 s."""

    def __init__(self, redis_url: str) -> None:
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.redis_url = redis_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def track(self, name: str, pid: int) -> None:
        """Sample ``pid`` under ``name`` (several processes may share a name over time)."""
        with self._lock:
            self.pids[f"{name}#{pid}"] = pid

    def forget(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self.pids if k.rsplit("#", 1)[0] == name]:
                del self.pids[key]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        rounds = 0
        postgres: list[int] = []
        while not self._stop.is_set():
            values: dict[str, float] = {}
            with self._lock:
                pids = dict(self.pids)
            for name, pid in pids.items():
                cpu = process_cpu(pid)
                if cpu is not None:
                    values[name] = cpu
            with contextlib.suppress(Exception):
                info = client.info("cpu")
                values["redis-server"] = float(info["used_cpu_user"]) + float(
                    info["used_cpu_sys"])
            if rounds % 20 == 0:  # Postgres backends come and go; a full scan is not free
                postgres = [p for p in _all_pids() if _comm(p) in ("postgres", "postmaster")]
            rounds += 1
            values["postgres"] = sum(process_cpu(p) or 0.0 for p in postgres)
            values["machine"] = machine_busy()
            self.samples.append((time.time(), values))
            self._stop.wait(0.25)
        client.close()

    def shares(self, start: float, end: float) -> dict[str, float]:
        """% of one core per process between two wall-clock times (from the samples just
        outside the window; a process that exited right after it: its last sample)."""
        out: dict[str, float] = {}
        keys = {k for _, values in self.samples for k in values}
        for key in keys:
            having = [(t, v[key]) for t, v in self.samples if key in v]
            before = [x for x in having if x[0] <= start]
            after = [x for x in having if x[0] >= end] or [x for x in having if x[0] > start]
            if not after or (not before and not after[0][0] > start):
                continue
            # A process first seen inside the window started there: it had used nothing.
            t0, a = before[-1] if before else (start, 0.0)
            t1, b = after[0] if after[0][0] >= end else after[-1]
            if t1 > t0 and b >= a:
                name = key.rsplit("#", 1)[0]
                share = 100 * (b - a) / max(t1 - t0, end - start)
                out[name] = out.get(name, 0.0) + share
        machine = out.pop("machine", None)
        if machine is not None:
            ours = sum(out.values())
            out["other processes"] = max(0.0, machine - ours)
            out["machine (2 cores = 200)"] = machine
        return out


def process_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto ``cpus`` (threads made later inherit it)."""
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)


# ---------------------------------------------------------------------------
# Baseline: a bare websockets server (child process) and its clients (child process)


STATE_BYTES = 100_000


def _update_frame(changes: list[tuple[int, float]]) -> str:
    """A frame shaped like Cohort's update frame; each change's value is its creation time."""
    body = ",".join(f'{{"v":{v},"ops":[{{"op":"add","path":"/x","value":{t!r}}}]}}'
                    for v, t in changes)
    return f'{{"type":"update","scope":"batch_session","pos":"{changes[-1][0]}-0",' \
           f'"changes":[{body}]}}'


async def ws_server(port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    subs: set[Any] = set()
    pairs: dict[str, list[Any]] = {}
    state = '{"type":"state","scope":"batch_session","version":1,"data":{"blob":"' + \
        "x" * STATE_BYTES + '"},"pos":"1-0"}'

    async def control(cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["cmd"] == "rss":
            return {"rss_mb": own_rss_mb()}
        if cmd["cmd"] == "broadcast":
            seconds, rate, every = cmd["seconds"], cmd["rate"], cmd.get("every_ms", 5) / 1000
            start = time.perf_counter()
            frames = changes = 0
            version = 0
            if rate <= 0:  # as fast as every client keeps up
                while time.perf_counter() - start < seconds:
                    for _ in range(20):
                        version += 1
                        broadcast(subs, _update_frame([(version, time.perf_counter())]))
                    frames += 20
                    await asyncio.sleep(0)
                    # Flow control: no client falls behind by more than 256 KB (polled;
                    # transports have no event for it).
                    while max((c.transport.get_write_buffer_size() for c in subs),  # noqa: ASYNC110
                              default=0) > 256 * 1024:
                        await asyncio.sleep(0.001)
                return {"frames": frames, "changes": frames, "seconds": seconds}
            made = 0
            while True:
                now = time.perf_counter()
                if now - start >= seconds:
                    break
                due = int((now - start) * rate) - made
                if due > 0:
                    # Changes "arrived" evenly over the interval; one frame carries them.
                    batch = [(version + i + 1, now - (due - i) / rate) for i in range(due)]
                    version += due
                    made += due
                    broadcast(subs, _update_frame(batch))
                    frames += 1
                    changes += due
                await asyncio.sleep(every)
            return {"frames": frames, "changes": changes, "seconds": seconds}
        return {"error": f"unknown {cmd}"}

    async def handler(ws: Any) -> None:
        path = ws.request.path
        if path.startswith("/sub"):
            subs.add(ws)
            try:
                await ws.wait_closed()
            finally:
                subs.discard(ws)
        elif path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path.startswith("/relay/"):
            peers = pairs.setdefault(path, [])
            peers.append(ws)
            try:
                async for message in ws:
                    for other in peers:
                        if other is not ws:
                            await other.send(message)
            finally:
                peers.remove(ws)
        elif path == "/state":
            await ws.send(state)
            await ws.wait_closed()
        elif path == "/idle":
            await ws.wait_closed()
        elif path == "/ctl":
            async for message in ws:
                await ws.send(json.dumps(await control(json.loads(message))))

    raise_nofile(30_000)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None,
                     ping_interval=None, backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()


async def ws_client(url: str, mode: str, n: int, seconds: float, rate: float
                    ) -> dict[str, Any]:
    """The baseline's client side, with the load generator's code (LeanSocket, pace)."""
    from services.loadtest.scenarios import pace
    from services.loadtest.stats import Recorder

    raise_nofile(n + 256)
    ctl_replies: asyncio.Queue[bytes] = asyncio.Queue()
    ctl = LeanSocket(ctl_replies.put_nowait)
    await ctl.open(f"{url}/ctl")

    async def ask(cmd: dict[str, Any]) -> dict[str, Any]:
        ctl.send_text(json.dumps(cmd).encode())
        return json.loads(await ctl_replies.get())

    result: dict[str, Any] = {"mode": mode, "clients": n}
    hist = Histogram()
    if mode in ("broadcast", "broadcast-paced"):
        cache = FrameCache()
        counts = [0]
        records: list[tuple[Any, float]] = []
        decoded: dict[int, list[float]] = {}

        def on_text(raw: bytes) -> None:
            peek = cache.get(raw)
            counts[0] += 1
            if mode == "broadcast-paced":
                records.append((peek, time.perf_counter()))

        socks = []
        for start in range(0, n, 100):
            chunk = [LeanSocket(on_text) for _ in range(start, min(n, start + 100))]
            await asyncio.gather(*(s.open(f"{url}/sub") for s in chunk))
            socks += chunk
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        reply = await ask({"cmd": "broadcast", "seconds": seconds, "rate": rate})
        await asyncio.sleep(0.3)  # the last frames in flight
        window = time.perf_counter() - t0 - 0.3
        result.update(messages=counts[0], messages_per_s=counts[0] / window,
                      frames_sent=reply["frames"], changes_sent=reply["changes"])
        if mode == "broadcast-paced":
            for peek, arrived in records:
                ts = decoded.get(id(peek))
                if ts is None:
                    ts = decoded[id(peek)] = [msgspec.json.decode(c.ops)[0]["value"]
                                              for c in peek.changes]
                hist.add_many([arrived - t for t in ts])
            result["changes_delivered_per_s"] = hist.count / window
        await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
    elif mode == "echo":
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        sock = LeanSocket(replies.put_nowait)
        await sock.open(f"{url}/echo")
        payload = b'{"type":"patch","id":"x-1","scope":"batch_session","ops":[]}'
        for _ in range(50):
            sock.send_text(payload)
            await replies.get()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            sock.send_text(payload)
            await replies.get()
            hist.add(time.perf_counter() - t)
        result["round_trips_per_s"] = hist.count / seconds
        await sock.close()
    elif mode == "relay":
        delivered = [0]

        def on_msg(raw: bytes) -> None:
            hist.add(time.perf_counter() - float(raw.split(b",", 1)[0][5:]))
            delivered[0] += 1

        socks = []
        for start in range(0, n, 100):
            chunk = [LeanSocket(on_msg) for _ in range(start, min(n, start + 100))]
            await asyncio.gather(*(s.open(f"{url}/relay/{(start + i) // 2}")
                                   for i, s in enumerate(chunk)))
            socks += chunk
        rec = Recorder("relay", quiet=True)

        def send(i: int, t: float) -> None:
            socks[i].send_text(f'{{"t":{t!r},"n":{i},"msg":"hello partner"}}'.encode())

        start_t = time.perf_counter()
        await pace(n, rate, start_t + seconds, send, rec)
        await asyncio.sleep(0.5)
        result.update(sent=int(seconds * rate * n), delivered=delivered[0],
                      delivered_per_s=delivered[0] / seconds)
        await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
    elif mode == "storm":
        got: dict[int, float] = {}
        arrived = [asyncio.Event() for _ in range(n)]
        socks = []

        def make(i: int) -> LeanSocket:
            def on_text(raw: bytes) -> None:
                if i not in got and len(raw) >= STATE_BYTES:
                    got[i] = time.perf_counter()
                    arrived[i].set()
            return LeanSocket(on_text)

        starts: dict[int, float] = {}

        async def one(i: int) -> None:
            s = make(i)
            socks.append(s)
            starts[i] = time.perf_counter()
            await s.open(f"{url}/state")
            await arrived[i].wait()

        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            if rate > 0:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        hist.add_many([got[i] - starts[i] for i in got])
        result["wall_s"] = max(got.values()) - t0
        await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
    elif mode == "idle":
        before = (await ask({"cmd": "rss"}))["rss_mb"]
        socks = []
        for start in range(0, n, 200):
            chunk = [LeanSocket(lambda raw: None) for _ in range(start, min(n, start + 200))]
            await asyncio.gather(*(s.open(f"{url}/idle") for s in chunk))
            socks += chunk
        await asyncio.sleep(seconds)
        after = (await ask({"cmd": "rss"}))["rss_mb"]
        result.update(rss_before_mb=before, rss_after_mb=after,
                      kb_per_connection=(after - before) * 1024 / n)
        for start in range(0, n, 500):
            await asyncio.gather(*(s.close() for s in socks[start:start + 500]),
                                 return_exceptions=True)
    if hist.count:
        result["latency_ms"] = hist.summary()
    await ctl.close()
    return result


class BaselineServer:
    def __init__(self, cpus: set[int], sampler: CpuSampler) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_ws-server", str(self.port)], cwd=REPO,
            stdout=subprocess.PIPE, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the baseline websockets server did not start")
        self.url = f"ws://127.0.0.1:{self.port}"
        self.sampler = sampler
        sampler.track("baseline server", self.proc.pid)

    def client(self, mode: str, n: int, seconds: float, rate: float, cpus: set[int]
               ) -> dict[str, Any]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "_ws-client", self.url, mode, str(n), str(seconds),
             str(rate)], cwd=REPO, stdout=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        self.sampler.track("baseline client", proc.pid)
        started = time.time()
        out, _ = proc.communicate(timeout=600)
        ended = time.time()
        self.sampler.forget("baseline client")
        if proc.returncode != 0:
            raise RuntimeError(f"baseline client {mode} failed ({proc.returncode})")
        result = json.loads(out)
        result["cpu"] = {"started": started, "ended": ended}
        return result

    def stop(self) -> None:
        self.sampler.forget("baseline server")
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Baselines: Redis XADD and Postgres COPY (in this process)


async def xadd_baseline(redis_url: str, prefix: str, seconds: float) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from session_store.events import SessionPatched, encode_event

    client = aioredis.Redis.from_url(redis_url)
    key = f"{prefix}:baseline"
    entry = {"e": encode_event(SessionPatched(
        scope="batch_session", version=123456, cmd="0123abcd-12345", run="0" * 32,
        gw="0" * 12, conn="0" * 16, ops=[{"op": "add", "path": "/w3/17", "value": 12345}]))}

    async def pipelined(window: float) -> float:
        count, start = 0, time.perf_counter()
        while time.perf_counter() < start + window:
            pipe = client.pipeline(transaction=False)
            for _ in range(500):
                pipe.xadd(key, entry, maxlen=100_000, approximate=True)
            await pipe.execute()
            count += 500
        return count / (time.perf_counter() - start)

    try:
        await pipelined(0.2)
        best = max([await pipelined(seconds / 3) for _ in range(3)])
        hist = Histogram()
        end = time.perf_counter() + seconds / 3
        while time.perf_counter() < end:
            t = time.perf_counter()
            await client.xadd(key, entry, maxlen=100_000, approximate=True)
            hist.add(time.perf_counter() - t)
        await client.unlink(key)
    finally:
        await client.aclose()
    return {"pipelined_per_s": best, "awaited_rtt": hist.summary(),
            "entry_bytes": len(entry["e"])}


async def copy_baseline(database_url: str, rows: int = 20_000) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMP TABLE bench_copy (run_id text, pos int, round int, "
                           "component_id text, data bytea, data_size int, state text)")
        body = b'{"participant":1,"n":1,"pad":"' + b"x" * 160 + b'"}'
        records = [(f"run-{i}", 1, 1, "page", body, len(body), "result_data_posted")
                   for i in range(rows)]
        best = 0.0
        for _ in range(3):
            await conn.execute("TRUNCATE bench_copy")
            t = time.perf_counter()
            await conn.copy_records_to_table("bench_copy", records=records)
            best = max(best, rows / (time.perf_counter() - t))
        settings = dict(await conn.fetch("SELECT name, setting FROM pg_settings WHERE name IN "
                                         "('synchronous_commit', 'fsync', 'server_version')"))
    finally:
        await conn.close()
    return {"rows_per_s": best, "rows": rows, "postgres": settings}


# ---------------------------------------------------------------------------
# py-spy


def pyspy_binary() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


IDLE_FRAMES = ("Runner.run (asyncio/runners.py", "EpollSelector.select", "run (uvloop",
               "BaseEventLoop.run_forever")


def summarize_profile(path: Path, top: int = 12) -> list[str]:
    """The functions where a py-spy raw profile spends its busy samples (self time), and
    the top inclusive frames of the project's own code."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";") if f]
        if not frames or frames[-1].startswith(IDLE_FRAMES):
            continue
        n = int(count)
        busy += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not busy:
        return ["(no busy samples)"]
    lines = [f"{busy} busy samples; self time:"]
    lines += [f"  {100 * n / busy:5.1f}%  {f[:110]}" for f, n in own.most_common(top)]
    project = [(f, n) for f, n in incl.most_common() if re.search(
        r"\((gateway|session_store|services|results_store)/", f) and not f.startswith(
        ("main (", "_call (", "cmd_", "run (services", "serve (", "<module>"))]
    lines.append("  inclusive, project code:")
    lines += [f"  {100 * n / busy:5.1f}%  {f[:110]}" for f, n in project[:top]]
    return lines


# ---------------------------------------------------------------------------
# One mode


def run_scenario(step: dict[str, Any], url: str, cpus: set[int], sampler: CpuSampler,
                 workdir: Path, spy: str | None, spy_pids: dict[str, int], mode: str,
                 attempt: int = 0) -> dict[str, Any]:
    out = workdir / f"{mode}-{step['key']}-{attempt}.json"
    mark = workdir / f"{mode}-{step['key']}-{attempt}.started"
    command = [sys.executable, "-m", "services.cli", "loadtest", step["scenario"], "--url", url,
               "--token", TOKEN, "--json", str(out), "--mark-start", str(mark),
               "--log-level", "warning", *step["args"]]
    log(f"{mode}: loadtest {step['scenario']} {' '.join(step['args'])}")
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    sampler.track("load generator", proc.pid)
    spies: list[subprocess.Popen[bytes]] = []
    if spy:
        duration = next((float(a) for f, a in zip(step["args"], step["args"][1:], strict=False)
                         if f == "-d"), 8.0)
        while not mark.exists() and proc.poll() is None:
            time.sleep(0.1)
        if mark.exists():
            time.sleep(0.3)
            for name, pid in {**spy_pids, "generator": proc.pid}.items():
                target = workdir / f"pyspy-{mode}-{step['key']}-{name}.txt"
                spies.append(subprocess.Popen(
                    [spy, "record", "-p", str(pid), "-d", str(max(1, int(duration - 1))),
                     "-r", os.environ.get("COHORT_BENCH_SPY_RATE", "100"), "-f", "raw",
                     "-o", str(target), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    stdout, stderr = proc.communicate(timeout=1800)
    sampler.forget("load generator")
    for s in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            s.wait(30)
    print(stdout, file=sys.stderr, flush=True)  # the loadtest's own table, for the record
    if not out.exists():
        raise RuntimeError(f"loadtest {step['scenario']} failed ({proc.returncode}):\n"
                           f"{stderr[-3000:]}")
    result = json.loads(out.read_text())
    window = result.get("load_window_unix")
    if window:
        time.sleep(0.3)  # one more CPU sample after the window
        result["cpu"] = sampler.shares(window[0], window[1])
    result["exit_code"] = proc.returncode
    return result


def restart_gateway(stack: Any, cpus: set[int], sampler: CpuSampler) -> None:
    old = stack.procs["gateway0"]
    sampler.forget("gateway0")
    old.terminate()
    try:
        old.wait(15)
    except subprocess.TimeoutExpired:
        old.kill()
        old.wait()
    stack.gateway_urls[0] = stack.start_gateway(0)
    pin(stack.procs["gateway0"].pid, cpus)
    sampler.track("gateway0", stack.procs["gateway0"].pid)


def redis_stalls(redis_url: str, prefix: str, start: float, end: float) -> dict[str, Any]:
    """Commands of this stack that Redis logged as slow (SLOWLOG: over 10 ms by default)
    within a window: while one runs, every other client of the server waits."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.slowlog_get(128)
        threshold = client.config_get("slowlog-log-slower-than").get(
            "slowlog-log-slower-than")
    except redis.RedisError:
        return {}
    finally:
        client.close()
    ours = [e for e in entries if start - 1 <= e["start_time"] <= end + 1
            and prefix.encode() in e["command"][:400]]
    names = collections.Counter(e["command"].split(b" ", 1)[0].decode() for e in ours)
    return {"count": len(ours), "max_ms": max((e["duration"] / 1000 for e in ours), default=0),
            "commands": dict(names), "threshold_us": threshold}


def run_mode(mode: str, stack: Any, sampler: CpuSampler, args: argparse.Namespace,
             redis_url: str, database_url: str, prefix: str, workdir: Path) -> dict[str, Any]:
    stack_cpus, load_cpus = (STACK_CORE, LOAD_CORE) if mode == "pinned" else (ALL_CORES,
                                                                              ALL_CORES)
    for proc in stack.procs.values():
        pin(proc.pid, stack_cpus)
    pin(os.getpid(), load_cpus)  # this process: the XADD and COPY baselines
    steps = [s for s in plan(args.quick) if not args.only or s["key"] in args.only
             or s["scenario"] in args.only]
    sizes = {s["key"]: s for s in steps}
    quick = args.quick
    figures: dict[str, Any] = {"mode": mode, "baselines": {}, "runs": {}}
    base = figures["baselines"]

    log(f"{mode}: baselines")
    t0 = time.time()
    base["xadd"] = asyncio.run(xadd_baseline(redis_url, prefix, 3.0))
    base["xadd"]["cpu"] = sampler.shares(t0, time.time())
    base["copy"] = asyncio.run(copy_baseline(database_url))
    server = BaselineServer(stack_cpus, sampler)
    try:
        def n_of(key: str, default: int) -> int:
            step = sizes.get(key)
            if step and "-n" in step["args"]:
                return int(step["args"][step["args"].index("-n") + 1])
            return default

        secs = 3.0 if quick else 5.0
        subs = n_of("hot_5000", 100)
        for name, call in (
            ("broadcast", ("broadcast", subs, secs, 0)),
            ("broadcast_paced", ("broadcast-paced", subs, secs, 500 if quick else 5000)),
            ("echo", ("echo", 1, secs, 0)),
            ("relay", ("relay", n_of("groups", 500), secs, 10)),
            ("storm", ("storm", n_of("storm", 1000), 0, 0)),
            ("storm_paced", ("storm", n_of("storm_paced", 1000), 0, 100)),
            ("storm_1000", ("storm", n_of("storm_1000", 1000), 0, 1000)),
            ("idle", ("idle", n_of("idle", 10_000), 3.0, 0)),
        ):
            if name == "idle":
                if "idle" not in sizes:
                    continue
                # Memory per connection: a server that never held other sockets.
                server.stop()
                server = BaselineServer(stack_cpus, sampler)
            log(f"{mode}: baseline websockets {name}")
            result = server.client(*call, cpus=load_cpus)
            window = result.pop("cpu")
            time.sleep(0.3)
            result["cpu"] = sampler.shares(window["started"], window["ended"])
            base[name] = result
    finally:
        server.stop()

    spy = pyspy_binary() if args.py_spy else None
    spy_pids = {name: p.pid for name, p in stack.procs.items()}
    figures["repeats"] = {}
    for step in steps:
        if step["key"] == "idle":
            # Memory per channel needs a gateway that never held thousands of sockets
            # (CPython keeps freed arenas): a fresh gateway process for this run.
            restart_gateway(stack, stack_cpus, sampler)
            spy_pids = {name: p.pid for name, p in stack.procs.items()}
        runs = []
        for attempt in range(args.repeat):
            run = run_scenario(step, stack.gateway_urls[0], load_cpus, sampler, workdir,
                               spy if attempt == 0 else None, spy_pids, mode, attempt)
            if run.get("load_window_unix"):
                run["redis_stalls"] = redis_stalls(redis_url, prefix, *run["load_window_unix"])
            runs.append(run)
        # The machine is shared: report the run the rest of the machine disturbed least.
        figures["runs"][step["key"]] = min(
            runs, key=lambda r: r.get("cpu", {}).get("other processes", 0.0))
        figures["repeats"][step["key"]] = runs
    if spy:
        figures["profiles"] = {}
        for path in sorted(workdir.glob(f"pyspy-{mode}-*.txt")):
            figures["profiles"][path.stem] = summarize_profile(path)
            if args.py_spy:
                shutil.copy(path, Path(args.py_spy) / path.name)
    return figures


# ---------------------------------------------------------------------------
# Report


def lat(run: dict[str, Any], name: str, q: str = "p99_ms") -> float:
    return run.get("latency_ms", {}).get(name, {}).get(q, math.nan)


def figure_rows(f: dict[str, Any]) -> list[tuple[str, float, str, str, str, str]]:
    """(label, value, unit, target, met, baseline-and-ratio) for one mode."""
    b, r = f["baselines"], f["runs"]
    rows: list[tuple[str, float, str, str, str, str]] = []

    def target(key: str, value: float) -> tuple[str, str]:
        if key not in TARGETS or value is None or (isinstance(value, float) and
                                                   math.isnan(value)):
            return "", ""
        op, limit, unit = TARGETS[key]
        ok = {">=": value >= limit, "<": value < limit, "==": value == limit}[op]
        return f"{op} {limit:,} {unit}".strip(), "yes" if ok else "NO"

    def ratio(value: float, baseline: float | None, label: str) -> str:
        if baseline is None or not baseline or value is None or math.isnan(value) or \
                math.isnan(baseline):
            return ""
        return f"{value / baseline:,.3g}x {label}"

    def add(label: str, value: float, unit: str, key: str = "", baseline: float | None = None,
            base_label: str = "") -> None:
        t, met = target(key, value)
        rows.append((label, value, unit, t, met, ratio(value, baseline, base_label)))

    xadd = b.get("xadd", {}).get("pipelined_per_s")
    xrtt = b.get("xadd", {}).get("awaited_rtt", {}).get("p50_ms")
    bc = b.get("broadcast", {}).get("messages_per_s")
    if "rtt" in r:
        run = r["rtt"]
        add("idle round trip patch→ack p50", lat(run, "patch→ack", "p50_ms"), "ms", "rtt_p50",
            b.get("echo", {}).get("latency_ms", {}).get("p50_ms"), "bare ws echo p50")
        add("idle round trip patch→ack p99", lat(run, "patch→ack"), "ms", "",
            xrtt, "awaited XADD p50")
    if "hot_max" in r:
        run = r["hot_max"]
        tp = run["throughput_per_s"]
        add("hot batch max: committed patches/s (closed loop)",
            tp["committed patches (acks)"], "/s", "hot_committed_max", xadd, "pipelined XADD")
        add(f"hot batch max: delivered changes/s ({run['participants']} subscribers)",
            tp["delivered changes (all subscribers)"], "/s", "", bc,
            "bare broadcast msgs/s (1 change each)")
        add("hot batch max: send→delivery p99", lat(run, "send→delivery (every subscriber)"),
            "ms")
    if "hot_5000" in r:
        run = r["hot_5000"]
        tp = run["throughput_per_s"]
        offered = f"{run['config']['rate'] * run['figures']['writers']:,.0f}"
        paced = b.get("broadcast_paced", {}).get("latency_ms", {})
        add(f"hot batch @{offered}/s: committed patches/s", tp["committed patches (acks)"], "/s",
            "", xadd, "pipelined XADD")
        add(f"hot batch @{offered}/s: update frames received/s",
            tp["update frames received (all subscribers)"], "/s", "", bc,
            "bare broadcast msgs/s")
        add(f"hot batch @{offered}/s: send→delivery p50",
            lat(run, "send→delivery (every subscriber)", "p50_ms"), "ms", "",
            paced.get("p50_ms"), "bare broadcast p50")
        add(f"hot batch @{offered}/s: send→delivery p99",
            lat(run, "send→delivery (every subscriber)"), "ms", "hot_p99_delivery_at_5000",
            paced.get("p99_ms"), "bare broadcast p99")
        rows.append((f"hot batch @{offered}/s: every subscriber got every patch in order",
                     math.nan, "ok" if run["checks"].get(
                         "every subscriber saw every version once, in order") else "FAILED",
                     "", "", ""))
    if "groups" in r:
        run = r["groups"]
        relay = b.get("relay", {}).get("latency_ms", {})
        worst50 = max(lat(run, "send→delivery (group message)", "p50_ms"),
                      lat(run, "send→delivery (group session patch)", "p50_ms"))
        worst99 = max(lat(run, "send→delivery (group message)"),
                      lat(run, "send→delivery (group session patch)"))
        add("groups: delivered to partners/s", run["throughput_per_s"]["delivered to partners"],
            "/s", "", b.get("relay", {}).get("delivered_per_s"), "bare relay")
        add("groups: send→partner p50 (worse of msg/patch)", worst50, "ms", "groups_p50",
            relay.get("p50_ms"), "bare relay p50")
        add("groups: send→partner p99 (worse of msg/patch)", worst99, "ms", "groups_p99",
            relay.get("p99_ms"), "bare relay p99")
        add("groups: send→ack p99 (message)", lat(run, "send→ack (group message)"), "ms")
        add("groups: errors", run["counts"]["errors"] + run["counts"]["failed"], "",
            "groups_errors")
    if "groups_half" in r:
        run = r["groups_half"]
        add("groups at half the rate (5 msg/s each): delivered/s",
            run["throughput_per_s"]["delivered to partners"], "/s")
        add("groups at half the rate: send→partner p50", max(
            lat(run, "send→delivery (group message)", "p50_ms"),
            lat(run, "send→delivery (group session patch)", "p50_ms")), "ms")
        add("groups at half the rate: send→partner p99", max(
            lat(run, "send→delivery (group message)"),
            lat(run, "send→delivery (group session patch)")), "ms")
    if "ab" in r:
        run = r["ab"]
        add(f"A/B: assignments/s ({run['participants']} participants, CAS retried)",
            run["throughput_per_s"]["assignments"], "/s", "", xadd, "pipelined XADD")
        add("A/B: conflicts per assignment", run["figures"]["conflicts per assignment"], "")
        add("A/B: assignment p99 (retries included)",
            lat(run, "assignment (first send→ack, retries included)"), "ms")
        rows.append(("A/B: totals exact and balanced", math.nan, "ok" if run["ok"] else "FAILED",
                     "", "", ""))
    for key, label in (("storm", "all at once"), ("storm_1000", "1,000 opens/s"),
                       ("storm_paced", "100 opens/s")):
        if key not in r:
            continue
        run = r[key]
        bs = b.get(key, {})
        add(f"join storm ({label}): wall time, {run['participants']:,} x 100 KB", run["figures"][
            "storm wall time (s)"], "s", "storm_wall" if key == "storm" else "",
            bs.get("wall_s"), "bare ws storm")
        add(f"join storm ({label}): open→full state p50", lat(run, "open→full state", "p50_ms"),
            "ms", "", bs.get("latency_ms", {}).get("p50_ms"), "bare ws p50")
        add(f"join storm ({label}): open→full state p99", lat(run, "open→full state"), "ms",
            f"{key}_p99",
            bs.get("latency_ms", {}).get("p99_ms"), "bare ws p99")
    if "results" in r:
        run = r["results"]
        add("results: acknowledged submissions/s", run["throughput_per_s"][
            "acknowledged submissions"], "/s", "results_acked",
            b.get("copy", {}).get("rows_per_s"), "asyncpg COPY rows/s")
        add("results: submit→stored p99", lat(run, "submit→stored"), "ms")
    if "idle" in r:
        run = r["idle"]
        fig = run["figures"]
        add(f"idle: gateway RSS with {run['participants']:,} channels",
            fig.get("max gateway RSS (MB)", math.nan), "MB", "idle_rss")
        add("idle: gateway RSS per channel (fresh gateway process)",
            fig.get("gateway RSS per channel (KB)", math.nan), "KB", "",
            b.get("idle", {}).get("kb_per_connection"), "bare ws server KB/conn")
    return rows


def key_figure(key: str, run: dict[str, Any]) -> str:
    """The figure a target is about, for the list of repeated runs."""
    if key in ("hot_5000", "hot_max"):
        return (f"{run['throughput_per_s']['committed patches (acks)']:,.0f}/s p99 "
                f"{lat(run, 'send→delivery (every subscriber)'):,.0f} ms")
    if key.startswith("groups"):
        names = ("send→delivery (group message)", "send→delivery (group session patch)")
        return (f"p50 {max(lat(run, n, 'p50_ms') for n in names):,.1f} / p99 "
                f"{max(lat(run, n) for n in names):,.1f} ms")
    if key == "rtt":
        return f"p50 {lat(run, 'patch→ack', 'p50_ms'):.2f} ms"
    if key.startswith("storm"):
        return f"p99 {lat(run, 'open→full state'):,.0f} ms"
    if key == "results":
        return f"{run['throughput_per_s']['acknowledged submissions']:,.0f}/s"
    if key == "ab":
        return f"{run['throughput_per_s']['assignments']:,.0f}/s"
    if key == "idle":
        return f"{run['figures'].get('max gateway RSS (MB)', math.nan):,.0f} MB"
    return "?"


def render(all_figures: dict[str, Any]) -> str:
    meta = all_figures["meta"]
    out = [
        "Cohort bench suite",
        f"machine: {meta['cores']} cores ({meta['cpu']}), Python {meta['python']}, "
        f"Redis {meta['redis']}, Postgres {meta['postgres']}; load average at start "
        f"{meta['loadavg_start']}",
        f"stack: 1 gateway, 1 worker, 1 finalizer; key prefix {meta['prefix']}, scratch "
        f"database {meta['database']}",
        "",
    ]
    for mode, f in all_figures["modes"].items():
        b = f["baselines"]
        out.append(f"=== {mode}: " + (
            "gateway, worker, finalizer (and the bare ws server) on core 0; load generator "
            "and baseline clients on core 1; Redis and Postgres not pinned"
            if mode == "pinned" else "every process may use both cores"))
        out.append("baselines:")
        if "xadd" in b:
            x = b["xadd"]
            out.append(f"  pipelined XADD from one process (500/round trip)   "
                       f"{x['pipelined_per_s']:>12,.0f} /s")
            out.append(f"  awaited XADD round trip p50 / p99                 "
                       f"{x['awaited_rtt']['p50_ms']:>8.3f} / {x['awaited_rtt']['p99_ms']:.3f}"
                       " ms")
        if "copy" in b:
            out.append(f"  asyncpg COPY of result rows (best of 3 x 20,000)  "
                       f"{b['copy']['rows_per_s']:>12,.0f} rows/s")
        if "broadcast" in b:
            x = b["broadcast"]
            out.append(f"  ws broadcast() to {x['clients']} clients, 1-change frames  "
                       f"{x['messages_per_s']:>12,.0f} msgs/s")
        if "broadcast_paced" in b:
            x = b["broadcast_paced"]
            out.append(f"  ws broadcast() {x['changes_sent'] / max(1, x['frames_sent']):.0f} "
                       f"changes/frame, 5,000 changes/s: delivery p50 / p99  "
                       f"{x['latency_ms']['p50_ms']:.2f} / {x['latency_ms']['p99_ms']:.2f} ms")
        if "echo" in b:
            x = b["echo"]["latency_ms"]
            out.append(f"  ws echo round trip p50 / p99                      "
                       f"{x['p50_ms']:>8.3f} / {x['p99_ms']:.3f} ms")
        if "relay" in b:
            x = b["relay"]
            out.append(f"  ws relay, {x['clients']} clients in pairs, 10 msg/s each: "
                       f"{x['delivered_per_s']:,.0f}/s, p50 / p99 "
                       f"{x['latency_ms']['p50_ms']:.2f} / {x['latency_ms']['p99_ms']:.2f} ms")
        for key, label in (("storm", "all at once"), ("storm_1000", "1,000/s"),
                           ("storm_paced", "100/s")):
            if key in b:
                x = b[key]
                out.append(f"  ws storm {x['clients']} x 100 KB "
                           f"({label}): wall "
                           f"{x['wall_s']:.2f} s, p50 / p99 {x['latency_ms']['p50_ms']:.2f} / "
                           f"{x['latency_ms']['p99_ms']:.2f} ms")
        if "idle" in b:
            x = b["idle"]
            out.append(f"  ws server with {x['clients']:,} idle connections: "
                       f"{x['rss_after_mb']:.0f} MB RSS ({x['kb_per_connection']:.1f} KB each)")
        out.append("")
        rows = figure_rows(f)
        w = max(len(r[0]) for r in rows) if rows else 10
        out.append(f"  {'figure':<{w}}  {'value':>14}  {'target':<14} {'met':<4} vs baseline")
        out.append(f"  {'-' * w}  {'-' * 14}  {'-' * 14} {'-' * 4} {'-' * 30}")
        for label, value, unit, target, met, ratio in rows:
            if isinstance(value, float) and math.isnan(value):
                text = unit
            elif unit == "ms":
                text = f"{value:,.2f} ms"
            elif unit in ("/s", "MB", "KB", "s"):
                text = f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
            else:
                text = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
            out.append(f"  {label:<{w}}  {text:>14}  {target:<14} {met:<4} {ratio}")
        out.append("")
        out.append("  CPU over each load window, % of one core (200 = both cores):")
        cols = ["gateway0", "worker0", "finalizer", "load generator", "redis-server", "postgres",
                "other processes", "machine (2 cores = 200)"]
        head = ["gateway", "worker", "finalizer", "generator", "redis", "postgres", "others",
                "machine"]
        out.append(f"  {'run':<14}" + "".join(f"{h:>10}" for h in head)
                   + "   Redis slowlog (ours)")
        for key, run in f["runs"].items():
            cpu = run.get("cpu", {})
            stalls = run.get("redis_stalls") or {}
            slow = (f"   {stalls['count']} >10 ms, max {stalls['max_ms']:.0f} ms "
                    f"({', '.join(f'{k} {v}' for k, v in stalls['commands'].items())})"
                    if stalls.get("count") else "   -")
            out.append(f"  {key:<14}" + "".join(
                f"{cpu[c]:>10.0f}" if c in cpu else f"{'-':>10}" for c in cols) + slow)
        out.append("  (baselines: the bare ws server in the gateway column, its client in the "
                   "generator column)")
        for key in ("broadcast", "broadcast_paced", "echo", "relay", "storm", "storm_1000",
                    "storm_paced"):
            cpu = b.get(key, {}).get("cpu", {})
            if cpu:
                out.append(f"  {'ws ' + key:<14}" + "".join(
                    f"{cpu[c]:>10.0f}" if c in cpu else f"{'-':>10}" for c in [
                        "baseline server", "-", "-", "baseline client", "redis-server",
                        "postgres", "other processes", "machine (2 cores = 200)"]))
        failed = [k for k, run in f["runs"].items() if not run.get("ok")]
        out.append("")
        out.append("  scenario checks: " + ("all passed" if not failed else
                                            f"FAILED: {', '.join(failed)}"))
        for k in failed:
            for failure in f["runs"][k].get("failures", [])[:5]:
                out.append(f"    {k}: {failure}")
        repeats = {k: v for k, v in f.get("repeats", {}).items() if len(v) > 1}
        if repeats:
            out.append("  every run (key figure, [CPU % of other processes]); the table "
                       "shows the least disturbed:")
            for key, runs in repeats.items():
                out.append(f"    {key:<12} " + ", ".join(
                    f"{key_figure(key, run)} [{run.get('cpu', {}).get('other processes', 0):.0f}]"
                    for run in runs))
        for name, lines in f.get("profiles", {}).items():
            out.append(f"  profile {name}:")
            out += [f"    {line}" for line in lines]
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main


def cleanup(redis_url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        keys: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            keys.append(key)
            if len(keys) >= 500:
                deleted += client.unlink(*keys)
                keys = []
        if keys:
            deleted += client.unlink(*keys)
    finally:
        client.close()
    return deleted


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["_ws-server"], ["_ws-client"]):
        tune_gc()  # as in the gateway and the load generator: like against like
    if argv[:1] == ["_ws-server"]:
        import uvloop

        uvloop.run(ws_server(int(argv[1])))
        return 0
    if argv[:1] == ["_ws-client"]:
        import uvloop

        url, mode, n, seconds, rate = argv[1], argv[2], int(argv[3]), float(argv[4]), \
            float(argv[5])
        print(json.dumps(uvloop.run(ws_client(url, mode, n, seconds, rate))))
        return 0

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--affinity", choices=("both", "pinned", "unpinned"), default="both")
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default=set(),
                        help="comma-separated run keys or scenarios (rtt, hot_5000, hot_max, "
                        "groups, ab, storm, storm_1000, storm_paced, results, idle)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes, 3 s runs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each scenario this many times and report the run with the "
                        "least CPU used by other processes (all runs are listed)")
    parser.add_argument("--py-spy", metavar="DIR",
                        help="profile the gateway, worker and load generator of every run "
                        "with py-spy (raw files kept in DIR; summaries printed)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2 and args.affinity != "unpinned":
        parser.error("pinning needs two cores")
    if args.py_spy:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
        if pyspy_binary() is None:
            parser.error("py-spy is not installed (pip install py-spy into the venv)")

    from tests.e2e.stack import Stack
    from tests.service_fixtures import create_database, drop_database

    redis_url = os.environ.get("COHORT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    server_url = os.environ.get("COHORT_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/test")
    prefix = "bench" + secrets.token_hex(6)
    raise_nofile(30_000)  # children inherit it (the gateway holds 10,000 sockets)
    database = asyncio.run(create_database(server_url))
    workdir = Path(tempfile.mkdtemp(prefix="cohort-suite-"))
    sampler = CpuSampler(redis_url)
    # The suite measures the stack, not one channel's rate limit: the closed-loop hot
    # batch drives ~2,000 patches/s per writer (COHORT_MAX_COMMANDS_PER_S overrides).
    unlimited = {} if "COHORT_MAX_COMMANDS_PER_S" in os.environ else {"max_commands_per_s": 0}
    stack = Stack(redis_url, database, prefix, gateways=1, workers=1,
                  log_dir=workdir / "logs", **unlimited)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    all_figures: dict[str, Any] = {"modes": {}}
    ok = False
    try:
        import redis

        client = redis.Redis.from_url(redis_url)
        redis_version = client.info("server").get("redis_version")
        client.close()
        all_figures["meta"] = {
            "cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "redis": redis_version, "postgres": "?", "prefix": prefix,
            "database": database.rsplit("/", 1)[-1],
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        log(f"starting the stack (prefix {prefix}, database {database})")
        stack.start()
        stack._spawn("finalizer", "finalizer")
        sampler.start()
        for name, proc in stack.procs.items():
            sampler.track(name, proc.pid)
        modes = ["pinned", "unpinned"] if args.affinity == "both" else [args.affinity]
        for mode in modes:
            figures = run_mode(mode, stack, sampler, args, redis_url, database, prefix,
                               workdir)
            all_figures["modes"][mode] = figures
            pg = figures["baselines"].get("copy", {}).get("postgres", {})
            all_figures["meta"]["postgres"] = (
                f"{pg.get('server_version', '?')} (synchronous_commit="
                f"{pg.get('synchronous_commit', '?')}, fsync={pg.get('fsync', '?')})")
        all_figures["meta"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        ok = True
    finally:
        sampler.stop()
        stack.stop()
        deleted = cleanup(redis_url, prefix)
        with contextlib.suppress(Exception):
            asyncio.run(drop_database(server_url, database))
        log(f"stopped the stack, deleted {deleted} keys under {prefix}:*, dropped "
            f"{database.rsplit('/', 1)[-1]}")
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")
    print(render(all_figures))
    if args.json:
        args.json.write_text(json.dumps(all_figures, indent=2, default=str) + "\n")
    return 0


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
