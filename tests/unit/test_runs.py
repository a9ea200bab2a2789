"""Run decisions: component flow, reloads, linear studies, study session, ending."""

from __future__ import annotations

import pytest

from session_store.commands import (
    AbortRun,
    EndRun,
    FailRun,
    RetrieveData,
    StartComponent,
    StartRun,
    WriteStudySession,
)
from session_store.domain import Limits, Rejected, SizeTracker, committed_outcome, decide
from session_store.events import BatchOpened, run_scope
from session_store.projector import BatchState, decode_state, encode_state, fold

LIMITS = Limits(max_session_bytes=200)


def batch() -> BatchState:
    return fold(BatchState(batch_id="b"), BatchOpened(scope="batch", version=1), "1-0")


def do(state: BatchState, command):
    return decide(state, command, LIMITS, SizeTracker())


def started(state: BatchState, run: str = "r", **plan) -> BatchState:
    defaults = {"reloadable": [False, True, False], "active": [True, True, True]}
    do(state, StartRun(id="start", batch="b", run=run, gw="g", **{**defaults, **plan}))
    return state


def start(state: BatchState, pos: int, run: str = "r"):
    return do(state, StartComponent(id=f"s{pos}", batch="b", run=run, gw="g", pos=pos))


def test_component_flow_and_states():
    state = started(batch())
    run = state.runs["r"]
    assert run.state == "started" and run.pos == -1 and run.components == ["", "", ""]
    start(state, 0)
    do(state, RetrieveData(id="i0", batch="b", run="r", gw="g", pos=0))
    assert run.state == "data_retrieved" and run.components[0] == "data_retrieved"
    start(state, 1)
    assert run.components[:2] == ["finished", "started"] and run.state == "started"
    start(state, 1)  # reloadable
    assert run.components[1] == "started"
    decision = do(state, EndRun(id="end", batch="b", run="r", gw="g", message="bye"))
    assert run.state == "finished" and run.successful and run.components[1] == "finished"
    assert len(run.confirmation_code) == 12
    assert b'"run_state":"finished"' in committed_outcome(
        EndRun(id="end", batch="b", run="r", gw="g"), decision.events)
    with pytest.raises(Rejected) as caught:
        start(state, 2)
    assert caught.value.code == "run_ended"
    assert state.version(run_scope("r")) == 6


def test_reloading_a_non_reloadable_component_fails_the_run():
    state = started(batch())
    start(state, 0)
    decision = start(state, 0)
    run = state.runs["r"]
    assert run.state == "failed" and run.reason == "reloaded"
    assert run.components[0] == "failed"
    assert b'"code":"reloaded"' in committed_outcome(
        StartComponent(id="x", batch="b", run="r", gw="g", pos=0), decision.events)


def test_preview_may_reload_its_first_component_and_becomes_started():
    state = started(batch(), preview=True)
    start(state, 0)
    start(state, 0)
    assert state.runs["r"].state == "pre"
    start(state, 1)
    assert state.runs["r"].state == "started"


def test_linear_inactive_and_missing_components():
    state = started(batch(), linear=True, active=[True, False, True])
    start(state, 2)
    for pos, code in ((0, "linear_study"), (1, "component_inactive"), (7, "component_not_found")):
        with pytest.raises(Rejected) as caught:
            start(state, pos)
        assert caught.value.code == code
    with pytest.raises(Rejected) as caught:
        do(state, RetrieveData(id="i", batch="b", run="r", gw="g", pos=0))
    assert caught.value.code == "wrong_component"


def test_study_session_writes_and_abort_erases():
    state = started(batch())
    start(state, 0)
    decision = do(state, WriteStudySession(id="w", batch="b", run="r", gw="g",
                                           data={"name": "Ada"}))
    assert decision.study_session == b'{"name":"Ada"}'
    run = state.runs["r"]
    assert run.study_session_version == state.version(run_scope("r"))
    retrieved = do(state, RetrieveData(id="i", batch="b", run="r", gw="g", pos=0))
    assert retrieved.events[0].study_session_version == run.study_session_version
    with pytest.raises(Rejected) as caught:
        do(state, WriteStudySession(id="big", batch="b", run="r", gw="g", data="x" * 300))
    assert caught.value.code == "state_too_large"
    aborted = do(state, AbortRun(id="abort", batch="b", run="r", gw="g", message="no"))
    assert aborted.erase_study_session and run.state == "aborted" and run.study_session_erased


def test_failures_unknown_runs_and_replay_equivalence():
    state = started(batch())
    with pytest.raises(Rejected) as caught:
        start(state, 0, run="ghost")
    assert caught.value.code == "run_not_found"
    with pytest.raises(Rejected) as caught:
        started(state)
    assert caught.value.code == "run_exists"
    events = []
    for command in (StartComponent(id="a", batch="b", run="r", gw="g", pos=0),
                    FailRun(id="timeout", batch="b", run="r", gw="g", reason="timeout")):
        events += do(state, command).events
    assert state.runs["r"].state == "failed" and state.runs["r"].reason == "timeout"
    # Folding the same events from scratch gives the same state.
    replayed = started(batch())
    for n, event in enumerate(events):
        fold(replayed, event, f"{n + 2}-0")
    replayed.pos = state.pos
    assert encode_state(decode_state(encode_state(replayed))) == encode_state(state)
