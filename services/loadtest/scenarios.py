"""The load-test scenarios. Each sets up what it needs on the deployment, runs its load
for ``--duration`` seconds, checks what it can, and returns the summary (a dict)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from services.loadtest.clients import (
    Deployment,
    FrameCache,
    HttpConnection,
    LoadParticipant,
    Ticket,
)
from services.loadtest.stats import Recorder, own_rss_mb, raise_nofile

SLOTS = 64  # keys per hot-batch writer: the session stays small however long the run


@dataclass
class Options:
    urls: list[str]
    token: str
    participants: int
    duration: float
    rate: float              # per sending participant per second; 0 = closed loop
    session_bytes: int = 100_000
    writers: int = 10        # hot-batch: how many participants write
    inflight: int = 20       # closed loop: commands in flight per sender
    apply: bool = False      # subscribers apply every change (slower, checks data)
    open_concurrency: int = 200
    quiet: bool = False
    mark_start: str | None = None  # a file written when the load starts (for profilers)
    transport: str = "lean"  # participants' WebSocket client: "lean" or "websockets"
    label: str = "loadtest"
    extra: dict[str, Any] = field(default_factory=dict)


Scenario = Callable[[Options, Deployment, Recorder], Awaitable[dict[str, Any]]]


# ---------------------------------------------------------------------------
# Helpers


async def open_all(tickets: list[Ticket], rec: Recorder, cache: FrameCache, concurrency: int,
                   **kwargs: Any) -> list[LoadParticipant]:
    """Open every ticket's channel (``concurrency`` handshakes at once) and wait for state."""
    gate = asyncio.Semaphore(concurrency)
    opened = 0
    last = time.perf_counter()

    async def one(i: int, ticket: Ticket) -> LoadParticipant:
        nonlocal opened, last
        async with gate:
            p = LoadParticipant(ticket, rec, cache, index=i, **kwargs)
            await p.open()
            await p.wait_ready(60)
        opened += 1
        if time.perf_counter() - last > 2:
            last = time.perf_counter()
            rec.log(f"setup: {opened:,}/{len(tickets):,} channels open")
        return p

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tickets))))


async def close_all(people: list[Any]) -> None:
    for start in range(0, len(people), 500):
        await asyncio.gather(*(p.close() for p in people[start:start + 500]),
                             return_exceptions=True)


async def pace(count: int, rate_each: float, deadline: float, send: Callable[[int, float], Any],
               rec: Recorder) -> None:
    """Open loop: sender ``i`` fires every 1/rate_each s, phases spread evenly, until the
    deadline. ``send(i, intended_time)``; latencies count from the intended time, so a
    generator that falls behind shows (the lag is recorded too)."""
    period = 1.0 / rate_each
    start = time.perf_counter()
    heap = [(start + period * i / count, i) for i in range(count)]
    lag = rec.hist("generator lag behind schedule")
    while True:
        now = time.perf_counter()
        while heap[0][0] <= now:
            t, i = heap[0]
            if t >= deadline:
                return
            send(i, t)
            lag.add(now - t)
            heapq.heapreplace(heap, (t + period, i))
        if heap[0][0] >= deadline:
            await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
            return
        # At least a millisecond: the loop's timers are no finer, shorter sleeps spin.
        await asyncio.sleep(max(0.001, heap[0][0] - time.perf_counter()))


def summary(rec: Recorder, opts: Options, participants: int, window: float,
            throughput: dict[str, float], figures: dict[str, Any], checks: dict[str, bool],
            failures: list[str]) -> dict[str, Any]:
    if rec.errors:
        failures = [f"{rec.errors} errors", *failures]
    config = asdict(opts)
    config.pop("token", None)
    return {
        "scenario": rec.scenario,
        "url": ", ".join(opts.urls),
        "participants": participants,
        "duration_s": round(window, 3),
        "config": config,
        "counts": {"sent": rec.sent, "acked": rec.acked, "failed": rec.failed,
                   "delivered": rec.delivered, "errors": rec.errors, "resyncs": rec.resyncs,
                   "gaps": rec.gaps, **rec.extra},
        "throughput_per_s": {k: round(v, 1) for k, v in throughput.items()},
        "latency_ms": {name: h.summary() for name, h in rec.latency.items()},
        "figures": figures,
        "checks": checks,
        "failures": failures,
        "error_samples": rec.error_samples,
        "generator": {"rss_mb": round(own_rss_mb(), 1)},
        "load_window_unix": list(rec.load_window) if rec.load_window else None,
        "ok": not failures and all(checks.values()),
    }


