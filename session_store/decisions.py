"""What deciding a command yields: events, side data, or a refusal with a code."""

from __future__ import annotations

from typing import Any

import msgspec

from session_store.commands import Command, Outcome
from session_store.events import Event
from session_store.projector import BatchState, fold


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


class Decision(msgspec.Struct):
    """What a command does: events (already folded into the state) and what goes beside them."""

    events: list[Event]
    # Study session contents written with the last event (kept beside the stream).
    study_session: bytes | None = None
    # Erase this run's study session contents (an abort).
    erase_study_session: bool = False


class Emitter:
    """Folds each event as it is made, so the next one sees its effect and version."""

    def __init__(self, state: BatchState, origin: dict[str, Any]) -> None:
        self.state = state
        self.origin = origin
        self.events: list[Event] = []

    def __call__(self, cls: type, scope: str, **fields: Any) -> Event:
        event = cls(scope=scope, version=self.state.version(scope) + 1, **fields, **self.origin)
        fold(self.state, event, self.state.pos)
        self.events.append(event)
        return event


