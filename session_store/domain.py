"""The domain: decide what a command does to a batch, or why it is refused.

``decide`` validates a command against the in-memory state by folding the
event it would produce; on success the state already holds the change and the
caller must make the event durable (or drop the state). On refusal nothing
changed. No I/O here.
"""

from __future__ import annotations

import msgspec

from session_store.commands import Command, OpenBatch, Outcome, Patch
from session_store.events import (
    BATCH_SCOPE,
    BATCH_SESSION,
    BatchOpened,
    Event,
    SessionPatched,
    encode_event,
)
from session_store.jsonpatch import PatchError, apply_patch
from session_store.projector import BatchState, fold

# Scopes a participant may patch over its channel (group sessions come later).
PARTICIPANT_WRITABLE = frozenset({BATCH_SESSION})

_json = msgspec.json.Encoder()


class Limits(msgspec.Struct, frozen=True):
    max_session_bytes: int = 1024 * 1024
    max_ops_per_patch: int = 1000


class Rejected(Exception):
    def __init__(self, code: str, message: str, scope: str = "", version: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.scope = scope
        self.version = version

    def outcome(self, command: Command) -> Outcome:
        return Outcome(
            cmd=command.id, ok=False, scope=self.scope, version=self.version,
            code=self.code, message=self.message, conn=command.conn,
        )


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


def decide(
    state: BatchState, command: Command, limits: Limits, sizes: SizeTracker
) -> list[Event]:
    """The events ``command`` produces (already folded into ``state``), or ``Rejected``."""
    origin = {"cmd": command.id, "run": command.run, "gw": command.gw, "conn": command.conn}
    if isinstance(command, OpenBatch):
        if state.opened:
            raise Rejected("batch_exists", f"batch {state.batch_id} exists already")
        event: Event = BatchOpened(
            scope=BATCH_SCOPE, version=state.version(BATCH_SCOPE) + 1,
            label=command.label, **origin,
        )
        fold(state, event, state.pos)
        return [event]
    if not state.opened:
        raise Rejected("batch_not_found", f"batch {state.batch_id} does not exist")
    if isinstance(command, Patch):
        return [_patch(state, command, limits, sizes, origin)]
    raise Rejected("bad_message", f"unknown command {type(command).__name__}")


def _patch(
    state: BatchState, command: Patch, limits: Limits, sizes: SizeTracker, origin: dict
) -> Event:
    scope = command.scope
    current = state.version(scope)
    if scope not in PARTICIPANT_WRITABLE:
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


def committed_outcome(command: Command, events: list[Event]) -> bytes:
    """The outcome template remembered for a committed command (%POS% filled in by Redis)."""
    last = events[-1]
    return _json.encode(Outcome(
        cmd=command.id, ok=True, scope=last.scope, version=last.version,
        pos="%POS%", conn=command.conn,
    ))


__all__ = ["Limits", "Rejected", "SizeTracker", "committed_outcome", "decide", "encode_event"]
