"""The domain: decide what a command does to a batch, or why it is refused.

``decide`` validates a command against the in-memory state by folding the
event it would produce; on success the state already holds the change and the
caller must make the event durable (or drop the state). On refusal nothing
changed. No I/O here.
"""

from __future__ import annotations

import secrets

import msgspec

from session_store.commands import (
    AbortRun,
    ChangeBatchSettings,
    CloseBatch,
    Command,
    EndRun,
    ExpireArrival,
    FailRun,
    FixGroup,
    JoinGroup,
    LeaveGroup,
    OpenBatch,
    Outcome,
    Patch,
    ReassignGroup,
    RetrieveData,
    SendGroupMessage,
    SetPresence,
    StartComponent,
    StartRun,
    WriteStudySession,
)
from session_store.decisions import Decision, Emitter, Rejected
from session_store.events import (
    BATCH_SCOPE,
    BATCH_SESSION,
    BatchClosed,
    BatchOpened,
    BatchSettingsChanged,
    ComponentStarted,
    DataRetrieved,
    Event,
    GroupFinished,
    MemberJoined,
    RunEnded,
    RunStarted,
    SessionPatched,
    StudySessionWritten,
    encode_event,
    group_scope,
    group_session_scope,
    run_scope,
    scope_group,
)
from session_store.groups import decide_group, leave
from session_store.jsonpatch import PatchError, apply_patch
from session_store.projector import BatchState, RunState, fold

# Scopes any participant of the batch may patch; group sessions only their members.
PARTICIPANT_WRITABLE = frozenset({BATCH_SESSION})

_json = msgspec.json.Encoder()


class Limits(msgspec.Struct, frozen=True):
    max_session_bytes: int = 1024 * 1024
    max_ops_per_patch: int = 1000


class SizeTracker:
    """Cheap upper bound of each session's encoded size.

    Measuring the encoded document on every patch would cost more than the patch,
    so the bound grows by each patch's encoded size and is only re-measured (on a
    copy) when it crosses the limit.
    """

    def __init__(self) -> None:
        self.bound: dict[str, int] = {}

    def check(self, doc: object, scope: str, ops: list, limit: int) -> None:
        grown = self.bound.get(scope, 0) + len(_json.encode(ops))
        if grown <= limit:
            self.bound[scope] = grown
            return
        trial = apply_patch(msgspec.json.decode(_json.encode(doc)), ops)
        size = len(_json.encode(trial))
        if size > limit:
            raise Rejected(
                "state_too_large",
                f"the {scope} would be {size} bytes, over the limit of {limit}",
            )
        self.bound[scope] = size


def decide(state: BatchState, command: Command, limits: Limits, sizes: SizeTracker) -> Decision:
    """What ``command`` does to ``state`` (folded in already), or ``Rejected``."""
    origin = {"cmd": command.id, "run": command.run, "gw": command.gw, "conn": command.conn}
    if isinstance(command, OpenBatch):
        if state.opened:
            raise Rejected("batch_exists", f"batch {state.batch_id} exists already")
        return Decision([_emit(state, BatchOpened(
            scope=BATCH_SCOPE, version=state.version(BATCH_SCOPE) + 1,
            label=command.label, groups=command.groups, **origin))])
    if not state.opened:
        if isinstance(command, CloseBatch):
            # Closing a batch nobody entered yet: the log records it opened and closed,
            # so a late first entry's open_batch is refused (batch_exists) rather than
            # opening a batch that Postgres calls closed.
            emit = Emitter(state, origin)
            emit(BatchOpened, BATCH_SCOPE)
            emit(BatchClosed, BATCH_SCOPE)
            return Decision(emit.events)
        raise Rejected("batch_not_found", f"batch {state.batch_id} does not exist")
    if state.closed:
        raise Rejected("batch_closed", f"batch {state.batch_id} is closed",
                       BATCH_SCOPE, state.version(BATCH_SCOPE))
    if isinstance(command, CloseBatch):
        return _close(state, command, origin)
    if isinstance(command, Patch):
        return Decision([_patch(state, command, limits, sizes, origin)])
    if isinstance(command, StartRun):
        return _start_run(state, command, origin)
    if isinstance(command, StartComponent | RetrieveData | WriteStudySession | EndRun
                  | AbortRun | FailRun):
        return _run_command(state, command, limits, origin)
    if isinstance(command, ChangeBatchSettings):
        return Decision([_emit(state, BatchSettingsChanged(
            scope=BATCH_SCOPE, version=_next(state, BATCH_SCOPE), groups=command.groups,
            **origin))])
    if isinstance(command, JoinGroup | LeaveGroup | ReassignGroup | FixGroup | SendGroupMessage
                  | SetPresence | ExpireArrival):
        run = state.runs.get(command.run)
        if run is None or not run.is_active:
            raise Rejected("run_not_found" if run is None else "run_ended",
                           f"run {command.run} is not active")
        return decide_group(state, run, command, origin)
    raise Rejected("bad_message", f"unknown command {type(command).__name__}")


