"""The projector: one fold from events to state, used by the live worker, the
gateways' projections, snapshots and replay alike.

``fold`` mutates the state it is given (patches apply in place: a deep copy per
event would cost 20x on a 10 KB session) and returns it. Callers that need an
older state keep a snapshot, never a reference.
"""

from __future__ import annotations

from typing import Any

import msgspec

from session_store.events import (
    BATCH_SCOPE,
    ArrivalEnded,
    ArrivalQueued,
    BatchClosed,
    BatchOpened,
    BatchSettingsChanged,
    ComponentStarted,
    DataRetrieved,
    Event,
    GroupCreated,
    GroupFinished,
    GroupFixed,
    GroupLimits,
    GroupMessage,
    MemberJoined,
    MemberLeft,
    MemberPresence,
    RunEnded,
    RunStarted,
    SessionPatched,
    StudySessionWritten,
    scope_group,
)
from session_store.jsonpatch import apply_patch


class ProjectionError(Exception):
    """An event does not follow from the state: the log or the caller is inconsistent."""


ACTIVE_RUN_STATES = frozenset({"pre", "started", "data_retrieved"})


class RunState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A participant's run as the log tells it (JATOS study result + component results)."""

    state: str                      # pre | started | data_retrieved | finished | aborted | failed
    study: str = ""
    study_version: int = 0
    worker: str = ""
    label: str = ""
    link_type: str = ""
    linear: bool = False
    reloadable: list[bool] = msgspec.field(default_factory=list)
    active: list[bool] = msgspec.field(default_factory=list)
    pos: int = -1                   # current component position
    # Per component position: "" (never started), started, data_retrieved,
    # finished, reloaded, aborted, failed.
    components: list[str] = msgspec.field(default_factory=list)
    # Run-scope version of the last study session write (0: never written).
    study_session_version: int = 0
    study_session_erased: bool = False
    successful: bool = False
    message: str = ""
    reason: str = ""
    confirmation_code: str = ""
    group: str = ""                 # the group it is a member of now
    left_groups: list[str] = msgspec.field(default_factory=list)  # may not rejoin these

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_RUN_STATES


class GroupState(msgspec.Struct, kw_only=True, omit_defaults=True):
    state: str = "started"          # started | fixed | finished (JATOS group result states)
    active: list[str] = msgspec.field(default_factory=list)   # member run ids, join order
    history: list[str] = msgspec.field(default_factory=list)  # members that left
    closed: list[str] = msgspec.field(default_factory=list)   # active members shown closed
    messages: int = 0               # count only; the messages are in the log

    @property
    def total(self) -> int:
        return len(self.active) + len(self.history)


class BatchState(msgspec.Struct, kw_only=True):
    batch_id: str
    label: str = ""
    opened: bool = False
    closed: bool = False
    # scope -> last version; scopes never seen are at 0.
    versions: dict[str, int] = msgspec.field(default_factory=dict)
    # session scope -> document (batch_session, later group_session:G).
    sessions: dict[str, Any] = msgspec.field(default_factory=dict)
    runs: dict[str, RunState] = msgspec.field(default_factory=dict)
    groups: dict[str, GroupState] = msgspec.field(default_factory=dict)
    group_limits: GroupLimits = msgspec.field(default_factory=GroupLimits)
    # Group-by-arrival: run id -> when it started waiting (ms, from its event).
    lobby: dict[str, int] = msgspec.field(default_factory=dict)
    # Stream entry ID of the last event folded in.
    pos: str = "0-0"

    def version(self, scope: str) -> int:
        return self.versions.get(scope, 0)

    def session(self, scope: str) -> Any:
        return self.sessions.get(scope, {})


