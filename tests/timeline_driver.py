"""A randomized batch timeline written by the real worker code, in this process.

``Driver`` feeds commands to ``services.worker.PartitionLoop.handle`` (the worker's
own iteration: decide against the in-memory state, plan side writes, one fenced
Lua append, snapshots every N events) against real Redis, holding the partition's
lease like a worker does. Only the XREAD of the command stream is skipped, so a
timeline of 10,000 events takes seconds instead of minutes.

``RandomSession`` makes plausible commands for a batch: participants start runs,
move through components, retrieve data, write study sessions, end, abort or fail;
patch the batch session (sometimes stale-versioned or failing, so rejections are
in the mix); join, leave and reassign groups, patch group sessions and chat.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from services.settings import Settings
from services.worker import SYSTEM, PartitionLoop, Worker
from session_store.commands import (
    AbortRun,
    ChangeBatchSettings,
    Command,
    EndRun,
    FailRun,
    FixGroup,
    JoinGroup,
    LeaveGroup,
    OpenBatch,
    Patch,
    ReassignGroup,
    RetrieveData,
    SendGroupMessage,
    SetPresence,
    StartComponent,
    StartRun,
    WriteStudySession,
    encode,
)
from session_store.events import GroupLimits
from session_store.projector import BatchState, decode_state, encode_state

# A timeline of the first event schema, made once with this driver (its README).
SCHEMA1_FIXTURE = Path(__file__).resolve().parent / "data" / "timeline_schema1"


def recorded_state(name: str) -> bytes:
    """A state file of the schema-1 fixture in today's encoding: the state's own shape
    may grow (fields with defaults, e.g. ``closed``); the recorded content may not."""
    return encode_state(decode_state((SCHEMA1_FIXTURE / name).read_bytes()))


class Driver:
    def __init__(self, settings: Settings, redis: Any) -> None:
        self.worker = Worker(settings, redis)
        self.keys = self.worker.keys
        self.loops: dict[int, tuple[PartitionLoop, list[str]]] = {}
        self._entry = 0

    async def loop_for(self, batch_id: str) -> PartitionLoop:
        partition = self.keys.partition(batch_id)
        found = self.loops.get(partition)
        if found is None:
            epoch = await self.worker.store.acquire(partition, self.worker.worker_id, 600_000)
            assert epoch, "the partition is leased by someone else"
            found = self.loops[partition] = (PartitionLoop(self.worker, partition, epoch), ["0-0"])
        return found[0]

    async def send(self, commands: list[Command]) -> None:
        """One worker iteration over ``commands`` (all of one partition)."""
        loop = await self.loop_for(commands[0].batch)
        cursor = self.loops[loop.partition][1]
        entries = []
        for command in commands:
            self._entry += 1
            entries.append((f"{self._entry}-0".encode(), {b"c": encode(command)}))
        cursor[0] = await loop.handle(entries, cursor[0])
        await self.settle()

    async def settle(self) -> None:
        """Wait for the snapshots the iteration wrote in the background."""
        while self.worker.background:
            await asyncio.gather(*list(self.worker.background))

    async def state(self, batch_id: str) -> BatchState:
        return (await (await self.loop_for(batch_id)).holder(batch_id)).state

    async def snapshot_all(self) -> None:
        """Snapshot every batch now (what the worker does after 2 s idle)."""
        for loop, _ in self.loops.values():
            await loop.maybe_snapshot(idle_after_s=0.0)
        await self.settle()


def random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth > 2 or pick < 0.45:
        return rng.choice([
            rng.randrange(-1000, 1000), rng.random() * 100, 1e20, -0.0, True, False, None,
            "héllo ✓", f"s{rng.randrange(100)}", "", 2**53 + 1,
        ])
    if pick < 0.75:
        # Members in a random (not sorted) order: replay must keep it exactly.
        names = rng.sample(["zeta", "alpha", "m", "b", "aa", "é", "k1", "k10"], rng.randrange(1, 5))
        return {name: random_json(rng, depth + 1) for name in names}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]


def random_ops(rng: random.Random, doc: Any) -> list[dict[str, Any]]:
    """Mostly valid ops against ``doc`` (a dict); a few fail (test, missing path)."""
    ops: list[dict[str, Any]] = []
    keys = list(doc) if isinstance(doc, dict) else []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        pick = rng.random()
        if pick < 0.35 or not keys:
            key = f"k{rng.randrange(40)}"
            ops.append({"op": "add", "path": f"/{key}", "value": random_json(rng)})
            keys.append(key)
        elif pick < 0.6:
            ops.append({"op": "replace", "path": f"/{rng.choice(keys)}",
                        "value": random_json(rng)})
        elif pick < 0.72:
            key = keys.pop(rng.randrange(len(keys)))
            ops.append({"op": "remove", "path": f"/{key}"})
        elif pick < 0.85:
            ops.append({"op": "add", "path": "/log", "value": []})
            ops.append({"op": "add", "path": "/log/-", "value": random_json(rng)})
            keys.append("log")
        elif pick < 0.95:
            ops.append({"op": "add", "path": "/n", "value": rng.randrange(10**6)})
            keys.append("n")
        else:
            ops.append({"op": "test", "path": "/n", "value": -1})  # fails: a rejection
    return ops


class RandomSession:
    """Random commands for one batch, chosen from its live state."""

    def __init__(self, batch_id: str, seed: int, arrival: int | None = None) -> None:
        self.batch_id = batch_id
        # Group-by-arrival (groups form once this many wait in the lobby), or None.
        self.arrival = arrival
        self.rng = random.Random(seed)
        self.ids = 0
        self.run_count = 0
        self.touched: set[str] = set()

    def _id(self) -> str:
        self.ids += 1
        return f"c{self.ids}"

    def open(self) -> OpenBatch:
        return OpenBatch(id=self._id(), batch=self.batch_id, run="admin", gw=SYSTEM,
                         label="random", groups=self.limits())

    def limits(self, max_active: int = 3) -> GroupLimits:
        return GroupLimits(max_active_members=max_active, max_total_members=6,
                           form_by_arrival=self.arrival)

    def commands(self, state: BatchState, n: int) -> list[Command]:
        self.touched: set[str] = set()
        out: list[Command] = []
        runs: set[str] = set()
        for _ in range(n):
            command = self.one(state)
            # One command per run and iteration: each is then decided against the
            # state it was chosen from (no fix_group or set_presence that would
            # change nothing, which the worker cannot commit).
            if command is not None and (command.run == "admin" or command.run not in runs):
                runs.add(command.run)
                out.append(command)
        return out

    def one(self, state: BatchState) -> Command | None:
        rng = self.rng
        active = [r for r, run in state.runs.items() if run.is_active]
        if len(active) < 8 or rng.random() < 0.02:
            self.run_count += 1
            n = rng.randrange(1, 4)
            return StartRun(id=self._id(), batch=self.batch_id, run=f"r{self.run_count}",
                            gw=SYSTEM, link_type="api", reloadable=[True] * n, active=[True] * n)
        run_id = rng.choice(active)
        run = state.runs[run_id]
        base = {"id": self._id(), "batch": self.batch_id, "run": run_id, "gw": SYSTEM}
        pick = rng.random()
        if pick < 0.35:
            version = None
            if rng.random() < 0.3:
                current = state.version("batch_session")
                version = current if rng.random() < 0.7 else max(0, current - 1)
            return Patch(**base, scope="batch_session",
                         ops=random_ops(rng, state.session("batch_session")), version=version)
        if pick < 0.5:
            if not run.group:
                return JoinGroup(**base)
            scope = f"group_session:{run.group}"
            return Patch(**base, scope=scope, ops=random_ops(rng, state.session(scope)))
        if pick < 0.62:
            if not run.group:
                return JoinGroup(**base)
            group = state.groups[run.group]
            others = [m for m in group.active if m != run_id]
            to = rng.choice(others) if others and rng.random() < 0.3 else None
            return SendGroupMessage(**base, msg=random_json(rng), to=to)
        if pick < 0.66:
            which = rng.random()
            if which < 0.5:
                return LeaveGroup(**base)
            if which < 0.75:
                return ReassignGroup(**base)
            # Only commands that change something: the worker cannot plan a committed
            # command without events (fix_group on a fixed group, say).
            if which < 0.85 and run.group and state.groups[run.group].state == "started" \
                    and run.group not in self.touched:
                self.touched.add(run.group)
                return FixGroup(**base)
            if which < 0.95 and run.group and run.group not in self.touched:
                self.touched.add(run.group)
                return SetPresence(**base, open=run_id in state.groups[run.group].closed)
            return ChangeBatchSettings(**{**base, "run": "admin"},
                                       groups=self.limits(rng.randrange(2, 5)))
        if pick < 0.8:
            nxt = run.pos + 1
            if nxt < len(run.active) and (run.pos < 0 or run.components[run.pos] ==
                                          "data_retrieved"):
                return StartComponent(**base, pos=nxt)
            if run.pos >= 0 and run.components[run.pos] == "started":
                return RetrieveData(**base, pos=run.pos)
            return WriteStudySession(**base, data=random_json(rng))
        if pick < 0.93:
            return WriteStudySession(**base, data={"answers": random_json(rng), "page": run.pos})
        ending = rng.random()
        if ending < 0.5:
            return EndRun(**base, successful=rng.random() < 0.8)
        if ending < 0.8:
            return AbortRun(**base, message="changed my mind")
        return FailRun(**base, reason="test", message="failed on purpose")


async def drive(driver: Driver, session: RandomSession, events: int, *,
                samples: int = 20, step: tuple[int, int] = (1, 12)
                ) -> list[tuple[str, bytes]]:
    """Run commands until the batch has about ``events`` events; return ``samples``
    (position, encoded state) pairs taken uniformly at random between iterations."""
    rng = random.Random(session.rng.random())
    await driver.send([session.open()])
    state = await driver.state(session.batch_id)
    kept: list[tuple[str, bytes]] = []
    seen = 0
    while sum(state.versions.values()) < events:
        commands = session.commands(state, rng.randrange(*step))
        await driver.send(commands)
        state = await driver.state(session.batch_id)
        seen += 1
        # Reservoir sampling of the states the live worker held between iterations.
        sample = (state.pos, encode_state(state))
        if len(kept) < samples:
            kept.append(sample)
        elif (j := rng.randrange(seen)) < samples:
            kept[j] = sample
    return sorted(kept, key=lambda s: tuple(map(int, s[0].split("-"))))

