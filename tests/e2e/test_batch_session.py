"""The batch session end to end: real gateways, real workers, real WebSockets."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter

import pytest

from services.participant import CommandFailed, Participant
from session_store.connect import connect_redis
from session_store.events import decode_event
from session_store.keys import Keys
from tests.e2e.conftest import join
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e


async def increment(p: Participant, path: str = "/counter") -> int:
    """JATOS-style versioned increment, retried by the client on conflict."""
    while True:
        version = p.version
        current = p.data.get(path.strip("/"), 0)
        try:
            return await p.patch([{"op": "replace", "path": path, "value": current + 1}],
                                 version=version)
        except CommandFailed as exc:
            assert exc.code == "version_mismatch", exc.frame
            await p.wait_version(exc.version)


async def stream_commands(redis_url: str, stack: Stack, batch_id: str) -> Counter[str]:
    """How many events each command id produced, read straight from the log."""
    keys = Keys(stack.env["COHORT_KEY_PREFIX"], int(stack.env["COHORT_PARTITIONS"]))
    redis = connect_redis(redis_url)
    try:
        entries = await redis.xrange(keys.events(batch_id))
    finally:
        await redis.aclose()
    counts: Counter[str] = Counter()
    for _, fields in entries:
        event = decode_event(fields[b"e"])
        if event.cmd and event.cmd.startswith("w"):  # the writers' patches
            counts[f"{event.run}/{event.cmd}"] += 1
    return counts


def assert_in_order(p: Participant, start: int, end: int) -> None:
    assert p.gaps == 0 and p.resyncs == 0
    assert p.seen == list(range(start + 1, end + 1)), "versions missing, duplicated or unordered"


# Both WebSocket implementations a gateway can run (COHORT_WS_PROTOCOL): its own and,
# as a fallback, uvicorn's.
@pytest.mark.parametrize("ws_protocol", ["cohort", "uvicorn"])
async def test_fifty_clients_two_gateways_two_workers(make_stack, new_batch_id, ws_protocol):
    stack = make_stack(gateways=2, workers=2, ws_protocol=ws_protocol)
    batch = new_batch_id()
    await stack.create_batch(batch)
    clients = await asyncio.gather(*(join(stack, batch, gateway=i % 2) for i in range(50)))
    await clients[0].patch([{"op": "add", "path": "/counter", "value": 0}])
    await asyncio.gather(*(c.wait_version(1) for c in clients))

    async def work(i: int, c: Participant) -> int:
        adds = [c.patch([{"op": "add", "path": f"/p{i}_{k}", "value": k}]) for k in range(6)]
        increments = [increment(c) for _ in range(3)]
        results = await asyncio.gather(*adds, *increments)
        return len(results) - len(adds)

    acked_increments = sum(await asyncio.gather(*(work(i, c) for i, c in enumerate(clients))))
    final = 1 + 50 * 6 + acked_increments
    await asyncio.gather(*(c.wait_version(final) for c in clients))
    reference = clients[0].data
    assert reference["counter"] == acked_increments == 150
    assert all(reference[f"p{i}_{k}"] == k for i in range(50) for k in range(6))
    for c in clients:
        assert c.data == reference
        assert_in_order(c, 0, final)  # everyone joined at version 0
    await asyncio.gather(*(c.close() for c in clients))


async def test_retried_command_id_applies_once_and_gets_the_same_answer(make_stack, new_batch_id):
    stack = make_stack(gateways=2, workers=1)
    batch = new_batch_id()
    await stack.create_batch(batch)
    a = await join(stack, batch, gateway=0)
    version = await a.patch([{"op": "add", "path": "/x", "value": 1}], cmd_id="same")
    again = await a.patch([{"op": "add", "path": "/x", "value": 1}], cmd_id="same")
    assert again == version == 1
    # The worker decided the retry again in memory before Redis said "seen": its
    # state must not keep that phantom change (the next version is 2, not 3).
    assert await a.patch([{"op": "add", "path": "/y", "value": 2}]) == 2
    with pytest.raises(CommandFailed) as first:
        await a.patch([{"op": "remove", "path": "/nope"}], cmd_id="bad")
    with pytest.raises(CommandFailed) as second:
        await a.patch([{"op": "remove", "path": "/nope"}], cmd_id="bad")
    assert first.value.code == second.value.code == "path_not_found"
    # A retry through the other gateway (a reconnect elsewhere) is answered there.
    ticket_url = a.ws_url.replace(stack.gateway_urls[0].removeprefix("http://"),
                                  stack.gateway_urls[1].removeprefix("http://"))
    b = await Participant(ticket_url).connect()
    await b.wait_ready()
    assert await b.patch([{"op": "add", "path": "/x", "value": 1}], cmd_id="same") == 1
    assert b.version == 2 and b.data == {"x": 1, "y": 2}


async def test_resume_gets_only_missing_changes(make_stack, new_batch_id):
    stack = make_stack(gateways=2, workers=1)
    batch = new_batch_id()
    await stack.create_batch(batch)
    a = await join(stack, batch, gateway=0)
    b = await join(stack, batch, gateway=1)
    await a.patch([{"op": "add", "path": "/n", "value": 0}])
    await b.wait_version(1)
    await b.close()
    for n in range(1, 6):
        await a.patch([{"op": "replace", "path": "/n", "value": n}])
    # Reconnect to the *other* gateway with the last position seen: deltas only.
    b.ws_url = b.ws_url.replace(stack.gateway_urls[1].removeprefix("http://"),
                                stack.gateway_urls[0].removeprefix("http://"))
    await b.connect(since=b.pos)
    await b.wait_version(6)
    assert b.data == {"n": 5} and b.states == 1 and b.resyncs == 0
    assert b.seen == [1, 2, 3, 4, 5, 6]
    # A position the gateway no longer has (or never had) gives a resync instead.
    c = await Participant(b.ws_url).connect(since="1-0")
    await c.wait_ready()
    assert c.resyncs == 1 and c.data == {"n": 5} and c.version == 6


async def owner_of(redis_url: str, stack: Stack, batch: str) -> str:
    keys = Keys(stack.env["COHORT_KEY_PREFIX"], int(stack.env["COHORT_PARTITIONS"]))
    redis = connect_redis(redis_url)
    try:
        holder = await redis.get(keys.lease(keys.partition(batch)))
    finally:
        await redis.aclose()
    assert holder is not None, "nobody owns the batch's partition"
    pid = int(holder.decode().split("-")[-2])
    return next(name for name, proc in stack.procs.items() if proc.pid == pid)


async def patch_until_acked(p: Participant, ops: list, cmd_id: str) -> int:
    """A bot that re-sends the same command id until it gets an answer."""
    while True:
        try:
            return await p.patch(ops, cmd_id=cmd_id, timeout=2.0)
        except TimeoutError:
            continue


async def run_writers_through(stack: Stack, batch: str, disrupt) -> tuple[list[Participant], int]:
    writers = await asyncio.gather(*(join(stack, batch, gateway=i % 2) for i in range(10)))
    acked = 0
    quarter = asyncio.Event()

    async def write(i: int, p: Participant) -> None:
        nonlocal acked
        for k in range(40):
            await patch_until_acked(p, [{"op": "add", "path": f"/w{i}_{k}", "value": k}],
                                    cmd_id=f"w{i}-{k}")
            acked += 1
            if acked >= 100:
                quarter.set()
            await asyncio.sleep(random.random() * 0.01)

    jobs = asyncio.gather(*(write(i, p) for i, p in enumerate(writers)))
    # The disruption comes a quarter of the way in (not after a fixed time: on a
    # fast machine the writers were done before it), so the rest needs a takeover.
    await asyncio.wait_for(quarter.wait(), 60)
    await disrupt()
    await asyncio.wait_for(jobs, 60)
    return writers, 1 + 10 * 40


async def test_sigkill_worker_takeover_loses_nothing(make_stack, new_batch_id, redis_url):
    stack = make_stack(gateways=2, workers=2)
    batch = new_batch_id()
    await stack.create_batch(batch)
    observer = await join(stack, batch)
    victim = await owner_of(redis_url, stack, batch)

    async def kill() -> None:
        stack.signal(victim, signal.SIGKILL)

    await run_writers_through(stack, batch, kill)
    await observer.wait_version(400)
    assert len(observer.data) == 400
    assert all(observer.data[f"w{i}_{k}"] == k for i in range(10) for k in range(40))
    counts = await stream_commands(redis_url, stack, batch)
    assert len(counts) == 400 and set(counts.values()) == {1}, "a command applied twice"
    assert_in_order(observer, 0, 400)
    assert await owner_of(redis_url, stack, batch) != victim


async def test_paused_stale_owner_cannot_append(make_stack, new_batch_id, redis_url):
    stack = make_stack(gateways=2, workers=2)
    batch = new_batch_id()
    await stack.create_batch(batch)
    observer = await join(stack, batch)
    victim = await owner_of(redis_url, stack, batch)

    async def pause_past_lease() -> None:
        stack.signal(victim, signal.SIGSTOP)
        await asyncio.sleep(3.0)  # lease is 1 s in these stacks
        stack.signal(victim, signal.SIGCONT)

    await run_writers_through(stack, batch, pause_past_lease)
    await observer.wait_version(400)
    counts = await stream_commands(redis_url, stack, batch)
    assert len(counts) == 400 and set(counts.values()) == {1}, "a command applied twice"
    assert_in_order(observer, 0, 400)
    await asyncio.sleep(1.0)
    log = stack.log(victim)
    assert "lease lost" in log or "fenced out" in log, log[-3000:]
