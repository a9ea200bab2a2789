"""Whole studies end to end: import (folder zip and JATOS .jzip), batches, links,
participants through every component with their study session, end, abort,
failure by timeout and by reload; entry limits under concurrency."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from session_store.connect import connect_redis
from session_store.events import StudySessionWritten
from session_store.keys import Keys
from session_store.store import EventStore
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

PAGE = "<!doctype html><title>{name}</title><script src='jatos.js'></script><p>{name}</p>"

STUDY_TOML = """
title = "Three steps"
uuid = "{uuid}"
linear = false
end_redirect_url = "https://example.org/done"
json_input = {{ greeting = "hello" }}

[session_config]
participation_fee = 1.5

[[components]]
id = "first"
title = "First"
html_file = "first.html"
reloadable = false
json_input = {{ step = 1 }}

[[components]]
id = "second"
title = "Second"
html_file = "pages/second.html"
reloadable = true

[[components]]
id = "third"
title = "Third"
html_file = "third.html"
reloadable = true
"""


def study_zip(uuid: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("three/study.toml", STUDY_TOML.format(uuid=uuid))
        archive.writestr("three/first.html", PAGE.format(name="first"))
        archive.writestr("three/pages/second.html", PAGE.format(name="second"))
        archive.writestr("three/third.html", PAGE.format(name="third"))
        archive.writestr("three/style.css", "body { color: teal }")
    return buffer.getvalue()


def jatos_archive(uuid: str, title: str) -> bytes:
    """A JATOS 3 study archive: a .jas description plus the assets folder."""
    jas = {
        "version": "3",
        "data": {
            "uuid": uuid, "title": title, "description": "from JATOS", "dirName": "jatos_study",
            "comments": "", "jsonData": '{"from": "jatos"}', "endRedirectUrl": "",
            "linearStudy": False, "groupStudy": False, "allowPreview": False,
            "componentList": [
                {"uuid": f"{uuid}-c1", "title": "Intro", "htmlFilePath": "intro.html",
                 "reloadable": True, "active": True, "comments": "", "jsonData": None},
                {"uuid": f"{uuid}-c2", "title": "Task", "htmlFilePath": "task.html",
                 "reloadable": False, "active": True, "comments": "",
                 "jsonData": '{"trials": 3}'},
            ],
            "batchList": [],
        },
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("study.jas", json.dumps(jas))
        archive.writestr("jatos_study/intro.html", PAGE.format(name="intro"))
        archive.writestr("jatos_study/task.html", PAGE.format(name="task"))
    return buffer.getvalue()


class Experimenter:
    def __init__(self, stack: Stack) -> None:
        self.client = httpx.AsyncClient(
            base_url=stack.gateway_urls[0],
            headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)

    async def upload(self, name: str, data: bytes) -> dict[str, Any]:
        response = await self.client.post("/api/studies", files={"file": (name, data)})
        assert response.status_code == 201, response.text
        return response.json()

    async def batch(self, study: str, **fields: Any) -> dict[str, Any]:
        response = await self.client.post(f"/api/studies/{study}/batches", json=fields)
        assert response.status_code == 201, response.text
        return response.json()

    async def links(self, study: str, batch: str, kind: str, count: int) -> list[str]:
        response = await self.client.post(f"/api/studies/{study}/batches/{batch}/links",
                                          json={"type": kind, "count": count})
        assert response.status_code == 201, response.text
        return [link["code"] for link in response.json()]


class Browser:
    """A participant's browser, speaking HTTP like a study page and jatos.js would."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.key = ""
        self.pos = 0

    async def enter(self, code: str, **query: str) -> httpx.Response:
        response = await self.http.get(f"/go/{code}", params=query)
        if response.status_code == 302:
            location = urlsplit(response.headers["location"]).path
            _, _, self.key, _, pos, *_ = location.split("/")
            self.pos = int(pos)
            page = await self.http.get(location)
            assert page.status_code == 200, page.text
        return response

    async def open(self, pos: int, html_file: str) -> httpx.Response:
        self.pos = pos
        return await self.http.get(f"/r/{self.key}/c/{pos}/{html_file}")

    async def init(self) -> dict[str, Any]:
        response = await self.http.get(f"/r/{self.key}/init", params={"pos": self.pos})
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, what: str, body: Any) -> httpx.Response:
        return await self.http.post(f"/r/{self.key}/{what}", json=body)


