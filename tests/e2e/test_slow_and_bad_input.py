"""Back-pressure (slow clients) and bad input, against real processes."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import pytest

from gateway.tokens import TokenSigner
from services.participant import CommandFailed, Participant
from tests.e2e.conftest import join
from tests.e2e.stack import SECRET

pytestmark = pytest.mark.e2e


async def test_slow_client_is_resynced_and_does_not_delay_others(make_stack, new_batch_id):
    # The writer sends 1,500 patches as fast as it can: unthrottled, to keep to the point.
    stack = make_stack(gateways=1, workers=1, outbound_queue_bytes=1024 * 1024,
                       overflows_before_close=2, max_commands_per_s=0)
    batch = new_batch_id()
    await stack.create_batch(batch)
    writer = await join(stack, batch)
    others = [await join(stack, batch) for _ in range(4)]
    slow = await join(stack, batch, rcvbuf=4096, max_queue=1)
    slow.hold()  # it stops reading: its socket buffers fill, then the gateway's queue

    def blob() -> str:
        return os.urandom(4000).hex()  # incompressible, in case compression is ever on
    total = 1500  # ~12 MB of changes, far past the kernel's buffers and the 1 MB cap

    async def write_all() -> None:
        # In rounds, so that the changes reach clients as many frames, not a few huge ones.
        for start in range(0, total, 30):
            futures = [writer.send_patch([{"op": "add", "path": f"/k{n % 50}", "value": blob()}])
                       for n in range(start, start + 30)]
            results = await asyncio.wait_for(asyncio.gather(*futures), 30)
            assert all(r["type"] == "ack" for r in results)

    await write_all()
    last_ack = time.perf_counter()
    await asyncio.gather(*(o.wait_version(total, timeout=20) for o in others))
    for o in others:
        assert o.gaps == 0 and o.resyncs == 0 and o.seen == list(range(1, total + 1))
        # Everyone else got the last change promptly although one client is stuck.
        assert o.arrivals[total] - last_ack < 2.0

    slow.release()
    await slow.wait_version(total, timeout=20)
    assert slow.resyncs >= 1, "the slow client should have been sent a full-state resync"
    assert slow.data == writer.data and slow.version == total

    # Overflowing again within the window closes the connection (4408).
    slow.hold()
    await write_all()
    slow.release()
    code, reason = await asyncio.wait_for(slow.closed, 20)
    assert code == 4408, (code, reason)


async def test_bad_input_gets_codes_and_changes_nothing(make_stack, new_batch_id):
    stack = make_stack(gateways=1, workers=1, max_message_bytes=16384,
                       max_session_bytes=8192, max_ops_per_patch=5, log_level="info")
    batch = new_batch_id()
    await stack.create_batch(batch)
    p = await join(stack, batch)
    await p.patch([{"op": "add", "path": "/list", "value": [1, 2]}])

    await p.send_raw("{not json")
    assert (await p.next_error())["code"] == "bad_json"
    await p.send_raw(json.dumps({"type": "launch_rockets"}))
    assert (await p.next_error())["code"] == "bad_message"
    await p.send_raw(json.dumps({"type": "patch", "id": "x", "scope": "batch_session"}))
    assert (await p.next_error())["code"] == "bad_message"  # ops missing
    await p.send_raw(json.dumps({"type": "patch", "id": "big", "scope": "batch_session",
                                 "ops": [{"op": "add", "path": "/b", "value": "y" * 20000}]}))
    assert (await p.next_error())["code"] == "too_large"

    failures = {
        "path_not_found": [{"op": "replace", "path": "/missing/deep", "value": 1}],
        "test_failed": [{"op": "test", "path": "/list/0", "value": 99}],
        "bad_patch": [{"op": "frobnicate", "path": "/list"}],
        "state_too_large": [{"op": "add", "path": f"/s{i}", "value": "z" * 3000}
                            for i in range(3)],
    }
    for code, ops in failures.items():
        with pytest.raises(CommandFailed) as caught:
            await p.patch(ops)
        assert caught.value.code == code and caught.value.version == 1
    with pytest.raises(CommandFailed) as caught:
        await p.patch([{"op": "add", "path": f"/o{i}", "value": i} for i in range(6)])
    assert caught.value.code == "bad_patch"  # over max_ops_per_patch
    with pytest.raises(CommandFailed) as caught:
        await p.patch([{"op": "add", "path": "/a", "value": 1}], version=0)
    assert caught.value.code == "version_mismatch" and caught.value.version == 1
    p.scope = "group_session:g1"  # not writable on a batch channel
    with pytest.raises(CommandFailed) as caught:
        await p.patch([{"op": "add", "path": "/a", "value": 1}])
    p.scope = "batch_session"
    assert caught.value.code == "bad_scope"
    # A patch that fails half way leaves nothing behind (undo record).
    with pytest.raises(CommandFailed):
        await p.patch([{"op": "add", "path": "/half", "value": 1},
                       {"op": "remove", "path": "/nothing"}])

    # Nothing above changed the session: a fresh participant sees version 1.
    fresh = await join(stack, batch)
    assert fresh.version == 1 and fresh.data == {"list": [1, 2]}
    assert p.version == 1 and p.data == {"list": [1, 2]}

    # Bad tokens and missing batches are refused with a code, then closed.
    base = stack.gateway_urls[0].replace("http", "ws")
    cases = {
        f"{base}/ws/batch/{batch}?token=garbage": ("forbidden", 4403),
        f"{base}/ws/batch/other?token=" + TokenSigner(SECRET, 60).issue("r", batch):
            ("forbidden", 4403),
        f"{base}/ws/batch/nope?token=" + TokenSigner(SECRET, 60).issue("r", "nope"):
            ("batch_not_found", 4404),
        f"{base}/ws/batch/{batch}?token=" + TokenSigner("wrong-secret", 60).issue("r", batch):
            ("forbidden", 4403),
    }
    for url, (code, close_code) in cases.items():
        bad = await Participant(url).connect()
        assert (await bad.next_error())["code"] == code
        assert (await asyncio.wait_for(bad.closed, 5))[0] == close_code

    # A trailing slash is forgiven (as the framework's router did before channels
    # were served in front of it).
    ticket = await stack.participant(batch)
    slash = ticket["ws_url"].replace(f"/ws/batch/{batch}?", f"/ws/batch/{batch}/?")
    late = await Participant(slash, run_id=ticket["run_id"]).connect()
    await late.wait_ready()
    assert late.version == 1 and late.data == {"list": [1, 2]}
    await late.close()
    # Even at log level info, no participant's token reaches the gateway's log.
    log = stack.log("gateway0")
    assert '"level": "info"' in log, log[-2000:]  # the level really was info
    assert ticket["token"] not in log and "token=" not in log


async def test_http_bad_input(make_stack, new_batch_id):
    stack = make_stack(gateways=1, workers=1, demo="true")
    url = stack.gateway_urls[0]
    async with httpx.AsyncClient(base_url=url) as anon:
        demo = await anon.get("/demo")
        assert demo.status_code == 200 and demo.headers["content-type"].startswith("text/html")
        assert (await anon.post("/demo/join")).status_code == 201
    batch = new_batch_id()
    async with httpx.AsyncClient(base_url=url) as anon:
        r = await anon.post("/api/batches", json={"id": batch})
        assert r.status_code == 401
    auth = {"Authorization": f"Bearer {stack.admin_token}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as admin:
        r = await admin.post("/api/batches", json={"id": "bad id!"})
        assert r.status_code == 400 and r.json()["code"] == "bad_batch_id"
        r = await admin.post("/api/batches", content=b"{oops")
        assert r.status_code == 400
        r = await admin.post("/api/batches", json={"id": batch, "label": "L"})
        assert r.status_code == 201 and r.json()["versions"] == {"batch": 1}
        r = await admin.post("/api/batches", json={"id": batch})
        assert r.status_code == 409 and r.json()["code"] == "batch_exists"
        r = await admin.post("/api/batches/missing-batch/participants")
        assert r.status_code == 404 and r.json()["code"] == "batch_not_found"
        r = await admin.get(f"/api/batches/{batch}")
        assert r.status_code == 200 and r.json()["label"] == "L"
        assert (await admin.get("/livez")).status_code == 200
        assert (await admin.get("/readyz")).json() == {"redis": "ok", "postgres": "ok"}
        metrics = (await admin.get("/metrics")).text
        assert "cohort_gateway_connections" in metrics
        schema = (await admin.get("/schema/openapi.json")).json()
        assert "/api/batches" in schema["paths"]
