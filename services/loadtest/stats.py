"""Counters, latency histograms, the progress line and the summary of a load test."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Two linear tiers: 1 µs buckets below 100 ms, 100 µs buckets from 100 ms to 100 s.
_FINE = 100_000
_COARSE = 999_000


class Histogram:
    """Latencies in seconds; percentiles exact to 1 µs below 100 ms, to 100 µs above.

    Fixed memory (about 4.4 MB) however many samples: a hot batch records millions.
    """

    __slots__ = ("coarse", "count", "fine", "max", "min", "total")

    def __init__(self) -> None:
        self.fine = array("I", bytes(4 * _FINE))
        self.coarse = array("I", bytes(4 * _COARSE))
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, seconds: float) -> None:
        if seconds < 0.0:
            seconds = 0.0  # clocks of one process never go back; rounding can
        us = int(seconds * 1e6)
        if us < _FINE:
            self.fine[us] += 1
        else:
            self.coarse[min(_COARSE - 1, us // 100 - 1000)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def add_many(self, samples: list[float]) -> None:
        fine, coarse = self.fine, self.coarse
        total, low, high = self.total, self.min, self.max
        for s in samples:
            if s < 0.0:
                s = 0.0
            us = int(s * 1e6)
            if us < _FINE:
                fine[us] += 1
            else:
                coarse[min(_COARSE - 1, us // 100 - 1000)] += 1
            total += s
            if s > high:
                high = s
            if s < low:
                low = s
        self.count += len(samples)
        self.total, self.min, self.max = total, low, high

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.fine):
            if n:
                self.fine[i] += n
        for i, n in enumerate(other.coarse):
            if n:
                self.coarse[i] += n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> list[float]:
        """Nearest-rank percentiles in seconds (the bucket's lower edge, within [min, max])."""
        if not self.count:
            return [math.nan for _ in qs]
        ranks = [max(1, math.ceil(q / 100 * self.count)) for q in qs]
        out: list[float] = [math.nan] * len(qs)
        seen = 0
        pending = sorted(range(len(qs)), key=lambda i: ranks[i])
        k = 0
        for tier, scale, offset in ((self.fine, 1e-6, 0), (self.coarse, 1e-4, 1000)):
            for i, n in enumerate(tier):
                if not n:
                    continue
                seen += n
                while k < len(pending) and seen >= ranks[pending[k]]:
                    out[pending[k]] = min(self.max, max(self.min, (i + offset) * scale))
                    k += 1
                if k == len(pending):
                    return out
        return out

    def summary(self) -> dict[str, float]:
        p50, p95, p99, p999 = self.percentiles((50, 95, 99, 99.9))
        return {
            "count": self.count,
            "mean_ms": round(self.total / self.count * 1e3, 3) if self.count else math.nan,
            "p50_ms": round(p50 * 1e3, 3),
            "p95_ms": round(p95 * 1e3, 3),
            "p99_ms": round(p99 * 1e3, 3),
            "p99.9_ms": round(p999 * 1e3, 3),
            "max_ms": round(self.max * 1e3, 3) if self.count else math.nan,
        }


class Recorder:
    """What a scenario counts and measures, and the one-line-per-second progress report."""

    def __init__(self, scenario: str, quiet: bool = False) -> None:
        self.scenario = scenario
        self.quiet = quiet
        self.sent = 0          # commands / requests sent in the load window
        self.acked = 0         # acknowledged (ack frame, HTTP "stored")
        self.failed = 0        # answered with a fail frame / refused
        self.delivered = 0     # changes or messages that reached a subscriber
        self.errors = 0        # anything that should not happen (see error_samples)
        self.resyncs = 0
        self.gaps = 0
        self.extra: dict[str, Any] = {}
        self.error_samples: list[str] = []
        self.latency: dict[str, Histogram] = {}
        self.started = time.perf_counter()
        self.window: tuple[float, float] | None = None
        # Set by scenarios that read counters off their participants (delivered, resyncs).
        self.poll: Callable[[], None] | None = None
        # Wall-clock (time.time()) start and end of the load, for CPU accounting outside.
        self.load_window: tuple[float, float] | None = None
        # A file to write when the load starts (a profiler can attach then).
        self.mark_start: Path | None = None

    def hist(self, name: str) -> Histogram:
        h = self.latency.get(name)
        if h is None:
            h = self.latency[name] = Histogram()
        return h

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(what)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.scenario} {time.perf_counter() - self.started:6.1f}s] {message}",
                  file=sys.stderr, flush=True)

    async def progress(self, every: float = 1.0) -> None:
        """One line per second on stderr: sent, acked, delivered/s, errors."""
        last = (time.perf_counter(), self.sent, self.acked, self.delivered)
        while True:
            await asyncio.sleep(every)
            if self.poll is not None:
                self.poll()
            now = time.perf_counter()
            t0, sent0, acked0, delivered0 = last
            dt = max(1e-9, now - t0)
            self.log(f"sent {self.sent:,} ({(self.sent - sent0) / dt:,.0f}/s)  "
                     f"acked {self.acked:,} ({(self.acked - acked0) / dt:,.0f}/s)  "
                     f"delivered {(self.delivered - delivered0) / dt:,.0f}/s  "
                     f"errors {self.errors}  resyncs {self.resyncs}")
            last = (now, self.sent, self.acked, self.delivered)

    @contextlib.asynccontextmanager
    async def reporting(self) -> Any:
        """Around the load: progress lines, the load window, the start mark."""
        task = None if self.quiet else asyncio.create_task(self.progress())
        started = time.time()
        if self.mark_start is not None:
            self.mark_start.write_text(f"{started}\n")
        try:
            yield self
        finally:
            self.load_window = (started, time.time())
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise the soft open-file limit to cover ``needed`` sockets (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(hard, want)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def own_rss_mb() -> float:
    """This process's resident set size now (Linux /proc; peak elsewhere)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(open("/proc/self/statm").read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def fmt_ms(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:,.2f} ms"


def render_table(result: dict[str, Any]) -> str:
    """The summary table printed at the end of a run."""
    rows: list[tuple[str, str]] = []
    for name, value in result["throughput_per_s"].items():
        rows.append((f"throughput: {name}", f"{value:,.0f} /s"))
    for name, lat in result["latency_ms"].items():
        rows.append((f"{name} p50 / p95 / p99",
                     f"{lat['p50_ms']:,.2f} / {lat['p95_ms']:,.2f} / {lat['p99_ms']:,.2f} ms"
                     if lat["count"] else "no samples"))
        rows.append((f"{name} max (samples)", f"{lat['max_ms']:,.2f} ms ({lat['count']:,})"
                     if lat["count"] else "-"))
    counts = result["counts"]
    rows.append(("sent / acked / failed",
                 f"{counts['sent']:,} / {counts['acked']:,} / {counts['failed']:,}"))
    rows.append(("delivered", f"{counts['delivered']:,}"))
    rows.append(("errors / resyncs / gaps",
                 f"{counts['errors']:,} / {counts['resyncs']:,} / {counts['gaps']:,}"))
    for name, value in result.get("figures", {}).items():
        text = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" \
            if isinstance(value, int) else str(value)
        rows.append((name, text))
    width = max(len(a) for a, _ in rows)
    head = (f"cohort loadtest {result['scenario']}: {result['participants']:,} participants, "
            f"{result['duration_s']:.1f}s measured, against {result['url']}")
    lines = [head, "-" * len(head)]
    lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    for name, ok in result["checks"].items():
        lines.append(f"  check {name}: {'ok' if ok else 'FAILED'}")
    for failure in result["failures"][:10]:
        lines.append(f"  ! {failure}")
    for sample in result["error_samples"][:5]:
        lines.append(f"  error: {sample}")
    lines.append(f"  result: {'OK' if result['ok'] else 'FAILED'}")
    return "\n".join(lines)