async def live_state(stack: Stack, redis_url: str, batch: str):
    keys = Keys(stack.env["COHORT_KEY_PREFIX"], int(stack.env["COHORT_PARTITIONS"]))
    redis = connect_redis(redis_url)
    try:
        store = EventStore(redis, keys)
        state, _ = await store.load_batch(batch)
        events = [e async for _, e in store.read_events(batch)]
        side = {run: await redis.hgetall(keys.study_session(batch, run)) for run in state.runs}
        return state, events, side
    finally:
        await redis.aclose()


async def test_three_participants_through_a_study(make_stack, redis_url):
    stack = make_stack(gateways=2, workers=1, run_timeout_s=3, run_check_every_s=0.3,
                       archive_interval_s=0.5)
    stack._spawn("finalizer", "finalizer")  # records ends the log decided (timeouts)
    lab = Experimenter(stack)
    stored = await lab.upload("three.zip", study_zip("uuid-three-steps"))
    study = stored["study_id"]
    batch = (await lab.batch(study, label="Tuesday"))["id"]
    codes = await lab.links(study, batch, "personal_single", 4)
    base = stack.gateway_urls[1]  # participants use the other gateway

    # Participant 1: all three components, the study session carried along, then end.
    p1 = Browser(base)
    assert (await p1.enter(codes[0], PROLIFIC_PID="abc")).status_code == 302
    init = await p1.init()
    assert init["studySessionData"] == {} and init["componentPos"] == 1
    assert init["studyJsonInput"] == {"greeting": "hello"}
    assert init["componentJsonInput"] == {"step": 1}
    assert init["urlQueryParameters"] == {"PROLIFIC_PID": "abc"}
    assert [c["title"] for c in init["componentList"]] == ["First", "Second", "Third"]
    assert (await p1.post("study-session", {"name": "Ada"})).status_code == 200
    asset = await p1.http.get(f"/r/{p1.key}/c/1/style.css")
    assert asset.text == "body { color: teal }"
    library = await p1.http.get(f"/r/{p1.key}/c/2/pages/jatos.js")
    assert library.status_code == 200 and "jatos" in library.text
    assert (await p1.open(2, "pages/second.html")).status_code == 200
    assert (await p1.init())["studySessionData"] == {"name": "Ada"}
    assert (await p1.post("study-session", {"name": "Ada", "step": 2})).status_code == 200
    assert (await p1.open(3, "third.html")).status_code == 200
    assert (await p1.init())["studySessionData"] == {"name": "Ada", "step": 2}
    ended = (await p1.post("end", {"successful": True, "message": "thanks"})).json()
    assert ended["state"] == "finished" and len(ended["confirmation_code"]) == 12
    assert ended["redirect"] == "https://example.org/done"
    assert (await p1.open(1, "first.html")).status_code == 403  # the run is over

    # Participant 2 writes a study session, then aborts: the contents are erased.
    p2 = Browser(base)
    await p2.enter(codes[1])
    await p2.init()
    await p2.post("study-session", {"secret": "do not keep"})
    assert (await p2.post("abort", {"message": "changed my mind"})).json()["state"] == "aborted"

    # Participant 3 goes silent: its run fails by timeout.
    p3 = Browser(base)
    await p3.enter(codes[2])
    # Participant 4 reloads a component that may not be reloaded: its run fails.
    p4 = Browser(base)
    await p4.enter(codes[3])
    reloaded = await p4.open(1, "first.html")
    assert reloaded.status_code == 409 and "reloaded" in reloaded.text

    # A personal single link cannot be used twice.
    again = await Browser(base).enter(codes[0])
    assert again.status_code == 403 and "link_used" in again.text

    runs = {}
    for _ in range(50):
        state, events, side = await live_state(stack, redis_url, batch)
        runs = {r.label or run_id: r for run_id, r in state.runs.items()}
        if len(runs) == 4 and all(not r.is_active for r in state.runs.values()):
            break
        await asyncio.sleep(0.2)
    by_key = {p.key: p for p in (p1, p2, p3, p4)}
    assert len(by_key) == 4
    states = sorted((r.state, r.reason) for r in state.runs.values())
    assert states == [("aborted", ""), ("failed", "reloaded"), ("failed", "timeout"),
                      ("finished", "")]
    finished = next(r for r in state.runs.values() if r.state == "finished")
    assert finished.components == ["finished", "finished", "finished"]
    aborted_id = next(i for i, r in state.runs.items() if r.state == "aborted")
    aborted = state.runs[aborted_id]
    assert aborted.study_session_erased and side[aborted_id] == {}
    markers = [e for e in events if isinstance(e, StudySessionWritten)
               and e.scope == f"run:{aborted_id}"]
    assert len(markers) == 1 and markers[0].size > 0, "the event stays as a marker"
    # Postgres knows every end, including the timeout the worker decided.
    pool = await asyncpg.connect(stack.env["COHORT_DATABASE_URL"])
    try:
        for _ in range(50):
            ends = dict(await pool.fetch("SELECT end_state, count(*) FROM runs "
                                         "WHERE batch_id = $1 GROUP BY end_state", batch))
            if ends.get(None) is None:
                break
            await asyncio.sleep(0.2)
    finally:
        await pool.close()
    assert ends == {"finished": 1, "aborted": 1, "failed": 2}, ends
    finished_id = next(i for i, r in state.runs.items() if r.state == "finished")
    assert json.loads(side[finished_id][str(finished.study_session_version).encode()]) == {
        "name": "Ada", "step": 2}


