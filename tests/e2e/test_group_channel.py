"""Groups end to end: exact limits under concurrent joins across gateways, the group
session and channel reaching members only, leaving, reassigning, fixing, presence."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from services.participant import CommandFailed
from tests.e2e.conftest import join

pytestmark = pytest.mark.e2e


async def test_concurrent_joins_respect_max_active_members(make_stack, new_batch_id):
    stack = make_stack(gateways=2, workers=2)
    batch = new_batch_id()
    await stack.create_batch(batch, max_active_members=2, max_total_members=3)
    people = await asyncio.gather(*(join(stack, batch, gateway=i % 2) for i in range(20)))
    groups = await asyncio.gather(*(p.join_group() for p in people))
    sizes = Counter(groups)
    assert len(sizes) == 10 and set(sizes.values()) == {2}, sizes
    for p, group in zip(people, groups, strict=True):
        await p.wait_for(lambda p=p, g=group: p.group is not None and p.group["group"] == g
                         and len(p.group["members"]) == 2)
    # A member leaves: its group may take one more (max total 3), never a fourth.
    leaver = people[0]
    group = groups[0]
    await leaver.command("leave_group")
    await leaver.wait_for(lambda: leaver.group is None)
    mate = next(p for p, g in zip(people[1:], groups[1:], strict=True) if g == group)
    await mate.wait_for(lambda: {"kind": "left", "member": leaver.run_id} in mate.group_events)
    assert mate.group["members"] == [mate.run_id]
    newcomer = await join(stack, batch)
    assert await newcomer.join_group() == group, "the fullest open group takes the newcomer"
    another = await join(stack, batch)
    assert await another.join_group() not in (group, *groups), "group 1 has had 3 members"
    assert await leaver.join_group() not in (group,), "nobody rejoins a group it left"


async def test_group_session_and_channel_reach_members_only(make_stack, new_batch_id):
    stack = make_stack(gateways=2, workers=1)
    batch = new_batch_id()
    await stack.create_batch(batch, max_active_members=2)
    a, b, c = [await join(stack, batch, gateway=i % 2) for i in range(3)]
    ga, gb, gc = [await p.join_group() for p in (a, b, c)]
    assert ga == gb != gc
    for p in (a, b, c):
        await p.wait_for(lambda p=p: p.group_session["data"] is not None)
    scope = f"group_session:{ga}"
    await a.patch([{"op": "add", "path": "/round", "value": 1}], scope=scope)
    await b.wait_for(lambda: b.group_session["data"] == {"round": 1})
    # Versioned like the batch session, and only for members.
    with pytest.raises(CommandFailed) as caught:
        await b.patch([{"op": "replace", "path": "/round", "value": 2}], version=0, scope=scope)
    assert caught.value.code == "version_mismatch" and caught.value.version == 1
    with pytest.raises(CommandFailed) as caught:
        await c.patch([{"op": "add", "path": "/x", "value": 1}], scope=scope)
    assert caught.value.code == "bad_scope"
    # Messages: to every other member, to one member, to nobody unknown.
    await a.command("group_msg", msg={"text": "hi all"})
    await a.command("group_msg", msg="just you", to=b.run_id)
    await b.wait_for(lambda: len(b.messages) == 2)
    assert [m["msg"] for m in b.messages] == [{"text": "hi all"}, "just you"]
    assert b.messages[0]["sender"] == a.run_id
    with pytest.raises(CommandFailed) as caught:
        await a.command("group_msg", msg="?", to=c.run_id)
    assert caught.value.code == "member_not_found"
    await asyncio.sleep(0.3)
    assert a.messages == [] and c.messages == [], "senders and outsiders get nothing"
    # Chat and membership never moved the group session's version.
    assert a.group_session["version"] == b.group_session["version"] == 1
    # Fixing the group: everybody is told; nobody new gets in.
    await b.command("fix_group")
    await a.wait_for(lambda: a.group["state"] == "fixed")
    assert (await a.command("fix_group"))["type"] == "ack", "fixing again changes nothing"
    d = await join(stack, batch)
    assert await d.join_group() != ga
    with pytest.raises(CommandFailed) as caught:
        await c.command("reassign_group")
    assert caught.value.code == "no_group"


async def test_presence_and_resume_of_group_messages(make_stack, new_batch_id):
    stack = make_stack(gateways=2, workers=1, presence_grace_s=0.5, run_check_every_s=0.2)
    batch = new_batch_id()
    await stack.create_batch(batch, max_active_members=2)
    a = await join(stack, batch, gateway=0)
    b = await join(stack, batch, gateway=1)
    group = await a.join_group()
    assert await b.join_group() == group
    await a.wait_for(lambda: a.group is not None and len(a.group["members"]) == 2)
    await b.close()
    await a.wait_for(lambda: b.run_id in a.group["closed"], timeout=10)
    await a.command("group_msg", msg="are you there?")
    b.ws_url = b.ws_url.replace(stack.gateway_urls[1].removeprefix("http://"),
                                stack.gateway_urls[0].removeprefix("http://"))
    await b.connect(since=b.pos)
    await b.wait_for(lambda: len(b.messages) == 1)
    assert b.messages[0]["msg"] == "are you there?" and b.resyncs == 0
    await a.wait_for(lambda: b.run_id not in a.group["closed"], timeout=10)
    kinds = [e["kind"] for e in a.group_events if e.get("member") == b.run_id]
    assert kinds[-2:] == ["closed", "open"]


async def test_group_by_arrival_and_idle_members_removed(make_stack, new_batch_id):
    stack = make_stack(gateways=2, workers=1, run_check_every_s=0.2, presence_grace_s=0.3,
                       group_idle_s=1.5)
    batch = new_batch_id()
    await stack.create_batch(batch, form_by_arrival=2, arrival_timeout_s=1.0)
    a = await join(stack, batch, gateway=0)
    b = await join(stack, batch, gateway=1)
    c = await join(stack, batch, gateway=0)
    assert await a.join_group() == "", "a waits for a second arrival"
    assert a.group is None
    await b.join_group()
    for p in (a, b):
        await p.wait_for(lambda p=p: p.group is not None and len(p.group["members"]) == 2)
    assert await c.join_group() == ""
    await c.wait_for(lambda: {"kind": "timeout", "member": c.run_id} in c.group_events, timeout=10)
    assert c.group is None
    # b goes away for longer than the idle limit: it is removed and its run fails.
    await b.close()
    await a.wait_for(lambda: {"kind": "left", "member": b.run_id} in a.group_events, timeout=15)
    assert a.group["members"] == [a.run_id]
    info = await stack.participant(batch)  # the API still works; b's run has failed
    assert info["batch_id"] == batch
