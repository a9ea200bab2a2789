"""The replay HTTP API (gateway/replay.py) over real Redis and Postgres, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.testing import AsyncTestClient

from gateway.replay import make_replay_routes, replay_routes
from results_store.archive import Archiver
from results_store.jsondiff import same
from results_store.migrate import migrate
from results_store.replay import Replay, iso, key_of
from services.settings import Settings
from session_store.connect import connect_redis
from session_store.jsonpatch import apply_patch
from tests.conftest import TEST_ADMIN_TOKEN
from tests.timeline_driver import Driver, RandomSession, drive

AUTH = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
BATCH = "api-batch"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def world(settings: Settings, make_prefix, redis, pool):
    """A 2,000-event batch, about half of it archived; the app; the live state."""
    own = msgspec.structs.replace(settings, key_prefix=make_prefix(), snapshot_every=200,
                                  resume_window=200, archive_keep=0, archive_batch=500)
    driver = Driver(own, redis)
    await drive(driver, RandomSession(BATCH, seed=9), 2000, samples=1)
    await driver.snapshot_all()
    await Archiver.from_settings(redis, pool, own).archive_batch(BATCH, keep=1000)
    replay = Replay(redis, pool, driver.keys)
    entries = [item async for item in replay.iter_items(BATCH)]
    live = await driver.state(BATCH)

    def app(routes=replay_routes) -> Litestar:
        # The test client runs the app on a loop of its own: its clients are made there.
        @asynccontextmanager
        async def lifespan(app: Litestar) -> AsyncIterator[None]:
            app_redis = connect_redis(own.redis_url)
            app_pool = await asyncpg.create_pool(own.database_url, min_size=1, max_size=2)
            app.state.update(settings=own, redis=app_redis, pg=app_pool)
            try:
                yield
            finally:
                await app_pool.close()
                await app_redis.aclose()

        return Litestar(route_handlers=routes, lifespan=[lifespan], state=State({}))

    return app, replay, entries, live


async def test_guarded_and_clear_errors(world):
    app, _, _, _ = world
    async with AsyncTestClient(app()) as client:
        response = await client.get(f"/api/batches/{BATCH}/events")
        assert response.status_code == 401
        response = await client.get(f"/api/batches/{BATCH}/events",
                                    headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        for path, code, status in [
            ("/api/batches/nope/events", "batch_not_found", 404),
            ("/api/batches/nope/state?scope=batch", "batch_not_found", 404),
            ("/api/batches/nope/timeline", "batch_not_found", 404),
            (f"/api/batches/{BATCH}/events?limit=0", "bad_limit", 400),
            (f"/api/batches/{BATCH}/events?after=yesterday", "bad_position", 400),
            (f"/api/batches/{BATCH}/events?from=soon", "bad_time", 400),
            (f"/api/batches/{BATCH}/events?scope=nope", "bad_scope", 400),
            (f"/api/batches/{BATCH}/state?scope=nope", "bad_scope", 400),
            (f"/api/batches/{BATCH}/state?scope=batch&at=later", "bad_time", 400),
            (f"/api/batches/{BATCH}/diff?scope=batch_session", "bad_request", 400),
        ]:
            response = await client.get(path, headers=AUTH)
            assert response.status_code == status, path
            body = response.json()
            assert set(body) == {"code", "message"} and body["code"] == code, path


async def test_events_page_by_page_and_streamed(world):
    app, _, entries, _ = world
    async with AsyncTestClient(app()) as client:
        got = []
        after = ""
        while True:
            response = await client.get(f"/api/batches/{BATCH}/events",
                                        params={"limit": 300, "after": after}, headers=AUTH)
            assert response.status_code == 200
            page = response.json()
            got += page["events"]
            if page["next"] is None:
                break
            assert len(page["events"]) == 300 and page["next"] == got[-1]["pos"]
            after = page["next"]
        assert [e["pos"] for e in got] == [i.pos for i in entries]
        assert [e["event"] for e in got] == [msgspec.json.decode(i.raw) for i in entries]
        assert got[0]["time"] == iso(entries[0].ms)
        writes = [e for e in got if e["event"]["kind"] == "study_session_written"]
        assert writes and any("study_session" in e for e in writes)
        # Streamed as JSON Lines: everything, or up to a limit.
        response = await client.get(f"/api/batches/{BATCH}/events",
                                    headers={**AUTH, "Accept": "application/x-ndjson"})
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [msgspec.json.decode(line) for line in response.content.splitlines()]
        assert lines == got
        response = await client.get(f"/api/batches/{BATCH}/events?limit=5",
                                    headers={**AUTH, "Accept": "application/x-ndjson"})
        assert len(response.content.splitlines()) == 5
        # Filters.
        run = next(i.run for i in entries if i.kind == "study_session_written")
        mid = entries[len(entries) // 2].ms
        response = await client.get(
            f"/api/batches/{BATCH}/events",
            params={"scope": "batch_session,run:" + run, "kind": ["session_patched",
                                                                 "study_session_written"],
                    "limit": 10000}, headers=AUTH)
        expected = [i.pos for i in entries if i.scope in ("batch_session", f"run:{run}")
                    and i.kind in ("session_patched", "study_session_written")]
        assert [e["pos"] for e in response.json()["events"]] == expected
        response = await client.get(
            f"/api/batches/{BATCH}/events",
            params={"run": run, "from": iso(mid - 100), "to": str(mid + 100), "limit": 10000},
            headers=AUTH)
        expected = [i.pos for i in entries if mid - 100 <= i.ms <= mid + 100 and (
            run in (i.run, i.member) or i.scope == f"run:{run}")]
        assert [e["pos"] for e in response.json()["events"]] == expected


async def test_state_diff_and_timeline(world):
    app, replay, entries, live = world
    async with AsyncTestClient(app()) as client:
        response = await client.get(f"/api/batches/{BATCH}/state?scope=batch_session",
                                    headers=AUTH)
        body = response.json()
        assert body["version"] == live.versions["batch_session"]
        assert body["data"] == live.sessions["batch_session"]
        assert body["pos"] == live.pos and body["batch"] == BATCH
        pos = entries[700].pos
        response = await client.get(f"/api/batches/{BATCH}/state",
                                    params={"scope": "batch_session", "at": pos}, headers=AUTH)
        _, expected = await replay.scope_state(BATCH, "batch_session", key_of(pos))
        assert response.json()["data"] == expected["data"]
        assert response.json()["pos"] == pos
        # A time: the state after the last event at or before it.
        response = await client.get(f"/api/batches/{BATCH}/state", headers=AUTH,
                                    params={"scope": "batch", "at": iso(entries[700].ms)})
        assert key_of(response.json()["pos"])[0] == entries[700].ms
        # A run: its state and its study session contents.
        run = next(r for r, s in live.runs.items()
                   if s.study_session_version and not s.study_session_erased)
        response = await client.get(f"/api/batches/{BATCH}/state?scope=run:{run}", headers=AUTH)
        assert response.json()["data"]["study_session_version"] == (
            live.runs[run].study_session_version)
        assert response.json()["study_session"] is not None
        # Diff between two positions applies to the state at the first.
        a, b = entries[300].pos, entries[1500].pos
        response = await client.get(f"/api/batches/{BATCH}/diff", headers=AUTH,
                                    params={"scope": "batch_session", "from": a, "to": b})
        result = response.json()
        assert result["from"]["pos"] == a and result["to"]["pos"] == b
        _, sa = await replay.scope_state(BATCH, "batch_session", key_of(a))
        _, sb = await replay.scope_state(BATCH, "batch_session", key_of(b))
        assert same(apply_patch(sa["data"], result["ops"]), sb["data"])
        # The whole timeline as a download.
        response = await client.get(f"/api/batches/{BATCH}/timeline", headers=AUTH)
        assert response.headers["content-disposition"] == (
            f'attachment; filename="{BATCH}.jsonl"')
        lines = response.content.splitlines()
        assert [msgspec.json.decode(line)["pos"] for line in lines] == [i.pos for i in entries]


async def test_the_guard_is_a_parameter(world):
    app, _, _, _ = world

    def only_other_batches(connection: ASGIConnection, _handler) -> None:
        if connection.path_params.get("batch_id") == BATCH:
            raise PermissionDeniedException("not your batch")

    async with AsyncTestClient(app(make_replay_routes(only_other_batches))) as client:
        response = await client.get(f"/api/batches/{BATCH}/events")
        assert response.status_code == 403
        response = await client.get("/api/batches/other/events")
        assert response.status_code == 404
