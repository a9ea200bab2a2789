"""The projector, the domain decisions and the wire codecs (no I/O)."""

from __future__ import annotations

import random

import msgspec
import pytest

from gateway.messages import PatchMsg, decode_message
from gateway.tokens import TokenError, TokenSigner
from session_store import positions
from session_store.commands import OpenBatch, Patch, decode_command, encode
from session_store.domain import Limits, Rejected, SizeTracker, decide
from session_store.events import (
    BATCH_SESSION,
    BatchOpened,
    SessionPatched,
    decode_event,
    encode_event,
)
from session_store.projector import (
    BatchState,
    ProjectionError,
    decode_state,
    encode_state,
    fold,
)


def opened(batch: str = "b") -> BatchState:
    state = BatchState(batch_id=batch)
    return fold(state, BatchOpened(scope="batch", version=1, label="L"), "1-0")


def patch(version: int, ops: list, scope: str = BATCH_SESSION) -> SessionPatched:
    return SessionPatched(scope=scope, version=version, ops=ops)


def test_fold_applies_patches_and_tracks_versions_per_scope():
    state = opened()
    fold(state, patch(1, [{"op": "add", "path": "/a", "value": [1]}]), "2-0")
    fold(state, patch(2, [{"op": "add", "path": "/a/-", "value": 2}]), "3-0")
    fold(state, patch(1, [{"op": "add", "path": "/g", "value": 1}], "group_session:x"), "4-0")
    assert state.session(BATCH_SESSION) == {"a": [1, 2]}
    assert state.versions == {"batch": 1, BATCH_SESSION: 2, "group_session:x": 1}
    assert state.pos == "4-0" and state.opened and state.label == "L"


def test_fold_refuses_a_version_that_does_not_follow():
    state = opened()
    with pytest.raises(ProjectionError):
        fold(state, patch(2, [{"op": "add", "path": "/a", "value": 1}]), "2-0")
    assert state.version(BATCH_SESSION) == 0 and state.session(BATCH_SESSION) == {}


def test_snapshot_round_trip_and_replay_from_snapshot_equals_full_fold():
    rng = random.Random(7)
    events = [(f"{i + 2}-0", patch(i + 1, [{"op": "add", "path": f"/k{rng.randrange(20)}",
                                           "value": rng.random()}])) for i in range(300)]
    full = opened()
    snapshot = None
    for n, (pos, ev) in enumerate(events):
        fold(full, ev, pos)
        if n == 149:
            snapshot = encode_state(full)
    assert snapshot is not None
    resumed = decode_state(snapshot)
    for pos, ev in events[150:]:
        fold(resumed, ev, pos)
    assert encode_state(resumed) == encode_state(full)


def test_event_and_command_codecs_round_trip():
    ev = SessionPatched(scope=BATCH_SESSION, version=3, ops=[{"op": "remove", "path": "/x"}],
                        cmd="c", run="r", gw="g", conn="k")
    assert decode_event(encode_event(ev)) == ev
    cmd = Patch(id="1", batch="b", run="r", gw="g", scope=BATCH_SESSION, ops=[], version=None)
    assert decode_command(encode(cmd)) == cmd
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"kind":"nope","scope":"x","version":1}')


def decide_patch(state: BatchState, ops: list, version: int | None = None,
                 limits: Limits | None = None, sizes: SizeTracker | None = None):
    cmd = Patch(id="c", batch=state.batch_id, run="r", gw="g", scope=BATCH_SESSION, ops=ops,
                version=version)
    return decide(state, cmd, limits or Limits(), sizes or SizeTracker())


