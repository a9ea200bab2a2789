"""Commands: what gateways ask the session service to do. One tagged union.

A command travels in its batch's partition stream. Its id is client-chosen and
unique per run; ``(batch, run, id)`` names it for deduplication.
"""

from __future__ import annotations

from typing import Any

import msgspec

from session_store.events import GroupLimits


class CommandBase(msgspec.Struct, kw_only=True, tag_field="kind", omit_defaults=True):
    id: str
    batch: str
    run: str
    gw: str
    conn: str = ""
    # Ask for the outcome on the gateway's reply stream even when committed
    # (HTTP callers, which do not read the batch's event stream).
    reply: bool = False


class OpenBatch(CommandBase, tag="open_batch"):
    label: str = ""
    groups: GroupLimits = msgspec.field(default_factory=GroupLimits)


class ChangeBatchSettings(CommandBase, tag="change_batch_settings", kw_only=True):
    groups: GroupLimits


class CloseBatch(CommandBase, tag="close_batch"):
    """End the batch for good. Refused while runs are active unless ``force``, which
    fails them (reason ``batch_closed``) first."""

    force: bool = False


class Patch(CommandBase, tag="patch", kw_only=True):
    scope: str
    ops: list[Any]
    version: int | None = None


class StartRun(CommandBase, tag="start_run"):
    study: str = ""
    study_version: int = 0
    worker: str = ""
    label: str = ""
    link_type: str = ""
    preview: bool = False
    linear: bool = False
    reloadable: list[bool] = msgspec.field(default_factory=list)
    active: list[bool] = msgspec.field(default_factory=list)


class StartComponent(CommandBase, tag="start_component", kw_only=True):
    pos: int


class RetrieveData(CommandBase, tag="retrieve_data", kw_only=True):
    pos: int


class WriteStudySession(CommandBase, tag="write_study_session", kw_only=True):
    data: Any


class EndRun(CommandBase, tag="end_run"):
    successful: bool = True
    message: str = ""


class AbortRun(CommandBase, tag="abort_run"):
    message: str = ""


class FailRun(CommandBase, tag="fail_run", kw_only=True):
    reason: str
    message: str = ""


RunCommand = (
    StartRun | StartComponent | RetrieveData | WriteStudySession | EndRun | AbortRun | FailRun
)
class JoinGroup(CommandBase, tag="join_group"):
    pass


class LeaveGroup(CommandBase, tag="leave_group"):
    pass


class ReassignGroup(CommandBase, tag="reassign_group"):
    pass


class FixGroup(CommandBase, tag="fix_group"):
    pass


class SendGroupMessage(CommandBase, tag="send_group_message", kw_only=True):
    msg: Any
    to: str | None = None


class SetPresence(CommandBase, tag="set_presence", kw_only=True):
    """Issued by the worker from last-seen marks: a member's channel is gone or back."""

    open: bool


class ExpireArrival(CommandBase, tag="expire_arrival"):
    """Issued by the worker: a group-by-arrival wait ran out of time."""


GroupCommand = (
    JoinGroup | LeaveGroup | ReassignGroup | FixGroup | SendGroupMessage | SetPresence
    | ExpireArrival
)
Command = OpenBatch | ChangeBatchSettings | CloseBatch | Patch | RunCommand | GroupCommand


class Outcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer to a command, remembered for retries and sent on the reply stream."""

    cmd: str
    ok: bool
    scope: str = ""
    version: int = 0
    pos: str = ""
    code: str = ""
    message: str = ""
    conn: str = ""
    # Set on a committed command that ended the run (e.g. a reload that failed it).
    run_state: str = ""
    confirmation_code: str = ""
    # For retrieve_data: which study session write to read (run-scope version).
    study_session_version: int = 0
    # For group commands: the group the run is in afterwards ("" for none).
    group: str = ""


_encoder = msgspec.json.Encoder()
_command_decoder = msgspec.json.Decoder(Command)
_outcome_decoder = msgspec.json.Decoder(Outcome)


def encode(value: Command | Outcome) -> bytes:
    return _encoder.encode(value)


def decode_command(data: bytes) -> Command:
    return _command_decoder.decode(data)


def decode_outcome(data: bytes) -> Outcome:
    return _outcome_decoder.decode(data)
