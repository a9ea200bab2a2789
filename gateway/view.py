"""One batch as a gateway sees it: the projected state, recent events for resumes,
and which connections listen to which scope.

Scopes come in three kinds, each with its own frames (docs/protocol.md):
session scopes (``batch_session``, ``group_session:G``) send ``state`` and
``update``; a group's membership scope (``group:G``) sends ``group``; a group's
chat (``group_chat:G``) sends ``group_msg``, one per message, to the members
it is for.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from gateway.connection import Connection
from gateway.messages import (
    Change,
    GroupChange,
    GroupFrame,
    GroupMsgFrame,
    StateFrame,
    UpdateFrame,
    encode_frame,
)
from session_store import positions
from session_store.events import (
    BATCH_SESSION,
    Event,
    GroupCreated,
    GroupFinished,
    GroupFixed,
    GroupMessage,
    MemberJoined,
    MemberLeft,
    MemberPresence,
    SessionPatched,
    group_chat_scope,
    group_scope,
    group_session_scope,
    scope_group,
)
from session_store.projector import BatchState


def is_session_scope(scope: str) -> bool:
    return scope == BATCH_SESSION or scope.startswith("group_session:")


def group_scopes(group_id: str) -> tuple[str, str, str]:
    return group_scope(group_id), group_session_scope(group_id), group_chat_scope(group_id)


def group_change(event: Event) -> GroupChange | None:
    """How a membership event reads to the members."""
    if isinstance(event, MemberJoined):
        return GroupChange("joined", event.member)
    if isinstance(event, MemberLeft):
        return GroupChange("left", event.member)
    if isinstance(event, MemberPresence):
        return GroupChange("open" if event.open else "closed", event.member)
    if isinstance(event, GroupFixed):
        return GroupChange("fixed")
    if isinstance(event, GroupFinished):
        return GroupChange("finished")
    if isinstance(event, GroupCreated):
        return GroupChange("created")
    return None  # lobby events are told to the waiting member alone (hub)


def message_is_for(event: GroupMessage, run: str) -> bool:
    return event.sender != run if event.to is None else event.to == run


class BatchView:
    def __init__(self, state: BatchState, partition: int, window: int) -> None:
        self.state = state
        self.partition = partition
        # Every event after ``recent_base`` that a resume may need is in ``recent``.
        self.recent: deque[tuple[str, Event]] = deque(maxlen=window)
        self.recent_base = state.pos
        self.subscribers: dict[str, set[Connection]] = {}
        # Experimenters' consoles: every event of the batch, as it commits.
        self.consoles: set[Connection] = set()
        self.idle_since: float | None = time.monotonic()
        self._state_cache: dict[str, tuple[str, bool, str]] = {}

    @property
    def batch_id(self) -> str:
        return self.state.batch_id

    def remember(self, pos: str, event: Event) -> None:
        if isinstance(event, SessionPatched | GroupMessage):
            if len(self.recent) == self.recent.maxlen:
                self.recent_base = self.recent[0][0]
            self.recent.append((pos, event))

    # -- frames ----------------------------------------------------------------

    def group_frame(self, group_id: str, changes: list[GroupChange] | None = None,
                    joined: bool = True) -> str:
        group = self.state.groups.get(group_id)
        return encode_frame(GroupFrame(
            group=group_id, version=self.state.version(group_scope(group_id)),
            state=group.state if group else "finished",
            members=list(group.active) if group else [], closed=list(group.closed) if group else [],
            pos=self.state.pos, joined=joined, changes=changes or [],
            max_active_members=self.state.group_limits.max_active_members,
            max_total_members=self.state.group_limits.max_total_members,
        ))

    def state_frame(self, scope: str, resync: bool) -> str | None:
        """The full state of one scope, encoded once per position and shared."""
        if scope.startswith("group:"):
            return self.group_frame(scope_group(scope))
        if not is_session_scope(scope):
            return None  # chat has no state
        cached = self._state_cache.get(scope)
        if cached is None or cached[0] != self.state.pos or cached[1] != resync:
            frame = encode_frame(StateFrame(
                scope=scope, version=self.state.version(scope),
                data=self.state.session(scope), pos=self.state.pos, resync=resync,
            ))
            cached = self._state_cache[scope] = (self.state.pos, resync, frame)
        return cached[2]

    def state_frames(self, scopes: Iterable[str], resync: bool) -> list[str]:
        return [f for f in (self.state_frame(s, resync) for s in sorted(scopes)) if f]

    def resume_frames(self, conn: Connection, since: str) -> list[str] | None:
        """What ``conn`` missed after ``since``, or None when that is no longer all here."""
        if not positions.is_valid(since) or positions.after(since, self.state.pos):
            return None
        if positions.after(self.recent_base, since):
            return None
        missed = [(pos, ev) for pos, ev in self.recent if positions.after(pos, since)]
        frames = []
        for scope in sorted(conn.scopes):
            if is_session_scope(scope):
                changes = [Change(v=ev.version, ops=ev.ops) for _, ev in missed
                           if ev.scope == scope and isinstance(ev, SessionPatched)]
                if changes:
                    frames.append(encode_frame(
                        UpdateFrame(scope=scope, pos=self.state.pos, changes=changes)))
            elif scope.startswith("group:"):
                frames.append(self.group_frame(scope_group(scope)))
        for pos, ev in missed:
            if (isinstance(ev, GroupMessage) and ev.scope in conn.scopes
                    and message_is_for(ev, conn.run)):
                frames.append(message_frame(ev, pos))
        return frames

    # -- subscriptions ---------------------------------------------------------

    def subscribe(self, conn: Connection, scopes: Iterable[str]) -> None:
        for scope in scopes:
            conn.scopes.add(scope)
            self.subscribers.setdefault(scope, set()).add(conn)
        self.idle_since = None

    def unsubscribe(self, conn: Connection, scopes: Iterable[str] | None = None) -> None:
        for scope in list(conn.scopes if scopes is None else scopes):
            conn.scopes.discard(scope)
            subs = self.subscribers.get(scope)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.subscribers[scope]
        self._maybe_idle()

    def add_console(self, conn: Connection) -> None:
        self.consoles.add(conn)
        self.idle_since = None

    def remove_console(self, conn: Connection) -> None:
        self.consoles.discard(conn)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self.subscribers and not self.consoles:
            self.idle_since = time.monotonic()

    def scopes_of(self, run: str) -> set[str]:
        """The scopes a participant's channel listens to: its batch, and its group if any."""
        scopes = {BATCH_SESSION}
        run_state = self.state.runs.get(run)
        if run_state is not None and run_state.group:
            scopes.update(group_scopes(run_state.group))
        return scopes


def message_frame(event: GroupMessage, pos: str) -> str:
    return encode_frame(GroupMsgFrame(group=scope_group(event.scope), sender=event.sender,
                                      msg=event.msg, pos=pos, to=event.to))
