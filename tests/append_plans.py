"""Plans for ``EventStore.append`` in store tests: one session patch per command."""

from __future__ import annotations

from session_store.commands import Outcome, encode
from session_store.events import BATCH_SESSION, SessionPatched, encode_event
from session_store.store import PlannedCommand, PlannedEvent


def patch_plan(batch: str, run: str, cmd: str, version: int, value: object = None,
               scope: str = BATCH_SESSION) -> PlannedCommand:
    """Command ``cmd`` of ``run``: one patch of ``scope`` at ``version`` that adds
    ``/<run>-<cmd>`` (``value``: the version unless given)."""
    event = SessionPatched(scope=scope, version=version, cmd=cmd, run=run, ops=[
        {"op": "add", "path": f"/{run}-{cmd}", "value": version if value is None else value}])
    template = encode(Outcome(cmd=cmd, ok=True, scope=scope, version=version, pos="%POS%"))
    return PlannedCommand(batch, run, cmd, [PlannedEvent(batch, scope, version,
                                                         encode_event(event))],
                          template=template)
