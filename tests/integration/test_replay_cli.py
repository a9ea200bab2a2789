"""``cohort replay`` and ``cohort timeline export|stats`` as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec

from results_store.archive import Archiver
from results_store.migrate import migrate
from results_store.replay import Replay, key_of
from tests.timeline_driver import Driver, RandomSession, drive

REPO = Path(__file__).resolve().parents[2]


def cohort(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_replay_export_and_stats_commands(settings, make_prefix, redis, tmp_path):
    own = msgspec.structs.replace(settings, key_prefix=make_prefix(), snapshot_every=200,
                                  resume_window=200)
    await migrate(own.database_url)
    driver = Driver(own, redis)
    batch = "cli"
    await drive(driver, RandomSession(batch, seed=10), 1500, samples=1)
    await driver.snapshot_all()
    pool = await asyncpg.create_pool(own.database_url, min_size=1, max_size=2)
    try:
        await Archiver.from_settings(redis, pool, own).archive_batch(batch, keep=700)
        replay = Replay(redis, pool, driver.keys)
        items = [i async for i in replay.iter_items(batch)]
        pos = items[800].pos
        _, expected = await replay.scope_state(batch, "batch_session", key_of(pos))
    finally:
        await pool.close()
    env = {**os.environ, "COHORT_REDIS_URL": own.redis_url,
           "COHORT_DATABASE_URL": own.database_url, "COHORT_KEY_PREFIX": own.key_prefix,
           "COHORT_PARTITIONS": str(own.partitions), "COHORT_LOG_LEVEL": "warning"}

    done = cohort(env, "replay", batch, "--scope", "batch_session", "--at", pos)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["data"] == expected["data"] and shown["version"] == expected["version"]
    assert shown["pos"] == pos

    out = tmp_path / "timeline.jsonl"
    done = cohort(env, "timeline", "export", batch, "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = out.read_bytes().splitlines()
    assert [json.loads(line)["pos"] for line in lines] == [i.pos for i in items]
    assert "100%" in done.stderr and f"{len(items)} events written" in done.stderr
    done = cohort(env, "timeline", "export", batch, "--scope", "batch_session", "--quiet")
    assert done.returncode == 0 and done.stderr == ""
    assert len(done.stdout.splitlines()) == sum(i.scope == "batch_session" for i in items)

    done = cohort(env, "timeline", "stats", batch, "--json")
    stats = json.loads(done.stdout)
    assert stats["events"] == len(items) and sum(stats["minutes"].values()) == len(items)
    done = cohort(env, "timeline", "stats", batch)
    assert "events per scope:" in done.stdout and "batch_session" in done.stdout

    done = cohort(env, "replay", "nope", "--scope", "batch")
    assert done.returncode == 1 and "batch_not_found" in done.stderr
    done = cohort(env, "replay", batch, "--scope", "batch", "--at", "soon")
    assert done.returncode == 1 and "bad_time" in done.stderr
    done = cohort(env, "replay", batch, "--scope", "nope")
    assert done.returncode == 1 and "bad_scope" in done.stderr
