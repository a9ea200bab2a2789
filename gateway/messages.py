"""The participant wire protocol (docs/protocol.md): one tagged union per direction,
one encoder and decoder per process."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

CommandId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ScopeName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Version = Annotated[int, msgspec.Meta(ge=0)]


class ClientMessage(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class PatchMsg(ClientMessage, tag="patch"):
    id: CommandId
    scope: ScopeName
    ops: list[Any]
    version: Version | None = None


class ResyncMsg(ClientMessage, tag="resync"):
    pass


class PingMsg(ClientMessage, tag="ping"):
    pass


class JoinGroupMsg(ClientMessage, tag="join_group"):
    id: CommandId


class LeaveGroupMsg(ClientMessage, tag="leave_group"):
    id: CommandId


class ReassignGroupMsg(ClientMessage, tag="reassign_group"):
    id: CommandId


class FixGroupMsg(ClientMessage, tag="fix_group"):
    id: CommandId


class GroupMsgMsg(ClientMessage, tag="group_msg"):
    id: CommandId
    msg: Any
    to: str | None = None


Incoming = (
    PatchMsg | ResyncMsg | PingMsg | JoinGroupMsg | LeaveGroupMsg | ReassignGroupMsg
    | FixGroupMsg | GroupMsgMsg
)


class ServerFrame(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class Change(msgspec.Struct, array_like=False):
    v: int
    ops: list[Any]


class StateFrame(ServerFrame, tag="state"):
    scope: str
    version: int
    data: Any
    pos: str
    resync: bool = False


class UpdateFrame(ServerFrame, tag="update"):
    scope: str
    pos: str
    changes: list[Change]


class AckFrame(ServerFrame, tag="ack"):
    id: str
    version: int
    group: str = ""     # for group commands: the group the run is in now


class GroupChange(msgspec.Struct, omit_defaults=True):
    kind: str           # created | joined | left | open | closed | fixed | finished
    member: str = ""


class GroupFrame(ServerFrame, tag="group"):
    """Membership of a group (scope group:G) after a read; ``joined`` false: you are out."""

    group: str
    version: int
    state: str
    members: list[str]
    closed: list[str]
    pos: str
    joined: bool = True
    changes: list[GroupChange] = msgspec.field(default_factory=list)
    # The batch's group limits (for isMaxActiveMemberReached and friends).
    max_active_members: int | None = None
    max_total_members: int | None = None


class GroupMsgFrame(ServerFrame, tag="group_msg"):
    group: str
    sender: str
    msg: Any
    pos: str
    to: str | None = None


class FailFrame(ServerFrame, tag="fail"):
    id: str
    code: str
    message: str
    version: int = 0


class ErrorFrame(ServerFrame, tag="error"):
    code: str
    message: str


class EventsFrame(ServerFrame, tag="events"):
    """For experimenters' consoles: every event of a read as ``{pos, event}``."""

    batch: str
    pos: str
    events: list[dict[str, Any]]


class PongFrame(ServerFrame, tag="pong"):
    pass


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Incoming)


def encode_frame(frame: ServerFrame) -> str:
    """Frames are sent as text; encode once and share the str between recipients."""
    return _encoder.encode(frame).decode()


def decode_message(data: str | bytes) -> Incoming:
    return _decoder.decode(data)
