"""Group decisions (JATOS groups): joining with exact limits, leaving, reassigning,
fixing, finishing, the group channel's messages and members' presence.

The batch's single writer makes the limits exact: every join is decided against
the state that already holds every earlier join.
"""

from __future__ import annotations

import time
from typing import Any

from session_store.commands import (
    ExpireArrival,
    FixGroup,
    JoinGroup,
    LeaveGroup,
    ReassignGroup,
    SendGroupMessage,
    SetPresence,
)
from session_store.decisions import Decision, Emitter, Rejected
from session_store.events import (
    LOBBY,
    ArrivalEnded,
    ArrivalQueued,
    GroupCreated,
    GroupFinished,
    GroupFixed,
    GroupMessage,
    MemberJoined,
    MemberLeft,
    MemberPresence,
    group_chat_scope,
    group_scope,
)
from session_store.projector import BatchState, GroupState, RunState

GroupCommand = (
    JoinGroup | LeaveGroup | ReassignGroup | FixGroup | SendGroupMessage | SetPresence
    | ExpireArrival
)


def _has_room(state: BatchState, group: GroupState) -> bool:
    limits = state.group_limits
    if group.state != "started":
        return False
    if limits.max_active_members is not None and len(group.active) >= limits.max_active_members:
        return False
    return limits.max_total_members is None or group.total < limits.max_total_members


def find_open_group(state: BatchState, run: RunState, exclude: str = "") -> str | None:
    """The fullest group this run may join (ties: the oldest), or None."""
    best: tuple[int, int] | None = None
    best_id = None
    for order, (group_id, group) in enumerate(state.groups.items()):
        if group_id == exclude or group_id in run.left_groups or not _has_room(state, group):
            continue
        rank = (len(group.active), -order)
        if best is None or rank > best:
            best, best_id = rank, group_id
    return best_id


def leave(emit: Emitter, run_id: str, reason: str) -> None:
    """The run leaves its group (or the lobby); the group finishes if nobody is left
    and none may come."""
    state = emit.state
    if run_id in state.lobby:
        emit(ArrivalEnded, LOBBY, member=run_id, reason=reason)
    group_id = state.runs[run_id].group
    if not group_id:
        return
    emit(MemberLeft, group_scope(group_id), member=run_id, reason=reason)
    group = state.groups[group_id]
    limits = state.group_limits
    no_room = group.state == "fixed" or (
        limits.max_total_members is not None and group.total >= limits.max_total_members)
    if not group.active and no_room:
        emit(GroupFinished, group_scope(group_id))


def _join(emit: Emitter, run_id: str, group_id: str | None) -> str:
    state = emit.state
    if group_id is None:
        group_id = str(len(state.groups) + 1)
        emit(GroupCreated, group_scope(group_id))
    emit(MemberJoined, group_scope(group_id), member=run_id)
    return group_id


def _arrive(emit: Emitter, run_id: str, size: int) -> None:
    """Group-by-arrival: wait in the lobby; once ``size`` wait, they form a new group."""
    state = emit.state
    if run_id in state.lobby:
        raise Rejected("already_waiting", "the run is waiting for a group already")
    emit(ArrivalQueued, LOBBY, member=run_id, at_ms=int(time.time() * 1000))
    if len(state.lobby) >= size:
        members = sorted(state.lobby, key=lambda r: state.lobby[r])[:size]
        group_id = _join(emit, members[0], None)
        for member in members[1:]:
            _join(emit, member, group_id)


def decide_group(state: BatchState, run: RunState, command: GroupCommand,
                 origin: dict[str, Any]) -> Decision:
    emit = Emitter(state, origin)
    run_id = command.run
    scope = group_scope(run.group) if run.group else ""
    current = state.version(scope) if scope else 0
    if isinstance(command, JoinGroup):
        if run.group:
            raise Rejected("already_in_group", f"the run is in group {run.group} already",
                           scope, current)
        size = state.group_limits.form_by_arrival
        if size:
            _arrive(emit, run_id, size)
        else:
            _join(emit, run_id, find_open_group(state, run))
        return Decision(emit.events)
    if isinstance(command, ExpireArrival):
        if run_id in state.lobby:
            emit(ArrivalEnded, LOBBY, member=run_id, reason="timeout")
        return Decision(emit.events)
    if isinstance(command, SetPresence):
        if run.group and (run_id in state.groups[run.group].closed) == command.open:
            emit(MemberPresence, scope, member=run_id, open=command.open)
        return Decision(emit.events)
    if not run.group:
        if isinstance(command, LeaveGroup) and run_id in state.lobby:
            leave(emit, run_id, "left")
            return Decision(emit.events)
        raise Rejected("not_in_group", "the run is not a member of a group")
    group = state.groups[run.group]
    if isinstance(command, LeaveGroup):
        leave(emit, run_id, "left")
    elif isinstance(command, ReassignGroup):
        target = find_open_group(state, run, exclude=run.group)
        if target is None:
            raise Rejected("no_group", "there is no other open group to move to", scope, current)
        leave(emit, run_id, "reassigned")
        _join(emit, run_id, target)
    elif isinstance(command, FixGroup):
        if group.state == "started":
            emit(GroupFixed, scope)
    elif isinstance(command, SendGroupMessage):
        if command.to is not None and command.to not in group.active:
            raise Rejected("member_not_found",
                           f"{command.to} is not an active member of this group", scope, current)
        emit(GroupMessage, group_chat_scope(run.group), sender=run_id, to=command.to,
             msg=command.msg)
    return Decision(emit.events)