def _emit(state: BatchState, event: Event) -> Event:
    fold(state, event, state.pos)
    return event


def _next(state: BatchState, scope: str) -> int:
    return state.version(scope) + 1


def _start_run(state: BatchState, command: StartRun, origin: dict) -> Decision:
    scope = run_scope(command.run)
    if command.run in state.runs:
        raise Rejected("run_exists", f"run {command.run} has started already", scope,
                       state.version(scope))
    if not command.active or len(command.reloadable) != len(command.active):
        raise Rejected("bad_message", "a run needs its components' reloadable and active flags")
    return Decision([_emit(state, RunStarted(
        scope=scope, version=_next(state, scope), study=command.study,
        study_version=command.study_version, worker=command.worker, label=command.label,
        link_type=command.link_type, preview=command.preview, linear=command.linear,
        reloadable=command.reloadable, active=command.active, **origin))])


def _run_command(state: BatchState, command: Command, limits: Limits, origin: dict) -> Decision:
    scope = run_scope(command.run)
    run = state.runs.get(command.run)
    current = state.version(scope)
    if run is None:
        raise Rejected("run_not_found", f"run {command.run} does not exist", scope, current)
    if not run.is_active:
        raise Rejected("run_ended", f"the run has ended ({run.state})", scope, current)
    version = current + 1
    if isinstance(command, StartComponent):
        return _start_component(state, run, command, scope, version, origin)
    if isinstance(command, RetrieveData):
        if command.pos != run.pos:
            raise Rejected("wrong_component", f"component {command.pos} is not the current one "
                           f"({run.pos})", scope, current)
        given = 0 if run.study_session_erased else run.study_session_version
        return Decision([_emit(state, DataRetrieved(
            scope=scope, version=version, pos=command.pos, study_session_version=given,
            **origin))])
    if isinstance(command, WriteStudySession):
        data = _json.encode(command.data)
        if len(data) > limits.max_session_bytes:
            raise Rejected("state_too_large", f"the study session would be {len(data)} bytes, "
                           f"over the limit of {limits.max_session_bytes}", scope, current)
        return Decision([_emit(state, StudySessionWritten(
            scope=scope, version=version, size=len(data), **origin))], study_session=data)
    # Ending a run takes it out of its group first (the group may finish).
    emit = Emitter(state, origin)
    leave(emit, command.run, "run_ended")
    if isinstance(command, EndRun):
        ended = RunEnded(scope=scope, version=version, state="finished",
                         successful=command.successful, message=command.message,
                         confirmation_code=secrets.token_hex(6).upper(), **origin)
    elif isinstance(command, AbortRun):
        ended = RunEnded(scope=scope, version=version, state="aborted", message=command.message,
                         **origin)
    else:
        assert isinstance(command, FailRun)
        ended = RunEnded(scope=scope, version=version, state="failed", reason=command.reason,
                         message=command.message, **origin)
    return Decision([*emit.events, _emit(state, ended)],
                    erase_study_session=isinstance(command, AbortRun))