def answer_latency(rec: Recorder, name: str, sent_at: float,
                   on_ack: Callable[[dict[str, Any]], None] | None = None
                   ) -> Callable[[asyncio.Future[dict[str, Any]]], None]:
    """A done-callback for a command's future: count the ack (and its latency) or the fail."""
    hist = rec.hist(name)

    def done(future: asyncio.Future[dict[str, Any]]) -> None:
        if future.cancelled():
            return
        frame = future.result()
        if frame["type"] == "ack":
            hist.add(time.perf_counter() - sent_at)
            rec.acked += 1
            if on_ack is not None:
                on_ack(frame)
        else:
            rec.failed += 1
            rec.error(f"command failed: {frame.get('code')}: {frame.get('message')}")

    return done


async def settle(futures: set[asyncio.Future[Any]], rec: Recorder, timeout: float = 30) -> None:
    if futures:
        _, pending = await asyncio.wait(set(futures), timeout=timeout)
        for future in pending:
            rec.error("a command got no answer within 30 s of the end of the load")
            future.cancel()


# ---------------------------------------------------------------------------
# rtt: one client, patch -> own ack


async def rtt(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """Idle round trip: each participant sends a patch and waits for its ack, again and again
    (at --rate per participant, or back to back)."""
    n = max(1, opts.participants)
    batch = await dep.new_batch(f"{opts.label} rtt")
    people = await open_all(await dep.participants(batch, n), rec, FrameCache(),
                            opts.open_concurrency, transport=opts.transport)
    hist = rec.hist("patch→ack")
    try:
        for p in people:  # warm up: connections, scripts, code paths
            for k in range(20):
                await p.patch([{"op": "add", "path": f"/p{p.index}", "value": k}])

        async def loop(p: LoadParticipant, deadline: float) -> None:
            k = 0
            next_at = time.perf_counter()
            while True:
                if opts.rate > 0:
                    next_at += 1 / opts.rate
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                t = time.perf_counter()
                if t >= deadline:
                    return
                k += 1
                rec.sent += 1
                try:
                    await p.patch([{"op": "add", "path": f"/p{p.index}", "value": k}], timeout=10)
                except Exception as exc:
                    rec.error(f"patch: {exc!r}")
                    continue
                hist.add(time.perf_counter() - t)
                rec.acked += 1

        async with rec.reporting():
            start = time.perf_counter()
            await asyncio.gather(*(loop(p, start + opts.duration) for p in people))
            window = time.perf_counter() - start
    finally:
        await close_all(people)
    return summary(rec, opts, n, window, {"round trips": rec.acked / window}, {}, {
        "no errors": rec.errors == 0}, [])


# ---------------------------------------------------------------------------
# hot-batch: everybody on one batch session


async def hot_batch(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """``--participants`` subscribers of one batch; ``--writers`` of them send unversioned
    ``add /w<i>/<n mod 64>`` patches at ``--rate`` each (open loop; 0: closed loop with
    ``--inflight`` each). Every subscriber must see every version once, in order."""
    n = max(1, opts.participants)
    writers = max(1, min(opts.writers, n))
    batch = await dep.new_batch(f"{opts.label} hot-batch")
    tickets = await dep.participants(batch, n, rec=rec)
    rec.log(f"setup: {n} tickets issued, opening channels")
    cache = FrameCache()
    people = await open_all(tickets, rec, cache, opts.open_concurrency, record_frames=True,
                            apply=opts.apply, transport=opts.transport)
    failures: list[str] = []
    try:
        ws = people[:writers]
        await asyncio.gather(*(w.patch([{"op": "add", "path": f"/w{i}", "value": {}}])
                               for i, w in enumerate(ws)))
        base = max(w.version for w in ws)
        await asyncio.gather(*(p.wait_version(base, 60) for p in people))
        for p in people:
            p.frames.clear()
            p.delivered = 0
        rec.log(f"setup: {n} subscribers at version {base}; {writers} writers, "
                + (f"{opts.rate:g}/s each (open loop)" if opts.rate > 0
                   else f"{opts.inflight} in flight each (closed loop)"))

        sent_at: dict[int, float] = {}             # version -> intended send time
        acked: list[tuple[int, int, int]] = []     # (version, writer, n)
        outstanding: set[asyncio.Future[Any]] = set()
        counters = [0] * writers
        ack_hist = rec.hist("send→ack (writer)")
        ack_times: list[tuple[float, float]] = []  # (send, latency): the timeline figure
        last_ack = 0.0

        def send(i: int, t: float) -> asyncio.Future[Any]:
            counters[i] += 1
            k = counters[i]
            future = ws[i].send_patch([{"op": "add", "path": f"/w{i}/{k % SLOTS}", "value": k}])
            rec.sent += 1
            outstanding.add(future)

            def done(f: asyncio.Future[Any]) -> None:
                nonlocal last_ack
                outstanding.discard(f)
                if f.cancelled():
                    return
                frame = f.result()
                now = time.perf_counter()
                if frame["type"] == "ack":
                    rec.acked += 1
                    sent_at[frame["version"]] = t
                    acked.append((frame["version"], i, k))
                    ack_hist.add(now - t)
                    ack_times.append((t, now - t))
                    last_ack = max(last_ack, now)
                else:
                    rec.failed += 1
                    rec.error(f"patch failed: {frame}")

            future.add_done_callback(done)
            return future

        async def closed_loop(i: int, deadline: float) -> None:
            window = asyncio.Semaphore(opts.inflight)
            while True:
                await window.acquire()
                now = time.perf_counter()
                if now >= deadline:
                    return
                send(i, now).add_done_callback(lambda _f: window.release())

        rec.poll = lambda: setattr(rec, "delivered", sum(p.delivered for p in people))
        async with rec.reporting():
            start = time.perf_counter()
            deadline = start + opts.duration
            if opts.rate > 0:
                await pace(writers, opts.rate, deadline, send, rec)
            else:
                await asyncio.gather(*(closed_loop(i, deadline) for i in range(writers)))
            stop = time.perf_counter()
            await settle(outstanding, rec)
            final = max(sent_at, default=base)
            try:
                await asyncio.gather(*(p.wait_version(final, 60) for p in people))
            except TimeoutError:
                failures.append("subscribers did not reach the last version within 60 s")
        rec.poll()

        # Latency of every (subscriber, version): its arrival - the send of its command.
        delivery = rec.hist("send→delivery (every subscriber)")
        unmatched = 0
        last_arrival = last_ack
        frames = 0
        for p in people:
            samples: list[float] = []
            for first, last, arrived in p.frames:
                frames += 1
                last_arrival = max(last_arrival, arrived)
                for v in range(first, last + 1):
                    s = sent_at.get(v)
                    if s is None:
                        unmatched += 1
                    else:
                        samples.append(arrived - s)
            delivery.add_many(samples)
            p.frames.clear()

        committed = len(acked)
        if unmatched:
            failures.append(f"{unmatched} deliveries of versions no writer here was acked for")
        if committed != final - base:
            failures.append(f"{committed} acks for {final - base} new versions")
        behind = [p.index for p in people if p.version != final or p.delivered != final - base]
        if behind:
            failures.append(f"{len(behind)} subscribers did not get every version "
                            f"(e.g. participant {behind[0]})")
        expected: dict[str, Any] = {f"w{i}": {} for i in range(writers)}
        for _, i, k in sorted(acked):
            expected[f"w{i}"][str(k % SLOTS)] = k
        data_ok = await _final_state_matches(dep, batch, rec, cache, expected, final)
        if opts.apply:
            wrong = [p.index for p in people
                     if {k: (p.data or {}).get(k) for k in expected} != expected]
            if wrong:
                failures.append(f"{len(wrong)} subscribers hold other data than the acks imply")
        ack_window = max(1e-9, last_ack - start)
        window = stop - start
        throughput = {
            "committed patches (acks)": committed / ack_window,
            "delivered changes (all subscribers)": rec.delivered / max(1e-9, last_arrival - start),
            "update frames received (all subscribers)": frames / max(1e-9,
                                                                     last_arrival - start),
        }
        figures = {
            "writers": writers,
            "rate per writer": opts.rate,
            "committed": committed,
            "changes per update frame": round(rec.delivered / max(1, frames), 2),
            "drain after last send (s)": round(max(0.0, last_arrival - stop), 3),
            "decode cache hit rate": round(cache.hits / max(1, cache.hits + cache.misses), 3),
            "send→ack p50/p99 ms per second of the load": timeline(ack_times, start),
        }
        checks = {
            "every subscriber saw every version once, in order": not behind and not rec.gaps
            and not rec.resyncs and not unmatched,
            "final state is what the acks imply": data_ok,
            "no errors": rec.errors == 0,
        }
        return summary(rec, opts, n, window, throughput, figures, checks, failures)
    finally:
        await close_all(people)


def timeline(samples: list[tuple[float, float]], start: float) -> str:
    """``p50/p99`` (ms) of the latencies of each second of sends, in order: stalls show."""
    seconds: dict[int, list[float]] = {}
    for sent, latency in samples:
        seconds.setdefault(int(sent - start), []).append(latency)
    out = []
    for second in sorted(seconds):
        values = sorted(seconds[second])
        p50 = values[len(values) // 2]
        p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
        out.append(f"{p50 * 1e3:.0f}/{p99 * 1e3:.0f}")
    return " ".join(out)


async def _final_state_matches(dep: Deployment, batch: str, rec: Recorder, cache: FrameCache,
                               expected: dict[str, Any], version: int) -> bool:
    """A fresh participant's full state holds, for every expected key, the expected value."""
    [ticket] = await dep.participants(batch, 1, offset=1)
    checker = LoadParticipant(ticket, rec, cache, index=-1)
    try:
        await checker.open()
        await checker.wait_ready(30)
        await checker.wait_version(version, 30)
        data = checker.data if isinstance(checker.data, dict) else {}
        return all(data.get(k) == v for k, v in expected.items())
    except Exception as exc:
        rec.error(f"final state check: {exc!r}")
        return False
    finally:
        await checker.close()


# ---------------------------------------------------------------------------
# ab: A/B balancing with a versioned compare-and-set


async def ab(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """Participants take assignments: read the counts, increment the smaller arm with a
    versioned patch (compare-and-set), and on ``version_mismatch`` wait for the newer
    version and try again. At the end the counts must equal the acknowledged assignments
    exactly and differ by at most one."""
    n = max(1, opts.participants)
    batch = await dep.new_batch(f"{opts.label} ab")
    people = await open_all(await dep.participants(batch, n, rec=rec), rec, FrameCache(),
                            opts.open_concurrency, apply=True, transport=opts.transport)
    failures: list[str] = []
    won = {"A": 0, "B": 0}
    conflicts = 0
    try:
        first = people[0]
        with contextlib.suppress(Exception):
            await first.patch([{"op": "add", "path": "/counts", "value": {"A": 0, "B": 0}}],
                              version=first.version)
        await asyncio.gather(*(p.wait_for(lambda p=p: isinstance(p.data, dict)
                                          and "counts" in p.data, 30) for p in people))
        assign = rec.hist("assignment (first send→ack, retries included)")
        attempt_hist = rec.hist("send→answer (one attempt)")

        async def attempt(p: LoadParticipant, ops: list[Any], version: int) -> dict[str, Any]:
            cmd_id = p.next_id()
            for _ in range(3):  # no answer: send the same id again (never applied twice)
                t = time.perf_counter()
                try:
                    frame = await asyncio.wait_for(p.send_patch(ops, version, cmd_id), 10)
                except TimeoutError:
                    rec.error("no answer within 10 s; retrying with the same id")
                    continue
                attempt_hist.add(time.perf_counter() - t)
                return frame
            raise TimeoutError("three attempts without an answer")

        async def participant(p: LoadParticipant, deadline: float) -> None:
            nonlocal conflicts
            next_at = time.perf_counter() + (random.random() / opts.rate if opts.rate else 0)
            while True:
                if opts.rate > 0:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += 1 / opts.rate
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                while True:
                    counts = p.data["counts"]
                    a, b = counts["A"], counts["B"]
                    arm = "A" if a < b else "B" if b < a else random.choice("AB")
                    rec.sent += 1
                    try:
                        frame = await attempt(p, [{"op": "replace", "path": f"/counts/{arm}",
                                                   "value": counts[arm] + 1}], p.version)
                    except TimeoutError as exc:
                        rec.error(repr(exc))
                        return
                    if frame["type"] == "ack":
                        rec.acked += 1
                        won[arm] += 1
                        assign.add(time.perf_counter() - t0)
                        break
                    if frame.get("code") == "version_mismatch":
                        conflicts += 1
                        rec.failed += 1
                        await p.wait_version(frame.get("version", 0), 30)
                        continue
                    rec.failed += 1
                    rec.error(f"assignment failed: {frame}")
                    return

        rec.poll = lambda: setattr(rec, "delivered", sum(p.delivered for p in people))
        async with rec.reporting():
            start = time.perf_counter()
            await asyncio.gather(*(participant(p, start + opts.duration) for p in people))
            window = time.perf_counter() - start
        rec.poll()
        rec.extra["conflicts"] = conflicts
        assignments = won["A"] + won["B"]
        final = await _fresh_state(dep, batch, rec)
        counts = (final or {}).get("counts", {})
        exact = counts == won
        balanced = abs(counts.get("A", 0) - counts.get("B", 0)) <= 1
        if not exact:
            failures.append(f"the session says {counts}, the acks say {won}")
        if not balanced:
            failures.append(f"unbalanced: {counts}")
        figures = {"assignments A": won["A"], "assignments B": won["B"],
                   "final counts": json.dumps(counts),
                   "conflicts per assignment": round(conflicts / max(1, assignments), 2)}
        checks = {"totals exact (session == acknowledged assignments)": exact,
                  "balanced (|A - B| <= 1)": balanced, "no errors": rec.errors == 0}
        return summary(rec, opts, n, window, {"assignments": assignments / window,
                                              "attempts": rec.sent / window},
                       figures, checks, failures)
    finally:
        await close_all(people)


async def _fresh_state(dep: Deployment, batch: str, rec: Recorder) -> Any:
    [ticket] = await dep.participants(batch, 1, offset=1)
    checker = LoadParticipant(ticket, rec, FrameCache(), index=-1)
    try:
        await checker.open()
        await checker.wait_ready(30)
        return checker.data
    finally:
        await checker.close()


# ---------------------------------------------------------------------------
# groups: pairs exchanging messages and group-session patches (oTree live pages)


class GroupParticipant(LoadParticipant):
    """Counts what reaches it from its partner instead of keeping it."""

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "group_msg":
            msg = frame.get("msg")
            if isinstance(msg, dict) and "t" in msg:
                self.rec.hist("send→delivery (group message)").add(
                    time.perf_counter() - msg["t"])
                self.rec.delivered += 1
            return
        if kind == "update" and frame["scope"].startswith("group_session:"):
            now = time.perf_counter()
            hist = self.rec.hist("send→delivery (group session patch)")
            for change in frame["changes"]:
                if change["v"] <= self.group_session["version"]:
                    continue
                for op in change["ops"]:
                    value = op.get("value")
                    if isinstance(value, dict) and value.get("s") not in (None, self.index):
                        hist.add(now - value["t"])
                        self.rec.delivered += 1
        super()._handle(frame)


async def groups(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """Groups of two (batch ``max_active_members = 2``): each participant sends, at
    ``--rate`` per second (open loop), alternately a group message and a group-session
    patch; each must reach the partner."""
    n = max(2, opts.participants - opts.participants % 2)
    rate = opts.rate if opts.rate > 0 else 10.0
    batch = await dep.new_batch(f"{opts.label} groups", groups={"max_active_members": 2})
    tickets = await dep.participants(batch, n, rec=rec)
    gate = asyncio.Semaphore(opts.open_concurrency)
    cache = FrameCache()

    async def open_one(i: int, ticket: Ticket) -> GroupParticipant:
        async with gate:
            p = GroupParticipant(ticket, rec, cache, index=i, transport=opts.transport)
            await p.open()
            await p.wait_ready(60)
            return p

    people = list(await asyncio.gather(*(open_one(i, t) for i, t in enumerate(tickets))))
    failures: list[str] = []
    try:
        rec.log(f"setup: {n} channels open, joining groups")

        async def join(p: GroupParticipant) -> str:
            async with gate:
                return await p.join_group()

        group_of = list(await asyncio.gather(*(join(p) for p in people)))
        await asyncio.gather(*(p.wait_for(
            lambda p=p: p.group is not None and len(p.group["members"]) == 2
            and p.group_session["data"] is not None, 60) for p in people))
        sizes: dict[str, int] = {}
        for g in group_of:
            sizes[g] = sizes.get(g, 0) + 1
        if set(sizes.values()) != {2}:
            failures.append(f"groups are not all pairs: {sorted(set(sizes.values()))}")
        slot = {p.index: p.group["members"].index(p.run_id) for p in people}
        rec.log(f"setup: {len(sizes)} groups of two; {rate:g} sends/s each (open loop)")

        outstanding: set[asyncio.Future[Any]] = set()
        counters = [0] * n

        def send(i: int, t: float) -> None:
            p = people[i]
            counters[i] += 1
            k = counters[i]
            if k % 2:
                future = p.send_command("group_msg", msg={"t": t, "n": k, "s": i})
                name = "send→ack (group message)"
            else:
                future = p.send_patch(
                    [{"op": "add", "path": f"/m{slot[i]}", "value": {"t": t, "n": k, "s": i}}],
                    scope=f"group_session:{group_of[i]}")
                name = "send→ack (group session patch)"
            rec.sent += 1
            outstanding.add(future)
            future.add_done_callback(outstanding.discard)
            future.add_done_callback(answer_latency(rec, name, t))

        async with rec.reporting():
            start = time.perf_counter()
            await pace(n, rate, start + opts.duration, send, rec)
            window = time.perf_counter() - start
            await settle(outstanding, rec)
            deadline = time.perf_counter() + 30
            # Polled: an event per delivery would cost the hot path more than this.
            while rec.delivered < rec.acked and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        gaps = sum(p.gaps for p in people)
        rec.gaps += gaps
        if rec.delivered != rec.acked:
            failures.append(f"{rec.acked} acknowledged, {rec.delivered} reached the partner")
        checks = {"every acknowledged message and patch reached the partner":
                  rec.delivered == rec.acked,
                  "no group-session gaps": gaps == 0, "no errors": rec.errors == 0}
        return summary(rec, opts, n, window,
                       {"sent": rec.sent / window, "acknowledged": rec.acked / window,
                        "delivered to partners": rec.delivered / window},
                       {"groups": len(sizes), "rate per participant": rate}, checks, failures)
    finally:
        await close_all(people)


# ---------------------------------------------------------------------------
# join-storm: many channels opening on a batch with a large session


async def join_storm(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """The batch session is first filled to ``--session-bytes``; then ``--participants``
    open their channels, all at once (``--rate 0``) or ``--rate`` per second; each is timed
    from the start of its WebSocket handshake to its full ``state``."""
    n = max(1, opts.participants)
    raise_nofile(n + 64)
    batch = await dep.new_batch(f"{opts.label} join-storm")
    [filler_ticket] = await dep.participants(batch, 1)
    cache = FrameCache()
    filler = LoadParticipant(filler_ticket, rec, cache, index=-1, transport=opts.transport)
    await filler.open()
    await filler.wait_ready(30)
    chunk = 16_000
    for i in range(math.ceil(opts.session_bytes / chunk)):
        size = min(chunk, opts.session_bytes - i * chunk)
        await filler.patch([{"op": "add", "path": f"/fill{i}", "value": "x" * max(1, size)}])
    version = filler.version
    await filler.close()
    tickets = await dep.participants(batch, n, offset=1, rec=rec)
    rec.log(f"setup: session at version {version}, {n} tickets; the storm starts")
    hist = rec.hist("open→full state")
    people: list[LoadParticipant] = []
    state_sizes: list[int] = []
    wrong_version = 0

    async def one(i: int, ticket: Ticket) -> None:
        nonlocal wrong_version
        p = LoadParticipant(ticket, rec, cache, index=i, keep_data=False,
                            transport=opts.transport)
        people.append(p)
        rec.sent += 1
        try:
            await p.open()
            await p.wait_ready(60)
        except Exception as exc:
            rec.error(f"participant {i}: {exc!r}")
            return
        assert p.state_at is not None
        hist.add(p.state_at - p.opened_at)
        rec.acked += 1
        rec.delivered += 1
        state_sizes.append(p.state_bytes)
        if p.version != version:
            wrong_version += 1

    try:
        async with rec.reporting():
            start = time.perf_counter()
            tasks = []
            for i, ticket in enumerate(tickets):
                if opts.rate > 0:
                    await asyncio.sleep(max(0.0, start + i / opts.rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one(i, ticket)))
            await asyncio.gather(*tasks)
            done = max((p.state_at or 0.0 for p in people), default=start)
            window = max(1e-9, done - start)
    finally:
        await close_all(people)
    small = sum(1 for s in state_sizes if s < opts.session_bytes)
    failures = []
    if wrong_version:
        failures.append(f"{wrong_version} participants got another version than {version}")
    if small:
        failures.append(f"{small} state frames smaller than --session-bytes")
    checks = {"every participant got the full state": rec.acked == n and not small
              and not wrong_version, "no errors": rec.errors == 0}
    figures = {"storm wall time (s)": round(window, 3),
               "state frame bytes": max(state_sizes, default=0),
               "open rate asked (/s)": opts.rate or "all at once"}
    return summary(rec, opts, n, window, {"channels opened to full state": rec.acked / window},
                   figures, checks, failures)


# ---------------------------------------------------------------------------
# results: result-data submissions over HTTP


async def results(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """Participants enter a tiny uploaded study through its ``/go`` link, then POST
    ``/r/<key>/result-data?pos=1`` over their own keep-alive connection: back to back
    (``--rate 0``) or ``--rate`` per second each. Answered 200 ``stored`` = acknowledged
    (after the Postgres COMMIT)."""
    n = max(1, opts.participants)
    raise_nofile(n + 64)
    batch = await dep.new_batch(f"{opts.label} results", study=True)
    study = dep.study_ids[batch]
    tickets = await dep.participants(batch, n, rec=rec)
    conns = [HttpConnection(t.base) for t in tickets]
    last_stored: dict[int, bytes] = {}
    hist = rec.hist("submit→stored")
    pad = "x" * 160

    async def participant(i: int, deadline: float) -> None:
        conn, key = conns[i], tickets[i].key
        path = f"/r/{key}/result-data?pos=1"
        k = 0
        next_at = time.perf_counter() + (random.random() / opts.rate if opts.rate else 0)
        while True:
            if opts.rate > 0:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                t = next_at
                next_at += 1 / opts.rate
            else:
                t = time.perf_counter()
            if t >= deadline:
                return
            k += 1
            body = f'{{"participant":{i},"n":{k},"pad":"{pad}"}}'.encode()
            rec.sent += 1
            try:
                status, answer = await conn.request(
                    "POST", path, body, {"Content-Type": "application/json",
                                         "X-Cohort-Command-Id": f"lt-{i}-{k}"})
            except Exception as exc:
                rec.error(f"participant {i}: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            if status == 200 and b'"stored":true' in answer.replace(b" ", b""):
                hist.add(time.perf_counter() - t)
                rec.acked += 1
                last_stored[i] = body
            else:
                rec.failed += 1
                rec.error(f"participant {i}: {status} {answer[:200]!r}")

    try:
        async with rec.reporting():
            start = time.perf_counter()
            await asyncio.gather(*(participant(i, start + opts.duration) for i in range(n)))
            window = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    # Read back what some of them stored: it must be their last acknowledged submission.
    sample = random.sample(sorted(last_stored), min(20, len(last_stored)))
    mismatched = 0
    for i in sample:
        response = await dep.http.get(
            f"{dep.url()}/api/studies/{study}/batches/{batch}/runs/{tickets[i].run_id}/results")
        players = response.json().get("players", []) if response.status_code == 200 else []
        data = next((pl.get("data") for pl in players if pl.get("pos") == 1), None)
        if data is None or data.encode() != last_stored[i]:
            mismatched += 1
    failures = [f"{mismatched} of {len(sample)} runs read back other data than their last "
                "acknowledged submission"] if mismatched else []
    checks = {"stored data read back equal the last acknowledged ones": not mismatched
              and bool(sample), "no errors": rec.errors == 0}
    return summary(rec, opts, n, window, {"acknowledged submissions": rec.acked / window},
                   {"runs read back": len(sample)}, checks, failures)


# ---------------------------------------------------------------------------
# idle: many open channels, nothing happening (memory per connection)


async def idle(opts: Options, dep: Deployment, rec: Recorder) -> dict[str, Any]:
    """``--participants`` channels open and stay idle for ``--duration`` seconds; the
    gateways' resident memory (from their /metrics) before and after."""
    n = max(1, opts.participants)
    raise_nofile(n + 256)
    batch = await dep.new_batch(f"{opts.label} idle")
    tickets = await dep.participants(batch, n, rec=rec)
    before = {u: await dep.gateway_rss(u) for u in dep.urls}
    client_before = own_rss_mb()
    rec.log(f"setup: {n} tickets; gateway RSS {before}; opening channels")
    people: list[LoadParticipant] = []
    try:
        start_open = time.perf_counter()
        people = await open_all(tickets, rec, FrameCache(), opts.open_concurrency,
                                keep_data=False, transport=opts.transport)
        opened_in = time.perf_counter() - start_open
        rec.acked = len(people)
        async with rec.reporting():
            start = time.perf_counter()
            await asyncio.sleep(opts.duration)
            window = time.perf_counter() - start
        after = {u: await dep.gateway_rss(u) for u in dep.urls}
        closed = sum(1 for p in people if p.closed is not None and p.closed.done())
    finally:
        await close_all(people)
    client_after = own_rss_mb()
    figures: dict[str, Any] = {"channels opened in (s)": round(opened_in, 2)}
    total_after = 0.0
    for u in dep.urls:
        if before[u] is not None and after[u] is not None:
            figures[f"gateway RSS before (MB) {u}"] = round(before[u], 1)
            figures[f"gateway RSS with the channels (MB) {u}"] = round(after[u], 1)
            total_after += after[u]
    known = [u for u in dep.urls if before[u] is not None and after[u] is not None]
    if known:
        delta = sum(after[u] - before[u] for u in known)
        figures["gateway RSS per channel (KB)"] = round(delta * 1024 / n, 2)
        figures["max gateway RSS (MB)"] = round(max(after[u] for u in known), 1)
    figures["load generator RSS per channel (KB)"] = round(
        (client_after - client_before) * 1024 / n, 2)
    checks = {"every channel opened and stayed open": len(people) == n and not closed,
              "no errors": rec.errors == 0}
    failures = [f"{closed} channels closed while idle"] if closed else []
    return summary(rec, opts, n, window, {"channels opened": n / max(1e-9, opened_in)},
                   figures, checks, failures)


SCENARIOS: dict[str, Scenario] = {
    "hot-batch": hot_batch,
    "ab": ab,
    "groups": groups,
    "join-storm": join_storm,
    "results": results,
    "rtt": rtt,
    "idle": idle,
}