def test_decide_validates_and_leaves_state_untouched_on_refusal():
    state = opened()
    [event] = decide_patch(state, [{"op": "add", "path": "/n", "value": 1}], version=0).events
    assert event.version == 1 and state.session(BATCH_SESSION) == {"n": 1}
    before = encode_state(state)
    cases = [
        ([{"op": "replace", "path": "/n", "value": 2}], 0, "version_mismatch"),
        ([{"op": "add", "path": "/m", "value": 1}, {"op": "remove", "path": "/zz"}], None,
         "path_not_found"),
        ([{"op": "test", "path": "/n", "value": 5}], None, "test_failed"),
        ([{"op": "jump", "path": "/n"}], None, "bad_patch"),
        ([], None, "bad_patch"),
    ]
    for ops, version, code in cases:
        with pytest.raises(Rejected) as caught:
            decide_patch(state, ops, version)
        assert caught.value.code == code
        assert caught.value.version == 1
        assert encode_state(state) == before


def test_decide_limits():
    state = opened()
    with pytest.raises(Rejected) as caught:
        decide_patch(state, [{"op": "add", "path": f"/{i}", "value": i} for i in range(4)],
                     limits=Limits(max_ops_per_patch=3))
    assert caught.value.code == "bad_patch"
    sizes = SizeTracker()
    limits = Limits(max_session_bytes=1000)
    for i in range(3):
        decide_patch(state, [{"op": "add", "path": f"/s{i}", "value": "x" * 250}],
                     limits=limits, sizes=sizes)
    with pytest.raises(Rejected) as caught:
        decide_patch(state, [{"op": "add", "path": "/s3", "value": "x" * 250}],
                     limits=limits, sizes=sizes)
    assert caught.value.code == "state_too_large"
    # Shrinking is fine even near the limit: the bound is re-measured.
    decide_patch(state, [{"op": "remove", "path": "/s0"}], limits=limits, sizes=sizes)
    decide_patch(state, [{"op": "add", "path": "/s3", "value": "x" * 250}],
                 limits=limits, sizes=sizes)
    assert len(msgspec.json.encode(state.session(BATCH_SESSION))) <= 1000


def test_decide_batch_lifecycle():
    fresh = BatchState(batch_id="new")
    with pytest.raises(Rejected) as caught:
        decide_patch(fresh, [{"op": "add", "path": "/a", "value": 1}])
    assert caught.value.code == "batch_not_found"
    open_cmd = OpenBatch(id="o", batch="new", run="admin", gw="g", label="Lab")
    [event] = decide(fresh, open_cmd, Limits(), SizeTracker()).events
    assert isinstance(event, BatchOpened) and fresh.opened
    with pytest.raises(Rejected) as caught:
        decide(fresh, open_cmd, Limits(), SizeTracker())
    assert caught.value.code == "batch_exists"


def test_positions_order():
    assert positions.after("10-1", "10-0") and positions.after("11-0", "10-99")
    assert not positions.after("10-0", "10-0")
    assert not positions.is_valid("abc") and positions.is_valid("5")
    assert positions.time_ms("1700-3") == 1700


def test_tokens():
    signer = TokenSigner("s" * 32, ttl_s=60)
    claims = signer.verify(signer.issue("run1", "b1"))
    assert (claims.run, claims.batch) == ("run1", "b1")
    token = signer.issue("run1", "b1")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (tampered, "x", "a.b.c", TokenSigner("other", 60).issue("run1", "b1"),
                TokenSigner("s" * 32, ttl_s=-1).issue("run1", "b1")):
        with pytest.raises(TokenError):
            signer.verify(bad)


def test_client_messages():
    msg = decode_message(b'{"type":"patch","id":"1","scope":"batch_session","ops":[]}')
    assert isinstance(msg, PatchMsg) and msg.version is None
    for bad in (b'{"type":"patch","id":"","scope":"s","ops":[]}',
                b'{"type":"patch","id":"1","scope":"s","ops":[],"version":-1}',
                b'{"type":"patch","id":"1","scope":"s","ops":[],"extra":1}',
                b'{"type":"ping","x":1}'):
        with pytest.raises(msgspec.ValidationError):
            decode_message(bad)
