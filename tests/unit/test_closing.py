"""Closing a batch: refused while runs are active, forced closes end them, and a closed
batch refuses everything after."""

from __future__ import annotations

import pytest

from session_store.commands import (
    CloseBatch,
    JoinGroup,
    OpenBatch,
    Patch,
    StartComponent,
    StartRun,
)
from session_store.domain import Limits, Rejected, SizeTracker, decide
from session_store.events import (
    BatchClosed,
    BatchOpened,
    GroupLimits,
    RunEnded,
    encode_event,
)
from session_store.projector import BatchState, encode_state, fold

LIMITS = Limits()


def do(state: BatchState, command):
    decision = decide(state, command, LIMITS, SizeTracker())
    state.pos = f"{len(state.versions)}-{sum(state.versions.values())}"
    return decision


def batch_with_runs(*runs: str) -> BatchState:
    state = BatchState(batch_id="b")
    do(state, OpenBatch(id="open", batch="b", run="admin", gw="g",
                        groups=GroupLimits(max_active_members=3)))
    for run in runs:
        do(state, StartRun(id="start", batch="b", run=run, gw="g", reloadable=[True],
                           active=[True]))
        do(state, StartComponent(id="c0", batch="b", run=run, gw="g", pos=0))
    return state


def close(force: bool = False) -> CloseBatch:
    return CloseBatch(id="close", batch="b", run="admin", gw="g", force=force)


def test_closing_is_refused_while_runs_are_active_and_changes_nothing():
    state = batch_with_runs("r1", "r2")
    before = encode_state(state)
    with pytest.raises(Rejected) as caught:
        do(state, close())
    assert caught.value.code == "runs_active" and "2 run(s)" in caught.value.message
    assert caught.value.scope == "batch" and caught.value.version == 1
    assert encode_state(state) == before


def test_a_batch_without_active_runs_closes_with_one_event():
    state = batch_with_runs()
    decision = do(state, close())
    assert [type(e) for e in decision.events] == [BatchClosed]
    assert decision.events[0].version == 2 and decision.events[0].runs_ended == 0
    assert state.closed


def test_force_fails_active_runs_finishes_groups_then_closes():
    state = batch_with_runs("r1", "r2", "r3")
    do(state, JoinGroup(id="j", batch="b", run="r1", gw="g"))
    do(state, JoinGroup(id="j", batch="b", run="r2", gw="g"))
    decision = do(state, close(force=True))
    kinds = [type(e).__name__ for e in decision.events]
    assert kinds[-1] == "BatchClosed" and decision.events[-1].runs_ended == 3
    ended = [e for e in decision.events if isinstance(e, RunEnded)]
    assert {e.scope for e in ended} == {"run:r1", "run:r2", "run:r3"}
    assert all(e.state == "failed" and e.reason == "batch_closed" for e in ended)
    assert all(not run.is_active for run in state.runs.values())
    assert all(g.state == "finished" and not g.active for g in state.groups.values())
    # The events replay to the same state (one fold for live and replay).
    replayed = batch_with_runs("r1", "r2", "r3")
    do(replayed, JoinGroup(id="j", batch="b", run="r1", gw="g"))
    do(replayed, JoinGroup(id="j", batch="b", run="r2", gw="g"))
    for event in decision.events:
        fold(replayed, event, state.pos)
    assert encode_state(replayed) == encode_state(state)
    assert b'"kind":"batch_closed"' in encode_event(decision.events[-1])


def test_closing_a_batch_the_log_never_saw_opens_and_closes_it():
    state = BatchState(batch_id="b")
    decision = do(state, close())
    assert [type(e) for e in decision.events] == [BatchOpened, BatchClosed]
    assert state.opened and state.closed
    with pytest.raises(Rejected) as caught:
        do(state, OpenBatch(id="late", batch="b", run="admin", gw="g"))
    assert caught.value.code == "batch_exists"


@pytest.mark.parametrize("command", [
    close(), close(force=True),
    Patch(id="p", batch="b", run="r9", gw="g", scope="batch_session",
          ops=[{"op": "add", "path": "/x", "value": 1}]),
    StartRun(id="s", batch="b", run="r9", gw="g", reloadable=[True], active=[True]),
    OpenBatch(id="o", batch="b", run="admin", gw="g"),
])
def test_a_closed_batch_refuses_every_command(command):
    state = batch_with_runs()
    do(state, close())
    before = encode_state(state)
    with pytest.raises(Rejected) as caught:
        do(state, command)
    expected = "batch_exists" if isinstance(command, OpenBatch) else "batch_closed"
    assert caught.value.code == expected
    assert encode_state(state) == before
