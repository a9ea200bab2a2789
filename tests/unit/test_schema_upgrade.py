"""Old events are read through converters by (kind, schema); the frozen schema-1
timeline (tests/data/timeline_schema1) replays to the states recorded with it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from session_store.events import SCHEMA_VERSION, GroupMessage, SessionPatched
from session_store.projector import BatchState, encode_state, fold
from session_store.upgrade import UPGRADER, UpgradeError, Upgrader, decode_head
from tests.timeline_driver import recorded_state

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "timeline_schema1"


class Line(msgspec.Struct):
    pos: str
    event: msgspec.Raw


def fixture_lines() -> list[Line]:
    decoder = msgspec.json.Decoder(Line)
    return [decoder.decode(line) for line in
            (FIXTURE / "events.jsonl").read_bytes().splitlines() if line.strip()]


def replay(lines: list[Line], upgrader: Upgrader, upto: int | None = None) -> BatchState:
    state = BatchState(batch_id="fixture")
    for line in lines[:upto]:
        fold(state, upgrader.decode(bytes(line.event)), line.pos)
    return state


def test_the_schema_1_fixture_replays_to_its_recorded_states():
    lines = fixture_lines()
    assert len(lines) == 300
    assert {decode_head(bytes(line.event)).schema for line in lines} == {1}
    assert sum(b'"schema"' in bytes(line.event) for line in lines) == 43
    assert encode_state(replay(lines, UPGRADER, 150)) == (
        recorded_state("state_mid.json"))
    assert encode_state(replay(lines, UPGRADER)) == (
        recorded_state("state.json"))


def test_a_newer_schema_without_converters_for_these_kinds_replays_the_same():
    up = Upgrader(current=SCHEMA_VERSION + 1)
    state = replay(fixture_lines(), up)
    assert encode_state(state) == recorded_state("state.json")


def test_converters_apply_step_by_step_by_kind_and_schema():
    # A made-up history of group_message: schema 1 had "text", schema 2 renamed it
    # to "msg" but called the addressee "recipient", schema 3 says "to".
    up = Upgrader(current=3)
    calls: list[tuple[str, int]] = []

    @up.register("group_message", 1)
    def text_to_msg(doc):
        calls.append(("group_message", 1))
        doc["msg"] = doc.pop("text")
        return doc

    @up.register("group_message", 2)
    def recipient_to_to(doc):
        calls.append(("group_message", 2))
        doc["to"] = doc.pop("recipient", None)
        return doc

    base = b'"kind":"group_message","scope":"group_chat:1","version":1,"sender":"r1"'
    v1 = up.decode(b"{" + base + b',"text":"hi"}')
    assert calls == [("group_message", 1), ("group_message", 2)]
    assert isinstance(v1, GroupMessage) and v1.msg == "hi" and v1.to is None
    assert v1.schema == 3
    calls.clear()
    v2 = up.decode(b"{" + base + b',"schema":2,"msg":{"a":1},"recipient":"r2"}')
    assert calls == [("group_message", 2)] and v2.msg == {"a": 1} and v2.to == "r2"
    calls.clear()
    v3 = up.decode(b"{" + base + b',"schema":3,"msg":"x","to":"r2"}')
    assert calls == [] and v3.msg == "x" and v3.to == "r2"
    # Kinds without converters pass through each step unchanged.
    patched = up.decode(b'{"kind":"session_patched","scope":"batch_session","version":4,'
                        b'"ops":[{"op":"add","path":"/a","value":1}]}')
    assert isinstance(patched, SessionPatched) and patched.schema == 3
    assert patched.ops == [{"op": "add", "path": "/a", "value": 1}]
    # encode() keeps current events' bytes and re-encodes upgraded ones.
    raw = b"{" + base + b',"schema":3,"msg":"x"}'
    assert up.encode(raw, 3) is raw
    assert msgspec.json.decode(up.encode(b"{" + base + b',"text":"hi"}', 1))["msg"] == "hi"


def test_events_of_a_newer_schema_or_broken_upgrades_are_refused():
    up = Upgrader(current=2)
    with pytest.raises(UpgradeError, match="newer code"):
        up.decode(b'{"kind":"group_created","scope":"group:1","version":1,"schema":3}')
    with pytest.raises(ValueError):
        up.register("group_created", 2)

    @up.register("group_created", 1)
    def broken(doc):
        doc["version"] = "one"
        return doc

    with pytest.raises(UpgradeError, match="group_created upgraded from schema 1"):
        up.decode(b'{"kind":"group_created","scope":"group:1","version":1}')