def fold(state: BatchState, event: Event, pos: str) -> BatchState:
    """Apply one event at stream position ``pos`` to ``state``.

    Raises ``ProjectionError`` on a version that does not follow, and
    ``jsonpatch.PatchError`` (leaving the state unchanged) on a patch that does
    not apply, which is how the worker validates a patch command.
    """
    expected = state.versions.get(event.scope, 0) + 1
    if event.version != expected:
        raise ProjectionError(
            f"batch {state.batch_id}: {event.scope} version {event.version} after "
            f"{expected - 1}"
        )
    if isinstance(event, SessionPatched):
        doc = state.sessions.get(event.scope, {})
        state.sessions[event.scope] = apply_patch(doc, event.ops)
    elif isinstance(event, BatchOpened):
        if event.scope != BATCH_SCOPE:
            raise ProjectionError(f"batch_opened in scope {event.scope}")
        state.opened = True
        state.label = event.label
        state.group_limits = event.groups
    elif isinstance(event, BatchSettingsChanged):
        state.group_limits = event.groups
    elif isinstance(event, BatchClosed):
        state.closed = True
    elif isinstance(event, RunStarted):
        run_id = event.scope.removeprefix("run:")
        state.runs[run_id] = RunState(
            state="pre" if event.preview else "started", study=event.study,
            study_version=event.study_version, worker=event.worker, label=event.label,
            link_type=event.link_type, linear=event.linear, reloadable=list(event.reloadable),
            active=list(event.active), components=[""] * len(event.active),
        )
    elif isinstance(event, ArrivalQueued):
        state.lobby[event.member] = event.at_ms
    elif isinstance(event, ArrivalEnded):
        state.lobby.pop(event.member, None)
    elif isinstance(event, GroupCreated | MemberJoined | MemberLeft | MemberPresence
                    | GroupFixed | GroupFinished | GroupMessage):
        _fold_group(state, event)
    else:
        _fold_run(state, event)
    state.versions[event.scope] = event.version
    state.pos = pos
    return state


def _fold_run(state: BatchState, event: Event) -> None:
    run = state.runs.get(event.scope.removeprefix("run:"))
    if run is None:
        raise ProjectionError(f"{event.scope}: {type(event).__name__} before run_started")
    if isinstance(event, ComponentStarted):
        if run.pos >= 0 and run.components[run.pos] in ("started", "data_retrieved"):
            # Leaving a component finishes it; coming back to the same one reloads it.
            run.components[run.pos] = "reloaded" if run.pos == event.pos else "finished"
        run.pos = event.pos
        run.components[event.pos] = "started"
        if run.state == "pre" and event.pos > 0:
            run.state = "started"  # a preview becomes a real run after its first component
        elif run.state == "data_retrieved":
            run.state = "started"
    elif isinstance(event, DataRetrieved):
        run.components[event.pos] = "data_retrieved"
        if run.state == "started":
            run.state = "data_retrieved"
    elif isinstance(event, StudySessionWritten):
        run.study_session_version = event.version
    elif isinstance(event, RunEnded):
        run.state = event.state
        run.successful = event.successful
        run.message = event.message
        run.reason = event.reason
        run.confirmation_code = event.confirmation_code
        if run.pos >= 0 and run.components[run.pos] in ("started", "data_retrieved"):
            run.components[run.pos] = {"finished": "finished", "aborted": "aborted"}.get(
                event.state, "failed")
        if event.state == "aborted":
            run.study_session_erased = True


def _fold_group(state: BatchState, event: Event) -> None:
    group_id = scope_group(event.scope)
    if isinstance(event, GroupCreated):
        state.groups[group_id] = GroupState()
        return
    group = state.groups.get(group_id)
    if group is None:
        raise ProjectionError(f"{event.scope}: {type(event).__name__} before group_created")
    if isinstance(event, MemberJoined):
        group.active.append(event.member)
        state.runs[event.member].group = group_id
        state.lobby.pop(event.member, None)
    elif isinstance(event, MemberLeft):
        group.active.remove(event.member)
        group.history.append(event.member)
        if event.member in group.closed:
            group.closed.remove(event.member)
        run = state.runs[event.member]
        run.group = ""
        run.left_groups.append(group_id)
    elif isinstance(event, MemberPresence):
        if event.open and event.member in group.closed:
            group.closed.remove(event.member)
        elif not event.open and event.member not in group.closed:
            group.closed.append(event.member)
    elif isinstance(event, GroupFixed):
        group.state = "fixed"
    elif isinstance(event, GroupFinished):
        group.state = "finished"
    elif isinstance(event, GroupMessage):
        group.messages += 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BatchState)


def encode_state(state: BatchState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> BatchState:
    return _decoder.decode(data)
