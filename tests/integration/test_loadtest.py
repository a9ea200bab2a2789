"""``cohort loadtest`` itself, against a small real stack (a gateway and a worker process):
every scenario runs for about two seconds with a few participants, completes, reports
every summary field, passes its own checks (A/B totals exact) and counts no errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.loadtest import run
from services.loadtest.scenarios import Options
from services.loadtest.stats import Histogram
from tests.e2e.stack import REPO, Stack

pytestmark = pytest.mark.e2e

SUMMARY_FIELDS = {"scenario", "url", "participants", "duration_s", "config", "counts",
                  "throughput_per_s", "latency_ms", "figures", "checks", "failures",
                  "error_samples", "generator", "load_window_unix", "ok"}
COUNT_FIELDS = {"sent", "acked", "failed", "delivered", "errors", "resyncs", "gaps"}
LATENCY_FIELDS = {"count", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "p99.9_ms", "max_ms"}


@pytest.fixture(scope="module")
def stack(redis_url: str, database_url: str, make_prefix: Callable[[], str]) -> Iterator[Stack]:
    # Closed-loop scenarios send ~2,000 commands/s on one channel: unthrottled here.
    with Stack(redis_url, database_url, make_prefix(), gateways=1, workers=1,
               max_commands_per_s=0) as started:
        yield started


def options(stack: Stack, **fields: Any) -> Options:
    base: dict[str, Any] = {"urls": stack.gateway_urls, "token": stack.admin_token,
                            "participants": 4, "duration": 2.0, "rate": 0.0, "quiet": True,
                            "open_concurrency": 20}
    return Options(**{**base, **fields})


def check_summary(result: dict[str, Any], scenario: str) -> None:
    assert SUMMARY_FIELDS <= set(result), SUMMARY_FIELDS - set(result)
    assert result["scenario"] == scenario
    assert COUNT_FIELDS <= set(result["counts"])
    assert result["throughput_per_s"] and all(v > 0 for v in result["throughput_per_s"].values())
    for name, latency in result["latency_ms"].items():
        assert LATENCY_FIELDS <= set(latency), name
    assert "token" not in result["config"]
    assert result["counts"]["errors"] == 0, result["error_samples"]
    assert result["failures"] == [] and all(result["checks"].values()), result
    assert result["ok"] is True
    json.dumps(result)  # what --json writes


async def test_hot_batch(stack: Stack) -> None:
    result = await run("hot-batch", options(stack, participants=6, writers=2, rate=50,
                                            apply=True))
    check_summary(result, "hot-batch")
    counts = result["counts"]
    assert counts["acked"] == counts["sent"] > 100
    # Every one of the 6 subscribers got every committed change.
    assert counts["delivered"] == 6 * counts["acked"]
    assert counts["resyncs"] == counts["gaps"] == 0
    assert result["latency_ms"]["send→delivery (every subscriber)"]["count"] == counts[
        "delivered"]


async def test_hot_batch_closed_loop(stack: Stack) -> None:
    result = await run("hot-batch", options(stack, participants=3, writers=3, inflight=5))
    check_summary(result, "hot-batch")
    assert result["counts"]["delivered"] == 3 * result["counts"]["acked"]


async def test_ab_totals_are_exact(stack: Stack) -> None:
    result = await run("ab", options(stack, participants=6))
    check_summary(result, "ab")
    figures = result["figures"]
    assert json.loads(figures["final counts"]) == {"A": figures["assignments A"],
                                                   "B": figures["assignments B"]}
    assert figures["assignments A"] + figures["assignments B"] == result["counts"]["acked"] > 0
    assert abs(figures["assignments A"] - figures["assignments B"]) <= 1


async def test_groups(stack: Stack) -> None:
    result = await run("groups", options(stack, participants=6, rate=10))
    check_summary(result, "groups")
    counts = result["counts"]
    assert result["figures"]["groups"] == 3
    assert counts["delivered"] == counts["acked"] == counts["sent"] >= 6 * 10
    for kind in ("group message", "group session patch"):
        assert result["latency_ms"][f"send→delivery ({kind})"]["count"] > 0


async def test_join_storm(stack: Stack) -> None:
    result = await run("join-storm", options(stack, participants=20, session_bytes=40_000))
    check_summary(result, "join-storm")
    assert result["counts"]["acked"] == 20
    assert result["figures"]["state frame bytes"] >= 40_000
    assert result["latency_ms"]["open→full state"]["count"] == 20


async def test_results(stack: Stack) -> None:
    result = await run("results", options(stack, participants=4))
    check_summary(result, "results")
    assert result["counts"]["acked"] == result["counts"]["sent"] > 10
    assert result["figures"]["runs read back"] == 4


async def test_rtt_and_idle(stack: Stack) -> None:
    check_summary(await run("rtt", options(stack, participants=1)), "rtt")
    idle = await run("idle", options(stack, participants=30, duration=1.0))
    check_summary(idle, "idle")
    assert idle["figures"]["max gateway RSS (MB)"] > 0


async def test_with_an_experimenter_token(stack: Stack, tmp_path: Path) -> None:
    """A non-admin API token: setup goes through an uploaded study and its /go link."""
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "user", "add", f"loadtester-{tmp_path.name}",
         "--log-level", "warning"],
        cwd=REPO, env=stack.env, capture_output=True, text=True, check=True)
    token = made.stdout.strip().splitlines()[-1]
    result = await run("groups", options(stack, token=token, participants=4, rate=5))
    check_summary(result, "groups")


def test_the_command_line(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "rtt.json"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "loadtest", "rtt", "--url", stack.gateway_urls[0],
         "--token", stack.admin_token, "--duration", "1.5", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "patch→ack p50 / p95 / p99" in done.stdout and "result: OK" in done.stdout
    assert "[rtt " in done.stderr and "acked" in done.stderr  # the progress lines
    check_summary(json.loads(out.read_text()), "rtt")


def test_histogram_percentiles() -> None:
    h = Histogram()
    for ms in range(1, 1001):  # 1..1000 ms
        h.add(ms / 1000)
    s = h.summary()
    assert s["count"] == 1000
    assert s["p50_ms"] == pytest.approx(500, abs=0.2)
    assert s["p99_ms"] == pytest.approx(990, abs=0.2)
    assert s["max_ms"] == pytest.approx(1000)
    h.add_many([0.0000015, 250.0])  # below 1 ms and beyond the last bucket
    assert h.summary()["max_ms"] == 250_000
