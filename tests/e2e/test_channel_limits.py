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


async def read_pauses(url: str) -> float:
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    found = re.search(r"^cohort_gateway_read_pauses_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_commands_past_the_rate_are_refused_and_change_nothing(make_stack, new_batch_id):
    rate = 20
    stack = make_stack(gateways=1, workers=1, max_commands_per_s=rate)
    batch = new_batch_id()
    await stack.create_batch(batch)
    p = await join(stack, batch)
    began = time.monotonic()
    futures = [p.send_patch([{"op": "add", "path": f"/k{i}", "value": i}]) for i in range(60)]
    answers = await asyncio.wait_for(asyncio.gather(*futures), 20)
    window = time.monotonic() - began  # the gateway saw the burst within this
    acked = [i for i, a in enumerate(answers) if a["type"] == "ack"]
    refused = [i for i, a in enumerate(answers) if a["type"] == "fail"]
    assert len(acked) + len(refused) == 60
    assert rate <= len(acked) <= rate + rate * window + 1, (len(acked), window)
    for i in refused:
        assert answers[i]["code"] == "rate_limited", answers[i]
        assert f"at most {rate} commands per second" in answers[i]["message"]

    # Only the acknowledged ones are in the session.
    fresh = await join(stack, batch)
    assert fresh.version == len(acked)
    assert fresh.data == {f"k{i}": i for i in acked}

    # Refused means not submitted: the same id goes through once the bucket refilled.
    await asyncio.sleep(1.1)
    retry = refused[0]
    version = await p.patch([{"op": "add", "path": f"/k{retry}", "value": retry}],
                            cmd_id=answers[retry]["id"])
    assert version == len(acked) + 1
    # Pings are not counted: a burst of them is all answered, none refused.
    for _ in range(3 * rate):
        await p.send_raw('{"type":"ping"}')
    await p.patch([{"op": "add", "path": "/after_pings", "value": True}])


async def test_a_client_that_sends_without_reading_is_paused_not_dropped(make_stack,
                                                                         new_batch_id):
    stack = make_stack(gateways=1, workers=1, max_unsent_answers=10, max_commands_per_s=0,
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
    assert await read_pauses(url) == 0

    # The slow client's own commands: read and submitted while their answers fit...
    first = [slow.send_patch([{"op": "add", "path": f"/s{i}", "value": i}]) for i in range(100)]
    await writer.wait_version(filled + 100, timeout=20)
    # ...then its 100 unwritten acks pass the cap: one more message is read, and the
    # channel reads nothing after it.
    more = [slow.send_patch([{"op": "add", "path": f"/t{i}", "value": i}]) for i in range(50)]
    await writer.wait_version(filled + 101, timeout=20)
    deadline = time.monotonic() + 10
    while await read_pauses(url) < 1:
        assert time.monotonic() < deadline, "the channel never paused"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    assert writer.version == filled + 101, "the gateway went on reading a paused channel"
    assert not any(f.done() for f in first + more)

    # Once it reads again, everything it sent is applied, in order, and answered.
    slow.release()
    answers = await asyncio.wait_for(asyncio.gather(*first, *more), 30)
    assert [a["type"] for a in answers] == ["ack"] * 150
    assert [a["version"] for a in answers] == list(range(filled + 1, filled + 151))
    await writer.wait_version(filled + 150, timeout=20)
    await slow.wait_version(filled + 150, timeout=20)
    assert slow.data == writer.data