def _close(state: BatchState, command: CloseBatch, origin: dict) -> Decision:
    """Close the batch; with ``force``, fail its active runs and finish its groups first,
    so that the closed batch's final state has nothing left open."""
    active = [run_id for run_id, run in state.runs.items() if run.is_active]
    if active and not command.force:
        raise Rejected("runs_active", f"{len(active)} run(s) are still active: wait for them "
                       "to end, or close with force to end them as failed",
                       BATCH_SCOPE, state.version(BATCH_SCOPE))
    emit = Emitter(state, origin)
    for run_id in active:
        leave(emit, run_id, "run_ended")
        emit(RunEnded, run_scope(run_id), state="failed", reason="batch_closed",
             message="the batch was closed")
    for group_id, group in state.groups.items():
        if group.state != "finished":
            emit(GroupFinished, group_scope(group_id))
    emit(BatchClosed, BATCH_SCOPE, runs_ended=len(active))
    return Decision(emit.events)


def _start_component(state: BatchState, run: RunState, command: StartComponent, scope: str,
                     version: int, origin: dict) -> Decision:
    pos = command.pos
    current = version - 1
    if not 0 <= pos < len(run.active):
        raise Rejected("component_not_found", f"there is no component at position {pos}",
                       scope, current)
    if not run.active[pos]:
        raise Rejected("component_inactive", f"component {pos} is inactive", scope, current)
    if pos == run.pos and not run.reloadable[pos] and run.state != "pre":
        # JATOS: reloading a component that may not be reloaded fails the run.
        emit = Emitter(state, origin)
        leave(emit, command.run, "run_ended")
        return Decision([*emit.events, _emit(state, RunEnded(
            scope=scope, version=version, state="failed", reason="reloaded",
            message=f"component {pos} was reloaded but is not reloadable", **origin))])
    if run.linear and pos < run.pos:
        raise Rejected("linear_study", f"this study only goes forward (at {run.pos}, asked {pos})",
                       scope, current)
    return Decision([_emit(state, ComponentStarted(scope=scope, version=version, pos=pos,
                                                   **origin))])


def _patch(
    state: BatchState, command: Patch, limits: Limits, sizes: SizeTracker, origin: dict
) -> Event:
    scope = command.scope
    current = state.version(scope)
    if scope not in PARTICIPANT_WRITABLE and not _own_group_session(state, command):
        raise Rejected("bad_scope", f"scope {scope!r} cannot be patched", scope, current)
    if not command.ops:
        raise Rejected("bad_patch", "a patch needs at least one op", scope, current)
    if len(command.ops) > limits.max_ops_per_patch:
        raise Rejected(
            "bad_patch",
            f"{len(command.ops)} ops, over the limit of {limits.max_ops_per_patch}",
            scope, current,
        )
    if command.version is not None and command.version != current:
        raise Rejected(
            "version_mismatch",
            f"{scope} is at version {current}, the patch expected {command.version}",
            scope, current,
        )
    event = SessionPatched(scope=scope, version=current + 1, ops=command.ops, **origin)
    try:
        sizes.check(state.session(scope), scope, command.ops, limits.max_session_bytes)
        fold(state, event, state.pos)
    except PatchError as exc:
        raise Rejected(exc.code, exc.message, scope, current) from None
    except Rejected as rejection:
        rejection.scope, rejection.version = scope, current
        raise
    return event


def _own_group_session(state: BatchState, command: Patch) -> bool:
    """A member may patch the session of the group it is in now."""
    run = state.runs.get(command.run)
    return (run is not None and bool(run.group)
            and command.scope == group_session_scope(run.group))


def committed_outcome(command: Command, events: list[Event]) -> bytes:
    """The outcome template remembered for a committed command (%POS% filled in by Redis).

    A command may commit without events (fixing a group that is fixed already):
    it is answered ok, at no version."""
    if not events:
        return _json.encode(Outcome(cmd=command.id, ok=True, conn=command.conn))
    last = events[-1]
    ended = last if isinstance(last, RunEnded) else None
    return _json.encode(Outcome(
        cmd=command.id, ok=True, scope=last.scope, version=last.version,
        pos="%POS%", conn=command.conn, run_state=ended.state if ended else "",
        code=ended.reason if ended else "",
        confirmation_code=ended.confirmation_code if ended else "",
        study_session_version=last.study_session_version
        if isinstance(last, DataRetrieved) else 0,
        group=next((scope_group(e.scope) for e in events if isinstance(e, MemberJoined)), ""),
    ))


__all__ = [
    "Decision", "Limits", "Rejected", "SizeTracker", "committed_outcome", "decide", "encode_event",
]
