"""A channel's own limits, against real processes: its command rate, and the answers
that may wait unwritten before the gateway stops reading from it."""

from __future__ import annotations

import asyncio
import os
import re
import time

import httpx
import pytest

from tests.e2e.conftest import join

pytestmark = pytest.mark.e2e


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_commands_past_the_rate_wait_and_none_is_lost(make_stack, new_batch_id):
    rate = 20
    stack = make_stack(gateways=1, workers=1, max_commands_per_s=rate)
    url = stack.gateway_urls[0]
    batch = new_batch_id()
    await stack.create_batch(batch)
    p = await join(stack, batch)
    began = time.monotonic()
    futures = [p.send_patch([{"op": "add", "path": f"/k{i}", "value": i}]) for i in range(60)]
    answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
    took = time.monotonic() - began
    # All applied, in the order sent: a second's worth at once, the rest at the rate.
    assert [a["type"] for a in answers] == ["ack"] * 60
    assert [a["version"] for a in answers] == list(range(1, 61))
    assert took >= (60 - rate) / rate - 0.1, took
    assert await metric(url, "cohort_gateway_throttled_total") >= 1
    fresh = await join(stack, batch)
    assert fresh.version == 60 and fresh.data == {f"k{i}": i for i in range(60)}

    # Pings are not counted: after a burst of them a command goes through at once.
    await asyncio.sleep(1.1)  # the bucket is full again
    for _ in range(3 * rate):
        await p.send_raw('{"type":"ping"}')
    began = time.monotonic()
    await p.patch([{"op": "add", "path": "/after_pings", "value": True}])
    assert time.monotonic() - began < 0.5


async def test_a_client_that_sends_without_reading_is_paused_not_dropped(make_stack,
                                                                         new_batch_id):
    stack = make_stack(gateways=1, workers=1, max_unsent_answers=40, max_commands_per_s=0,
                       outbound_queue_bytes=256 * 1024, overflows_before_close=100)
    url = stack.gateway_urls[0]
    batch = new_batch_id()
    await stack.create_batch(batch)
    writer = await join(stack, batch)
    slow = await join(stack, batch, rcvbuf=4096, max_queue=1)
    slow.hold()  # it stops reading: the gateway's writes to it block once buffers fill
    filled = 1500  # ~12 MB of changes to it, far past the kernel's buffers
    for start in range(0, filled, 30):
        chunk = [writer.send_patch([{"op": "add", "path": f"/k{n % 50}",
                                     "value": os.urandom(4000).hex()}])
                 for n in range(start, start + 30)]
        assert all(a["type"] == "ack" for a in await asyncio.wait_for(asyncio.gather(*chunk), 30))
    # The writer never has more than 30 answers due: only the slow channel can pause.
    assert await metric(url, "cohort_gateway_read_pauses_total") == 0

    # The slow client's own commands are read and submitted until 40 of their
    # answers wait unwritten; then the channel reads nothing more from it. (Usually
    # all of the first 100 are read before their acks come back, and the pause
    # comes with the next message; a burst split on a busy machine pauses sooner.)
    first = [slow.send_patch([{"op": "add", "path": f"/s{i}", "value": i}]) for i in range(100)]
    await writer.wait_for(lambda: writer.version >= filled + 40, timeout=20)
    more = [slow.send_patch([{"op": "add", "path": f"/t{i}", "value": i}]) for i in range(50)]
    deadline = time.monotonic() + 10
    while await metric(url, "cohort_gateway_read_pauses_total") < 1:
        assert time.monotonic() < deadline, "the channel never paused"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # what was read before the pause is committed
    paused_at = writer.version
    await asyncio.sleep(1.0)
    assert writer.version == paused_at, "the gateway went on reading a paused channel"
    assert filled + 40 <= paused_at < filled + 150, paused_at
    assert not any(f.done() for f in first + more)

    # Once it reads again, everything it sent is applied, in order, and answered.
    slow.release()
    answers = await asyncio.wait_for(asyncio.gather(*first, *more), 30)
    assert [a["type"] for a in answers] == ["ack"] * 150
    assert [a["version"] for a in answers] == list(range(filled + 1, filled + 151))
    await writer.wait_version(filled + 150, timeout=20)
    await slow.wait_version(filled + 150, timeout=20)
    assert slow.data == writer.data
