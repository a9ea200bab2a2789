"""Group decisions: exact limits, leaving for good, reassigning, fixing, finishing,
messages and presence."""

from __future__ import annotations

import pytest

from session_store.commands import (
    EndRun,
    ExpireArrival,
    FixGroup,
    JoinGroup,
    LeaveGroup,
    Patch,
    ReassignGroup,
    SendGroupMessage,
    SetPresence,
    StartRun,
)
from session_store.domain import Limits, Rejected, SizeTracker, committed_outcome, decide
from session_store.events import BatchOpened, GroupLimits, GroupMessage
from session_store.projector import BatchState, fold


def batch(max_active: int | None = None, max_total: int | None = None) -> BatchState:
    state = BatchState(batch_id="b")
    return fold(state, BatchOpened(scope="batch", version=1, groups=GroupLimits(
        max_active_members=max_active, max_total_members=max_total)), "1-0")


def do(state: BatchState, command):
    return decide(state, command, Limits(), SizeTracker())


def run(state: BatchState, run_id: str) -> str:
    do(state, StartRun(id="start", batch="b", run=run_id, gw="g", reloadable=[True],
                       active=[True]))
    return run_id


def join(state: BatchState, run_id: str) -> str:
    decision = do(state, JoinGroup(id=f"join-{run_id}", batch="b", run=run_id, gw="g"))
    outcome = committed_outcome(JoinGroup(id="j", batch="b", run=run_id, gw="g"),
                                decision.events)
    assert f'"group":"{state.runs[run_id].group}"'.encode() in outcome
    return state.runs[run_id].group


def test_joins_fill_the_fullest_open_group_within_max_active():
    state = batch(max_active=2)
    groups = [join(state, run(state, f"r{i}")) for i in range(7)]
    assert groups == ["1", "1", "2", "2", "3", "3", "4"]
    assert all(len(g.active) <= 2 for g in state.groups.values())


def test_max_total_counts_members_who_left_and_nobody_rejoins():
    state = batch(max_total=2)
    a, b, c = (run(state, r) for r in "abc")
    assert join(state, a) == join(state, b) == "1"
    do(state, LeaveGroup(id="l", batch="b", run=b, gw="g"))
    assert state.groups["1"].history == [b]
    assert join(state, c) == "2", "group 1 has had its 2 members"
    assert join(state, b) == "2", "b may not rejoin group 1 (and 2 has room)"
    with pytest.raises(Rejected) as caught:
        do(state, JoinGroup(id="again", batch="b", run=b, gw="g"))
    assert caught.value.code == "already_in_group"


def test_reassign_fix_and_finish():
    state = batch(max_active=3)
    a, b, c = (run(state, r) for r in "abc")
    join(state, a)
    join(state, b)
    with pytest.raises(Rejected) as caught:
        do(state, ReassignGroup(id="re", batch="b", run=a, gw="g"))
    assert caught.value.code == "no_group"
    do(state, FixGroup(id="fix", batch="b", run=a, gw="g"))
    assert state.groups["1"].state == "fixed"
    assert join(state, c) == "2", "a fixed group takes nobody new"
    do(state, ReassignGroup(id="re2", batch="b", run=a, gw="g"))
    assert state.runs[a].group == "2" and state.groups["2"].active == [c, a]
    assert state.groups["1"].active == [b] and state.groups["1"].history == [a]
    # The last member ends its run: a fixed group with nobody left is finished.
    do(state, EndRun(id="end", batch="b", run=b, gw="g"))
    assert state.groups["1"].state == "finished" and state.runs[b].group == ""


def test_group_messages_and_sessions_are_for_members_only():
    state = batch(max_active=2)
    a, b, c = (run(state, r) for r in "abc")
    join(state, a)
    join(state, b)
    [msg] = do(state, SendGroupMessage(id="m1", batch="b", run=a, gw="g", msg={"hi": 1},
                                       to=b)).events
    assert isinstance(msg, GroupMessage) and msg.scope == "group_chat:1" and msg.to == b
    before = dict(state.versions)
    with pytest.raises(Rejected) as caught:
        do(state, SendGroupMessage(id="m2", batch="b", run=a, gw="g", msg="x", to=c))
    assert caught.value.code == "member_not_found"
    with pytest.raises(Rejected) as caught:
        do(state, SendGroupMessage(id="m3", batch="b", run=c, gw="g", msg="x"))
    assert caught.value.code == "not_in_group"
    do(state, Patch(id="p", batch="b", run=a, gw="g", scope="group_session:1",
                    ops=[{"op": "add", "path": "/x", "value": 1}]))
    assert state.session("group_session:1") == {"x": 1}
    with pytest.raises(Rejected) as caught:
        do(state, Patch(id="p2", batch="b", run=c, gw="g", scope="group_session:1",
                        ops=[{"op": "add", "path": "/y", "value": 1}]))
    assert caught.value.code == "bad_scope"
    # Chat never moves the group session's version, nor membership's.
    assert state.versions["group_session:1"] == 1
    assert state.versions["group:1"] == before["group:1"]


def test_presence_changes_only_when_it_changes():
    state = batch()
    a = run(state, "a")
    join(state, a)
    assert do(state, SetPresence(id="p1", batch="b", run=a, gw="g", open=True)).events == []
    assert len(do(state, SetPresence(id="p2", batch="b", run=a, gw="g", open=False)).events) == 1
    assert state.groups["1"].closed == [a]
    assert do(state, SetPresence(id="p3", batch="b", run=a, gw="g", open=False)).events == []
    do(state, SetPresence(id="p4", batch="b", run=a, gw="g", open=True))
    assert state.groups["1"].closed == []


def test_group_by_arrival_forms_groups_of_n_and_times_out():
    state = BatchState(batch_id="b")
    fold(state, BatchOpened(scope="batch", version=1, groups=GroupLimits(
        form_by_arrival=3, arrival_timeout_s=60)), "1-0")
    a, b, c, d = (run(state, r) for r in "abcd")
    for r in (a, b):
        do(state, JoinGroup(id=f"j{r}", batch="b", run=r, gw="g"))
    assert set(state.lobby) == {a, b} and not state.groups
    with pytest.raises(Rejected) as caught:
        do(state, JoinGroup(id="again", batch="b", run=a, gw="g"))
    assert caught.value.code == "already_waiting"
    do(state, JoinGroup(id="jc", batch="b", run=c, gw="g"))
    assert state.groups["1"].active == [a, b, c] and state.lobby == {}
    do(state, JoinGroup(id="jd", batch="b", run=d, gw="g"))
    assert list(state.lobby) == [d]
    [ended] = do(state, ExpireArrival(id="x", batch="b", run=d, gw="g")).events
    assert ended.reason == "timeout" and state.lobby == {} and state.runs[d].group == ""
