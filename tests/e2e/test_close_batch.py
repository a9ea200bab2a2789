"""Closing a batch with real processes: the API (and the CLI), participants' channels,
the finalizer archiving the whole timeline and removing the batch from Redis, and
replay from Postgres afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from services.participant import Participant
from session_store.connect import connect_redis
from tests.e2e.conftest import join
from tests.e2e.stack import REPO, Stack

pytestmark = pytest.mark.e2e


async def keys_of(stack: Stack, batch: str) -> list[bytes]:
    redis = connect_redis(stack.env["COHORT_REDIS_URL"])
    try:
        prefix = stack.env["COHORT_KEY_PREFIX"]
        return [k async for k in redis.scan_iter(match=f"{prefix}:*:b:{batch}:*")]
    finally:
        await redis.aclose()


async def wait_removed(stack: Stack, database_url: str, batch: str, timeout: float = 30) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            removed = await conn.fetchval(
                "SELECT removed_at FROM archived_batches WHERE batch_id = $1", batch)
            if removed is not None:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"not removed: {stack.log('finalizer')[-3000:]}")
    finally:
        await conn.close()


async def test_closing_ends_participants_archives_everything_and_replay_still_works(
        make_stack, new_batch_id, database_url):
    stack = make_stack(gateways=2, workers=1, snapshot_every=20, resume_window=40,
                       archive_keep=0, archive_interval_s=0.3)
    batch = new_batch_id()
    await stack.create_batch(batch, "closing")
    a = await join(stack, batch, 0)
    b = await join(stack, batch, 1)
    for n in range(60):
        await (a if n % 2 else b).patch([{"op": "add", "path": f"/k{n % 7}", "value": n}])
    expected = dict(a.data)

    async with stack._admin() as client:
        url = f"/api/batches/{batch}/close"
        refused = await client.post(url)
        assert refused.status_code == 409 and refused.json()["code"] == "runs_active"
        assert "2 run(s)" in refused.json()["message"]
        bad = await client.post(url, content=b'{"force": "yes"}')
        assert bad.status_code == 400 and bad.json()["code"] == "bad_request"
        missing = await client.post(f"/api/batches/{new_batch_id()}/close")
        assert missing.status_code == 404 and missing.json()["code"] == "batch_not_found"
        # Refusals changed nothing: the batch takes changes, nobody was cut off.
        await a.patch([{"op": "add", "path": "/after_refusal", "value": True}])
        await b.changed.wait()
        expected = dict(a.data)
        assert not a.closed.done() and not b.closed.done()

        closed = await client.post(url, json={"force": True})
        assert closed.status_code == 200, closed.text
        body = closed.json()
        assert body["batch"] == batch and body["pos"] and body["already"] is False

        # Every participant channel, on both gateways, is told why and closed.
        for person in (a, b):
            assert await asyncio.wait_for(person.closed, 10) == (4410, "batch_closed")
            assert person.errors and person.errors[-1]["code"] == "batch_closed"
        ticket = await client.post(f"/api/batches/{batch}/participants")
        assert ticket.status_code == 410 and ticket.json()["code"] == "batch_closed"
        again = await client.post(url)
        assert again.status_code == 200 and again.json()["already"] is True

    # The finalizer archives it all and removes every key of the batch.
    assert await keys_of(stack, batch)
    stack._spawn("finalizer", "finalizer")
    await wait_removed(stack, database_url, batch)
    assert await keys_of(stack, batch) == []

    # An old token's channel is refused (the gateway may still hold the closed view
    # for a while, or load nothing at all).
    late = await Participant(a.ws_url, run_id=a.run_id).connect()
    code, reason = await asyncio.wait_for(late.closed, 10)
    assert (code, reason) in ((4410, "batch_closed"), (4404, "batch_not_found"))

    # Replay, from Postgres alone: the last state and the full timeline.
    async with stack._admin(1) as client:
        info = await client.get(f"/api/batches/{batch}")
        assert info.status_code == 200 and info.json()["closed"] is True
        assert info.json()["versions"]["batch_session"] == 61
        state = await client.get(f"/api/batches/{batch}/state",
                                 params={"scope": "batch_session"})
        assert state.status_code == 200, state.text
        assert state.json()["data"] == expected
        events = (await client.get(f"/api/batches/{batch}/events",
                                   params={"limit": 10000})).json()["events"]
        kinds = [e["event"]["kind"] for e in events]
        assert kinds[0] == "batch_opened" and kinds[-1] == "batch_closed"
        assert kinds.count("run_ended") == 2 and kinds.count("session_patched") == 61
        assert events[-1]["pos"] == body["pos"]
    assert "failed" not in stack.log("finalizer"), stack.log("finalizer")[-3000:]


async def test_the_cli_closes_an_idle_batch(make_stack, new_batch_id, database_url):
    stack = make_stack(gateways=1, workers=1, archive_interval_s=0.3)
    batch = new_batch_id()
    await stack.create_batch(batch)
    person = await join(stack, batch)
    await person.patch([{"op": "add", "path": "/x", "value": 1}])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli", "batch", "close", *args],
                              cwd=REPO, env=stack.env, capture_output=True, text=True,
                              timeout=60)

    refused = cli(batch)
    assert refused.returncode == 1 and "runs_active" in refused.stderr
    unknown = cli("no-such-batch")
    assert unknown.returncode == 1 and "batch_not_found" in unknown.stderr
    done = cli(batch, "--force")
    assert done.returncode == 0 and f"closed batch {batch} at position" in done.stdout
    assert await asyncio.wait_for(person.closed, 10) == (4410, "batch_closed")
    again = cli(batch)
    assert again.returncode == 0 and "was closed already" in again.stdout
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT closed_at IS NOT NULL AND NOT active FROM batches "
                                   "WHERE id = $1", batch)
    finally:
        await conn.close()
    # The CLI's reply streams are gone with it.
    redis = connect_redis(stack.env["COHORT_REDIS_URL"])
    try:
        prefix = stack.env["COHORT_KEY_PREFIX"]
        assert [k async for k in redis.scan_iter(match=f"{prefix}:gw:cli-*")] == []
    finally:
        await redis.aclose()
