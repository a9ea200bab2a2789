"""The worker under awkward input: repeats of final refusals, a commit interrupted
between slices, and a command whose decision fails (real Redis, the worker's own
iteration via tests/timeline_driver.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import msgspec
import pytest

from services import worker as worker_module
from services.settings import Settings
from services.worker import SYSTEM, PartitionLoop
from session_store.commands import (
    CloseBatch,
    EndRun,
    OpenBatch,
    Patch,
    StartRun,
    decode_outcome,
    encode,
)
from session_store.events import SessionPatched, decode_event
from tests.timeline_driver import Driver


@pytest.fixture
def own(settings: Settings, make_prefix) -> Settings:
    return msgspec.structs.replace(settings, key_prefix=make_prefix())


async def replies(redis, keys, gw: str) -> list:
    return [decode_outcome(f[b"o"]) for _, f in await redis.xrange(keys.replies(gw))]


def start(batch: str, run: str) -> StartRun:
    return StartRun(id="start", batch=batch, run=run, gw="gw", reloadable=[True], active=[True])


async def test_repeats_of_a_final_refusal_in_one_iteration_are_answered_once(own, redis):
    driver = Driver(own, redis)
    keys = driver.keys
    await driver.send([OpenBatch(id="o", batch="c", run="admin", gw=SYSTEM)])
    await driver.send([CloseBatch(id="close", batch="c", run="admin", gw=SYSTEM)])
    # Two copies of one command for the closed batch, and two for a batch never opened.
    await driver.send([EndRun(id="end", batch="c", run="r1", gw="gw", conn="k"),
                       EndRun(id="end", batch="c", run="r1", gw="gw", conn="k"),
                       EndRun(id="end", batch="nope", run="r2", gw="gw", conn="k"),
                       EndRun(id="end", batch="nope", run="r2", gw="gw", conn="k")])
    got = await replies(redis, keys, "gw")
    assert [(o.cmd, o.ok, o.code) for o in got] == [
        ("end", False, "batch_closed"), ("end", False, "batch_not_found")]
    # Nothing remembered for either (a record would re-create a removed batch's keys).
    for batch, run in (("c", "r1"), ("nope", "r2")):
        assert not await redis.exists(keys.dedupe(batch, run))
    assert not await redis.exists(keys.events("nope"))


async def test_an_open_committed_by_an_interrupted_attempt_still_lists_the_batch(own, redis):
    driver = Driver(own, redis)
    keys = driver.keys
    opening = OpenBatch(id="open-b", batch="b", run="admin", gw=SYSTEM)
    await driver.send([opening])
    partition = keys.partition("b")
    assert await redis.sismember(keys.batches(partition), "b")
    # As after a slice committed and a later one conflicted: events and dedupe record
    # in Redis, the set not updated. The retry finds the open a duplicate.
    await redis.srem(keys.batches(partition), "b")
    loop = await driver.loop_for("b")
    loop.check_dupes = True
    await driver.send([opening])
    assert await redis.sismember(keys.batches(partition), "b")


async def test_a_command_whose_decision_fails_is_refused_and_stalls_nothing(
        own, redis, monkeypatch):
    driver = Driver(own, redis)
    keys = driver.keys
    await driver.send([OpenBatch(id="o", batch="p", run="admin", gw=SYSTEM)])
    real = worker_module.decide

    def flaky(state, command, *args):
        if command.id == "boom":
            state.versions["batch_session"] = 99  # half-done damage in memory
            raise RuntimeError("a bug")
        return real(state, command, *args)

    monkeypatch.setattr(worker_module, "decide", flaky)
    ops = [{"op": "add", "path": "/x", "value": 1}]
    loop = await driver.loop_for("p")
    entries = [(f"{100 + i}-0".encode(), {b"c": msgspec.json.encode(c)}) for i, c in enumerate([
        Patch(id="before", batch="p", run="r", gw="gw", conn="k", scope="batch_session",
              ops=ops, reply=True),
        Patch(id="boom", batch="p", run="r", gw="gw", conn="k", scope="batch_session", ops=ops),
        Patch(id="after", batch="p", run="r", gw="gw", conn="k", scope="batch_session",
              ops=ops, reply=True)])]
    cursor = await loop.handle(entries, "0-0")
    assert cursor == "101-0", "the iteration ends after the failed command"
    got = {o.cmd: o for o in await replies(redis, keys, "gw")}
    assert got["before"].ok and got["boom"].code == "internal_error" and "after" not in got
    # The damage was dropped: the batch reloads from the log, and the rest goes on.
    assert (await driver.state("p")).version("batch_session") == 1
    await loop.handle(entries[2:], cursor)
    got = {o.cmd: o for o in await replies(redis, keys, "gw")}
    assert got["after"].ok and got["after"].version == 2
    # A retry of the failed command gets the same refusal (remembered).
    monkeypatch.setattr(worker_module, "decide", real)
    await loop.handle([(b"200-0", entries[1][1])], "102-0")
    assert [o.code for o in await replies(redis, keys, "gw") if o.cmd == "boom"] == [
        "internal_error", "internal_error"]


async def test_a_retry_of_a_command_committed_before_the_close_gets_its_outcome(own, redis):
    """DESIGN guarantee 3 across a close: refusals after it are not remembered, but a
    retried command that committed before it is answered from its record, once."""
    driver = Driver(own, redis)
    keys = driver.keys
    await driver.send([OpenBatch(id="o", batch="k", run="admin", gw=SYSTEM)])
    change = Patch(id="p1", batch="k", run="r", gw="gw", conn="c", scope="batch_session",
                   ops=[{"op": "add", "path": "/x", "value": 1}], reply=True)
    await driver.send([change])
    await driver.send([CloseBatch(id="close", batch="k", run="admin", gw=SYSTEM)])
    await driver.send([change])  # the retry, after the close
    got = [o for o in await replies(redis, keys, "gw") if o.cmd == "p1"]
    assert [(o.ok, o.version) for o in got] == [(True, 1), (True, 1)]
    events = [f[b"e"] for _, f in await redis.xrange(keys.events("k"))]
    assert sum(b'"session_patched"' in e for e in events) == 1


class CountedLoop:
    """Runs a partition's real loop (XREAD included) and notes each iteration."""

    def __init__(self, loop: PartitionLoop) -> None:
        self.loop = loop
        self.reads: list[tuple[float, int]] = []  # (time, commands) per iteration
        self.progress = asyncio.Event()
        real = loop.handle

        async def handle(entries: list, cursor: str) -> str:
            at = time.monotonic()
            cursor = await real(entries, cursor)
            self.reads.append((at, len(entries)))
            self.progress.set()
            return cursor

        loop.handle = handle  # type: ignore[method-assign]
        self.task = asyncio.create_task(loop.run())

    def handled(self) -> int:
        return sum(n for _, n in self.reads)

    async def until(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.handled() < count:
                self.progress.clear()
                await self.progress.wait()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def patch(i: int) -> Patch:
    return Patch(id=f"p{i}", batch="t", run="r", gw="gw", conn="k", scope="batch_session",
                 ops=[{"op": "add", "path": f"/k{i}", "value": i}])


async def burst(redis, stream: str, first: int) -> int:
    """Patches ``first`` to ``first + 2`` at once (a transaction: a read sees all three);
    the next number."""
    async with redis.pipeline(transaction=True) as pipe:
        for i in range(first, first + 3):
            pipe.xadd(stream, {"c": encode(patch(i))})
        await pipe.execute()
    return first + 3


async def ticking(own: Settings, redis, tick_ms: float) -> tuple[Driver, CountedLoop, str]:
    """Batch "t" opened, its partition's real loop running with ``tick_ms``; and the
    partition's command stream, to write commands to."""
    driver = Driver(msgspec.structs.replace(own, worker_tick_ms=tick_ms), redis)
    await driver.send([OpenBatch(id="o", batch="t", run="admin", gw=SYSTEM)])
    counted = CountedLoop(await driver.loop_for("t"))
    return driver, counted, driver.keys.commands(driver.keys.partition("t"))


async def test_under_load_the_worker_reads_at_most_once_per_tick(own, redis):
    driver, counted, stream = await ticking(own, redis, 100.0)
    try:
        began = time.monotonic()
        sent = 0
        while time.monotonic() - began < 0.6:
            sent = await burst(redis, stream, sent)  # every ~5 ms
            await asyncio.sleep(0.005)
        await counted.until(sent)
    finally:
        await counted.stop()
    # From the first read of several commands on, reads start a tick apart; without
    # the tick there would be one read per burst (about 120).
    first = next((i for i, (_, n) in enumerate(counted.reads) if n > 1), None)
    assert first is not None, counted.reads
    starts = [at for at, _ in counted.reads[first:]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # A tick apart (100 ms; loose, for a busy machine) against ~5 ms without it.
    assert gaps and min(gaps) >= 0.05, counted.reads
    assert len(counted.reads) <= first + 10, counted.reads
    assert (await driver.state("t")).version("batch_session") == sent


async def test_without_a_tick_the_next_commands_come_with_the_append(own, redis):
    """Commands that arrive while an iteration is decided are read by its append's call
    (no XREAD of their own), each handled once and in order."""
    driver, counted, stream = await ticking(own, redis, 0.0)
    xreads = 0
    real_xread = driver.worker.redis.xread

    async def counting_xread(*args, **kwargs):
        nonlocal xreads
        xreads += 1
        return await real_xread(*args, **kwargs)

    driver.worker.redis.xread = counting_xread
    real_append = driver.worker.store.append

    async def slow_append(*args, **kwargs):
        await asyncio.sleep(0.005)  # a slow decision: the next bursts arrive meanwhile
        return await real_append(*args, **kwargs)

    driver.worker.store.append = slow_append
    sent = 0
    try:
        for _ in range(100):  # faster than iterations end
            sent = await burst(redis, stream, sent)
            await asyncio.sleep(0.001)
        await counted.until(sent)
    finally:
        await counted.stop()
    assert counted.handled() == sent
    # Some iterations began from the read-ahead (one XREAD per iteration otherwise).
    assert xreads < len(counted.reads), (xreads, counted.reads)
    patched = [decode_event(f[b"e"]) for _, f in await redis.xrange(driver.keys.events("t"))]
    values = [e.ops[0]["value"] for e in patched if isinstance(e, SessionPatched)]
    assert values == list(range(sent))  # once each, in the order sent


async def test_a_lone_command_waits_for_no_tick(own, redis):
    # A closed-loop client (the next command only after the last one's answer) has
    # every command read on its own: none of them waits for the tick.
    _, counted, stream = await ticking(own, redis, 1000.0)
    try:
        began = time.monotonic()
        for i in range(5):
            await redis.xadd(stream, {"c": encode(patch(i))})
            await counted.until(i + 1)
        assert time.monotonic() - began < 2.0  # waiting four ticks would take 4 s
    finally:
        await counted.stop()