async def test_jatos_archive_versions_and_entry_limits(make_stack):
    stack = make_stack(gateways=2, workers=1)
    lab = Experimenter(stack)
    first = await lab.upload("exported.jzip", jatos_archive("jatos-uuid-1", "From JATOS"))
    study = first["study_id"]
    batch = (await lab.batch(study, label="open", max_total_participants=20))["id"]
    [general] = await lab.links(study, batch, "general_multiple", 1)

    # A participant enters version 1; a re-import makes version 2; the run keeps 1.
    early = Browser(stack.gateway_urls[0])
    await early.enter(general)
    second = await lab.upload("exported.jzip", jatos_archive("jatos-uuid-1", "From JATOS v2"))
    assert second["study_id"] == study and second["version"] == first["version"] + 1
    init = await early.init()
    assert init["studyVersion"] == first["version"] and init["studyTitle"] == "From JATOS"
    assert init["studyJsonInput"] == {"from": "jatos"}
    assert (await early.open(2, "task.html")).status_code == 200
    assert (await early.init())["componentJsonInput"] == {"trials": 3}

    # 50 concurrent entries into a batch with room for 19 more: never over.
    async def try_enter(i: int) -> int:
        return (await Browser(stack.gateway_urls[i % 2]).enter(general)).status_code

    codes = await asyncio.gather(*(try_enter(i) for i in range(50)))
    assert codes.count(302) == 19 and codes.count(403) == 31

    # An inactive batch refuses with a clear page.
    closed = (await lab.batch(study, label="closed", active=False))["id"]
    [code] = await lab.links(study, closed, "general_multiple", 1)
    refused = await Browser(stack.gateway_urls[0]).enter(code)
    assert refused.status_code == 403 and "batch_inactive" in refused.text
    missing = await Browser(stack.gateway_urls[0]).enter("no-such-link-code-at-all")
    assert missing.status_code == 404 and "link_not_found" in missing.text
    forged = await early.http.get("/r/not-a-key/init", params={"pos": 1})
    assert forged.status_code == 403 and forged.json()["code"] == "forbidden"


async def test_retried_end_gets_the_first_answer(make_stack):
    stack = make_stack(gateways=1, workers=1)
    lab = Experimenter(stack)
    study = (await lab.upload("three.zip", study_zip("uuid-retry-end")))["study_id"]
    batch = (await lab.batch(study))["id"]
    [code] = await lab.links(study, batch, "general_multiple", 1)
    p = Browser(stack.gateway_urls[0])
    await p.enter(code)
    headers = {"X-Cohort-Command-Id": "end-once"}
    first = await p.http.post(f"/r/{p.key}/end", json={"successful": True}, headers=headers)
    again = await p.http.post(f"/r/{p.key}/end", json={"successful": True}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["confirmation_code"] == again.json()["confirmation_code"]
    other = await p.http.post(f"/r/{p.key}/end", json={}, headers={"X-Cohort-Command-Id": "x"})
    assert other.status_code == 409 and other.json()["code"] == "run_ended"
