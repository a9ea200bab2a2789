"""Event types: what the log records. One tagged union, one encoder and decoder.

An event belongs to one scope of its batch and carries that scope's new version.
Its position and time are its stream entry ID, which is not part of the event.
"""

from __future__ import annotations

from typing import Any

import msgspec

SCHEMA_VERSION = 1

BATCH_SCOPE = "batch"
BATCH_SESSION = "batch_session"


class EventBase(msgspec.Struct, kw_only=True, tag_field="kind", omit_defaults=True):
    scope: str
    version: int
    # Stays 1 forever: fields at their default are not stored, so a missing schema
    # must mean 1. Events of a newer schema set it explicitly (session_store/upgrade.py).
    schema: int = 1
    # The command that caused the event (absent for system events), so that the
    # gateway holding the sender's connection can turn it into the ack.
    cmd: str | None = None
    run: str | None = None
    gw: str | None = None
    conn: str | None = None


class GroupLimits(msgspec.Struct, omit_defaults=True):
    """JATOS batch group settings: None means no limit."""

    max_active_members: int | None = None
    max_total_members: int | None = None
    # oTree group-by-arrival: joiners wait in the lobby until this many are there.
    form_by_arrival: int | None = None
    arrival_timeout_s: float = 300.0


class BatchOpened(EventBase, tag="batch_opened"):
    label: str = ""
    groups: GroupLimits = msgspec.field(default_factory=GroupLimits)


class BatchSettingsChanged(EventBase, tag="batch_settings_changed"):
    groups: GroupLimits


class BatchClosed(EventBase, tag="batch_closed"):
    """The batch is over: the log takes no more commands, the finalizer archives all
    of it and then removes it from Redis (docs/archive.md). Runs still active when it
    was closed (with force) ended just before, as failed with reason batch_closed."""

    runs_ended: int = 0


class SessionPatched(EventBase, tag="session_patched", kw_only=True):
    """RFC 6902 ops applied to a session document (batch or group session)."""

    ops: list[Any]


def run_scope(run_id: str) -> str:
    return f"run:{run_id}"


class RunStarted(EventBase, tag="run_started"):
    """A participant entered (the run exists in Postgres already); pins the study plan."""

    study: str = ""
    study_version: int = 0
    worker: str = ""
    label: str = ""
    link_type: str = ""
    preview: bool = False
    linear: bool = False
    # Per component position: may it be reloaded, is it active.
    reloadable: list[bool] = msgspec.field(default_factory=list)
    active: list[bool] = msgspec.field(default_factory=list)


class ComponentStarted(EventBase, tag="component_started", kw_only=True):
    pos: int


class DataRetrieved(EventBase, tag="data_retrieved", kw_only=True):
    """The component page fetched its init data (JATOS state DATA_RETRIEVED)."""

    pos: int
    # Which study session write the page was given (run-scope version; 0: none).
    study_session_version: int = 0


class StudySessionWritten(EventBase, tag="study_session_written", kw_only=True):
    """The study session was replaced. Its contents live beside the stream (see
    keys.study_session), so that erasing a run leaves this event as a marker."""

    size: int


class RunEnded(EventBase, tag="run_ended", kw_only=True):
    state: str                    # finished | aborted | failed
    successful: bool = False
    message: str = ""
    reason: str = ""              # why a run failed: reloaded, timeout, ...
    confirmation_code: str = ""


def group_scope(group_id: str) -> str:
    return f"group:{group_id}"


def group_session_scope(group_id: str) -> str:
    return f"group_session:{group_id}"


def group_chat_scope(group_id: str) -> str:
    return f"group_chat:{group_id}"


def scope_group(scope: str) -> str:
    """The group id of a group, group_session or group_chat scope."""
    return scope.partition(":")[2]


class GroupCreated(EventBase, tag="group_created"):
    pass


class MemberJoined(EventBase, tag="member_joined", kw_only=True):
    member: str


class MemberLeft(EventBase, tag="member_left", kw_only=True):
    member: str
    reason: str = "left"          # left | reassigned | run_ended | idle


class MemberPresence(EventBase, tag="member_presence", kw_only=True):
    """A member's channel was gone for the grace period (open=False) or is back."""

    member: str
    open: bool


LOBBY = "lobby"


class ArrivalQueued(EventBase, tag="arrival_queued", kw_only=True):
    """Group-by-arrival: the member waits for enough others (scope ``lobby``)."""

    member: str
    at_ms: int


class ArrivalEnded(EventBase, tag="arrival_ended", kw_only=True):
    """The member stopped waiting without a group: timeout, left, or its run ended."""

    member: str
    reason: str


class GroupFixed(EventBase, tag="group_fixed"):
    pass


class GroupFinished(EventBase, tag="group_finished"):
    pass


class GroupMessage(EventBase, tag="group_message", kw_only=True):
    sender: str
    to: str | None = None         # one addressee, or every other member
    msg: Any


Event = (
    BatchOpened | BatchSettingsChanged | SessionPatched | RunStarted | ComponentStarted
    | DataRetrieved | StudySessionWritten | RunEnded | GroupCreated | MemberJoined | MemberLeft
    | MemberPresence | GroupFixed | GroupFinished | GroupMessage | ArrivalQueued | ArrivalEnded
    | BatchClosed
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    return _decoder.decode(data)
