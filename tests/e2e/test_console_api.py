"""The experimenter's live side: snapshot, batch-session edits pushed to participants
(compare-and-set), and the console socket streaming every event."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from services.participant import Participant
from tests.e2e.test_study_flow import Browser, Experimenter, study_zip

pytestmark = pytest.mark.e2e


async def test_console_sees_everything_and_edits_reach_participants(make_stack):
    stack = make_stack(gateways=2, workers=1)
    lab = Experimenter(stack)
    study = (await lab.upload("three.zip", study_zip("uuid-console")))["study_id"]
    batch = (await lab.batch(study, label="live"))["id"]
    [code] = await lab.links(study, batch, "general_multiple", 1)

    console_url = (stack.gateway_urls[1].replace("http", "ws")
                   + f"/ws/console/{batch}?token={stack.admin_token}")
    console = await websockets.connect(console_url)
    first = json.loads(await console.recv())
    assert first["type"] == "live" and first["snapshot"]["runs"] == []

    browser = Browser(stack.gateway_urls[0])
    await browser.enter(code, PROLIFIC_PID="p1")
    ws_base = stack.gateway_urls[0].replace("http", "ws")
    participant = await Participant(f"{ws_base}/ws/batch/{batch}?token={browser.key}").connect()
    await participant.wait_ready()

    kinds: list[str] = []
    while "component_started" not in kinds:
        frame = json.loads(await asyncio.wait_for(console.recv(), 10))
        assert frame["type"] == "events"
        kinds += [entry["event"]["kind"] for entry in frame["events"]]
    assert kinds[:2] == ["run_started", "component_started"]

    live = (await lab.client.get(f"/api/studies/{study}/batches/{batch}/live")).json()
    [run] = live["runs"]
    assert run["state"] == "started" and run["component"] == 1 and run["connected"]

    # A compare-and-set edit: applied, pushed to the participant and to the console.
    path = f"/api/studies/{study}/batches/{batch}/session"
    done = await lab.client.post(path, json={"ops": [{"op": "add", "path": "/condition",
                                                     "value": "B"}], "version": 0})
    assert done.status_code == 200 and done.json()["version"] == 1
    await participant.wait_version(1)
    assert participant.data == {"condition": "B"}
    frame = json.loads(await asyncio.wait_for(console.recv(), 10))
    assert frame["events"][0]["event"]["kind"] == "session_patched"
    # A stale version is refused with the current state to retry from.
    stale = await lab.client.post(path, json={"ops": [{"op": "replace", "path": "/condition",
                                                      "value": "C"}], "version": 0})
    assert stale.status_code == 409
    assert stale.json()["version"] == 1 and stale.json()["data"] == {"condition": "B"}
    bad = await lab.client.post(path, json={"ops": [{"op": "remove", "path": "/nope"}]})
    assert bad.status_code == 400 and bad.json()["code"] == "path_not_found"

    refused = await websockets.connect(stack.gateway_urls[0].replace("http", "ws")
                                       + f"/ws/console/{batch}?token=wrong")
    assert json.loads(await refused.recv())["code"] == "unauthorized"
    await console.close()
    await participant.close()
