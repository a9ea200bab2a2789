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
    schema: int = SCHEMA_VERSION
    # The command that caused the event (absent for system events), so that the
    # gateway holding the sender's connection can turn it into the ack.
    cmd: str | None = None
    run: str | None = None
    gw: str | None = None
    conn: str | None = None


class BatchOpened(EventBase, tag="batch_opened"):
    label: str = ""


class SessionPatched(EventBase, tag="session_patched"):
    """RFC 6902 ops applied to a session document (batch or group session)."""

    ops: list[Any]


Event = BatchOpened | SessionPatched

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> Event:
    return _decoder.decode(data)
