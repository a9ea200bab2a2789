"""The experimenter's console in a real browser (headless Debian Chromium through
playwright-core, tests/browser_support) against a real stack of two gateways, and
its sessions (cookie, CSRF, logout) over plain HTTP.

One experimenter walks through the console: logs in, opens the study, makes a
batch and links (copy, CSV), watches participant bots join on the monitor (bots
enter through /go/<code> and open their channel on the other gateway), edits the
batch session (a bot receives it; a conflicting edit is re-applied and saved),
scrubs the timeline and downloads an export. Screenshots go to
tests/artifacts/console/ (gitignored).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from services.participant import Participant
from tests.browser_support.browser import Chromium
from tests.e2e.conftest import join
from tests.e2e.stack import REPO, Stack
from tests.e2e.test_study_flow import Browser, jatos_archive, study_zip

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "tests" / "artifacts" / "console"
PASSWORD = "correct horse battery staple"


def add_user(stack: Stack, username: str, password: str) -> str:
    """``cohort user add`` with the stack's database; answers the account's API token."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "user", "add", username, "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, env=stack.env, cwd=REPO,
        check=True)
    return done.stdout.strip().splitlines()[-1]


def downloaded(info: dict[str, Any]) -> str:
    """A downloaded file's text (without a UTF-8 byte order mark)."""
    return Path(info["path"]).read_text(encoding="utf-8-sig")


async def shot(browser: Chromium, name: str, page: int = 0) -> None:
    await browser.screenshot(ARTIFACTS / f"{name}.png", page=page)


async def bot(base_url: str, batch: str, code: str, label: str) -> tuple[Browser, Participant]:
    """A participant entering by its link, its first page loaded, its channel open."""
    person = Browser(base_url)
    entered = await person.enter(code, label=label, PROLIFIC_PID=f"pid-{label}")
    assert entered.status_code == 302, entered.text
    await person.init()
    ws = f"{base_url.replace('http', 'ws', 1)}/ws/batch/{batch}?token={person.key}"
    channel = await Participant(ws).connect()
    await channel.wait_ready()
    return person, channel


ROWS = "() => [...document.querySelectorAll('#monitor tbody tr')].filter(r => !r.hidden)" \
       ".map(r => [...r.cells].map(c => c.innerText.trim()))"


async def monitor_rows(browser: Chromium) -> list[list[str]]:
    return await browser.eval(ROWS)


async def wait_rows(browser: Chromium, predicate: str, timeout: int = 15000) -> list[list[str]]:
    """Until the visible monitor rows (lists of cell texts) satisfy ``predicate``
    (a JS expression over ``rows``)."""
    await browser.wait_until(f"() => {{ const rows = ({ROWS})(); return {predicate}; }}",
                             timeout=timeout)
    return await monitor_rows(browser)


@pytest.mark.browser
async def test_console_end_to_end(make_stack: Any, chromium: Chromium) -> None:
    stack = make_stack(gateways=2, workers=1)
    console_url, participant_url = stack.gateway_urls
    token = await asyncio.to_thread(add_user, stack, "ada", PASSWORD)
    async with httpx.AsyncClient(base_url=console_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as api:
        uploaded = await api.post("/api/studies", files={"file": ("three.zip",
                                                                  study_zip("uuid-console-ui"))})
        assert uploaded.status_code == 201, uploaded.text
        study = uploaded.json()["study_id"]
    browser = chromium
    await browser.call("grantClipboard", origin=console_url)

    # -- login (a wrong password first), studies, study --------------------------------
    opened = await browser.goto(f"{console_url}/console/studies/{study}")
    assert "/console/login" in opened["url"], "pages need a session"
    await shot(browser, "01-login")
    await browser.fill("input[name=username]", "ada")
    await browser.fill("input[name=password]", "not the password")
    await browser.click("button[type=submit]")
    await browser.wait_text(".alert.error", "wrong password")
    await browser.fill("input[name=password]", PASSWORD)
    await browser.click("button[type=submit]")
    await browser.wait_for("text=New batch")  # back where we wanted to go
    cookies = await browser.call("cookies", urls=[console_url])
    session = next(c for c in cookies if c["name"] == "cohort_console")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    await browser.goto(f"{console_url}/console")
    await browser.wait_text("table.grid", "Three steps")
    await shot(browser, "02-studies")
    await browser.click("text=Three steps")
    await browser.wait_for("text=New batch")

    # -- a new batch, links, copy, CSV --------------------------------------------------
    await browser.click("details.create summary")
    await browser.fill("details.create input[name=label]", "Tuesday 3 PM lab")
    await browser.fill("details.create input[name=max_total_participants]", "10")
    await browser.click("details.create button[type=submit]")
    await browser.wait_text(".alert.ok", "Batch created")
    await shot(browser, "03-study-and-new-batch")
    batch_page = (await browser.call("url")).split("?")[0]
    batch = batch_page.rsplit("/", 1)[1]
    await browser.select("select[name=type]", "general_multiple")
    await browser.fill("input[name=count]", "3")
    await browser.click("form.create-links button[type=submit]")
    await browser.wait_text(".alert.ok", "Created 3 link(s)")
    codes = await browser.eval(
        "() => [...document.querySelectorAll('tr[data-code]')].map(r => r.dataset.code)")
    assert len(codes) == 3
    await browser.click("tr[data-code] button.copy")
    await browser.wait_text("tr[data-code] button.copy", "Copied")
    copied = await browser.eval("() => navigator.clipboard.readText()")
    assert copied.endswith(f"/go/{codes[0]}")
    csv_file = await browser.download("#links-csv")
    rows = list(csv.DictReader(io.StringIO(downloaded(csv_file))))
    assert sorted(row["code"] for row in rows) == sorted(codes)
    await shot(browser, "04-batch-overview")

    # The active switch: off (participants are refused), then on again.
    await browser.click("label.switch")
    await browser.wait_text(".alert.ok", "The batch is now inactive")
    refused = await Browser(participant_url).enter(codes[0])
    assert refused.status_code == 403 and "batch_inactive" in refused.text
    await browser.click("label.switch")
    await browser.wait_text(".alert.ok", "The batch is now active")

    # -- the monitor, live as bots join ---------------------------------------------------
    await browser.goto(f"{batch_page}/monitor")
    await browser.wait_for("#live-status[data-state=live]")
    await browser.wait_text("#monitor-empty", "Nobody has entered")
    bots = []
    for i, label in enumerate(["ann", "bob", "cyd"]):
        bots.append(await bot(participant_url, batch, codes[i], label))
        rows = await wait_rows(browser, f"rows.length === {i + 1}")
    assert [row[0].splitlines()[0] for row in rows] == ["ann", "bob", "cyd"]
    rows = await wait_rows(browser, "rows.every(r => r[6] === 'yes' && r[3] === 'data retrieved')")
    assert all(row[1] == "1/3 · First" for row in rows)
    # bob moves on to the second component, cyd stores a result (where this gateway
    # takes results) and finishes.
    assert (await bots[1][0].open(2, "pages/second.html")).status_code == 200
    cyd = bots[2][0]
    stored = await cyd.http.post(f"/r/{cyd.key}/result-data", params={"pos": 1},
                                 json={"answer": 42})
    takes_results = stored.status_code == 200
    assert (await bots[2][0].post("end", {"successful": True})).status_code == 200
    rows = await wait_rows(browser, "rows[1][1] === '2/3 · Second' && rows[2][3] === 'finished'")
    assert rows[2][6] == "no"
    await browser.fill("#filter-text", "bob")
    rows = await wait_rows(browser, "rows.length === 1")
    assert rows[0][0].startswith("bob")
    await browser.fill("#filter-text", "")
    await browser.select("#filter-state", "finished")
    rows = await wait_rows(browser, "rows.length === 1")
    assert rows[0][0].startswith("cyd")
    await browser.select("#filter-state", "")
    await wait_rows(browser, "rows.length === 3")
    # ann and bob form a group: the monitor shows it.
    group = await bots[0][1].join_group()
    assert await bots[1][1].join_group() == group
    await browser.wait_until("() => document.querySelectorAll('#groups-summary .group li')"
                             ".length === 2")
    rows = await wait_rows(browser, "rows[0][4] !== '\\u2013' && rows[0][4] === rows[1][4]")
    await shot(browser, "05-monitor")

    # -- the batch session: an edit reaches the bots; a conflicting edit is re-applied ----
    ann = bots[0][1]
    await browser.goto(f"{batch_page}/session")
    await browser.wait_for("#live-status[data-state=live]")
    await browser.wait_text("#session-validity", "unchanged since version 0")
    await browser.fill("#session-editor", '{"condition": "B", "round": 1')
    await browser.wait_text("#session-validity", "Not valid")
    assert await browser.eval("() => document.getElementById('session-save').disabled")
    await browser.fill("#session-editor", '{"condition": "B", "round": 1}')
    await browser.wait_text("#session-validity", "2 changes to version 0")
    await browser.click("#session-save")
    await browser.wait_text("#session-notice", "Saved as version 1")
    await ann.wait_version(1)
    assert ann.data == {"condition": "B", "round": 1}

    # The experimenter edits while a participant changes the session meanwhile.
    await browser.fill("#session-editor", '{"condition": "C", "round": 1}')
    assert await ann.patch([{"op": "add", "path": "/extra", "value": 7}], version=1) == 2
    await browser.wait_text("#session-notice", "moved on to version 2")
    await browser.click("#session-save")
    await browser.wait_for("#session-conflict:not(.hidden)")
    await browser.wait_text("#conflict-current", '"extra": 7')
    await shot(browser, "06-session-conflict")
    await browser.click("#conflict-rebase")
    edited = json.loads(await browser.value("#session-editor"))
    assert edited == {"condition": "C", "round": 1, "extra": 7}
    await browser.click("#session-save")
    await browser.wait_text("#session-notice", "Saved as version 3")
    await ann.wait_version(3)
    assert ann.data == {"condition": "C", "round": 1, "extra": 7}
    await bots[1][1].wait_version(3)
    assert bots[1][1].data == ann.data
    # Groups with members and group session.
    await ann.patch([{"op": "add", "path": "/move", "value": "cooperate"}],
                    scope=f"group_session:{group}")
    await browser.wait_text("#groups .group pre", "cooperate")
    members = await browser.texts("#groups .group li")
    assert sorted(members) == ["ann", "bob"]
    await shot(browser, "07-session-and-groups")

    # -- the timeline ----------------------------------------------------------------------
    await browser.goto(f"{batch_page}/timeline")
    await browser.wait_for("#live-status[data-state=live]")
    replay = await browser.eval("() => JSON.parse(document.getElementById('console-config')"
                                ".textContent).features.replay")
    if not replay:
        # Without the replay API the page starts at its own opening: make history now.
        for value in ("D", "E"):
            await ann.patch([{"op": "replace", "path": "/condition", "value": value}])
    await browser.wait_until("() => Number(document.getElementById('scrubber').max) > 0")
    await browser.wait_for("#chart svg .bars rect")
    positions = await browser.eval(
        "() => { const s = document.getElementById('scrubber'); return Number(s.max); }")
    # Scrub to the first batch-session change we know of and read the state there.
    wanted = '"condition": "B"' if replay else '"condition": "D"'
    found = await browser.eval(
        """(wanted) => {
            const s = document.getElementById('scrubber');
            for (let i = 0; i <= Number(s.max); i++) {
              s.value = i; s.dispatchEvent(new Event('input'));
              const text = document.querySelector('#events li.current')?.innerText || '';
              if (text.includes('session patched') && text.includes('batch session')
                  && text.includes(wanted.split(': ')[1])) return i;
            }
            return -1;
        }""", wanted)
    assert found >= 0, "no batch-session change on the timeline"
    await browser.wait_text("#scope-state", wanted)
    await browser.wait_until("() => document.querySelector('#events li.current') !== null")
    await shot(browser, "08-timeline")
    # The end of the timeline shows the latest state.
    await browser.eval("(max) => { const s = document.getElementById('scrubber'); s.value = max;"
                       " s.dispatchEvent(new Event('input')); }", positions)
    await browser.wait_text("#scope-state", '"extra": 7')
    # Any scope: the group's session and a run, at the end of the timeline.
    await browser.select("#scope", f"group_session:{group}")
    await browser.wait_text("#scope-state", '"move": "cooperate"')
    run_scope = await browser.eval("() => [...document.querySelectorAll('#scope option')]"
                                   ".find(o => o.textContent === 'run: cyd').value")
    await browser.select("#scope", run_scope)
    await browser.wait_text("#scope-state", '"state": "finished"')

    # -- results and exports ---------------------------------------------------------------
    await browser.goto(f"{batch_page}/results")
    await browser.wait_until("() => document.querySelectorAll('#runs tbody tr').length === 3")
    results = await browser.eval("() => JSON.parse(document.getElementById('console-config')"
                                 ".textContent).features.results")
    if results:
        got = await browser.download("#export-wide-csv")
        wide = list(csv.DictReader(io.StringIO(downloaded(got))))
        assert len(wide) == 3
        await browser.wait_for("#payments-card table")
        await shot(browser, "09-results")
        # cyd's run: its results, then deleted (the confirm() is accepted).
        await browser.fill("#runs-filter", "cyd")
        await browser.click("#runs tbody tr button.view")
        await browser.wait_for("#run-detail p")
        if takes_results:
            await browser.wait_text("#run-detail pre", '"answer": 42')
            # A bonus set here is in the payments report.
            await browser.fill("#run-detail form.bonus input", "2.5")
            await browser.click("#run-detail form.bonus button")
            await browser.wait_text("#run-detail form.bonus span", "saved")
            await browser.wait_until("() => [...document.querySelectorAll('#payments-card tr')]"
                                     ".some(r => r.innerText.includes('cyd')"
                                     " && r.innerText.includes('2.5'))")
        await shot(browser, "10-run-results")
        await browser.click("#run-dialog button[value=close]")
        await browser.call("acceptDialogs")
        await browser.click("#runs tbody tr button.delete")
        await browser.wait_text("#results-notice", "Deleted the results")
    else:
        await browser.wait_text("#results-unavailable", "not available yet")
        got = await browser.download("#export-links")
        assert codes[0] in downloaded(got)
        await shot(browser, "09-results")

    # -- closing the batch for good ----------------------------------------------------------
    # ann and bob are still in: a dismissed confirm() posts nothing, a close without the
    # box is refused (the batch stays open), with the box it ends their runs.
    await browser.goto(batch_page)
    await browser.wait_for("#close-batch")
    await shot(browser, "11-overview-before-close")
    await browser.call("acceptDialogs", accept=False)
    await browser.click("#close-batch")
    await asyncio.sleep(0.5)
    assert (await browser.call("url")) == batch_page
    assert any(e["type"] == "dialog" and "for good" in e["text"]
               for e in await browser.logs())
    await browser.call("acceptDialogs")
    await browser.click("#close-batch")
    await browser.wait_text(".alert.error", "2 runs are still in progress")
    assert await browser.count("#active-switch") == 1
    assert await browser.count("h1 .badge.on") == 1
    await shot(browser, "12-close-refused")
    assert not bots[0][1].closed.done() and not bots[1][1].closed.done()
    await browser.check("#close-force")
    await browser.click("#close-batch")
    await browser.wait_text(".alert.ok", "closed for good")
    assert (await browser.text("h1 .badge.closed")).startswith("closed ")
    assert await browser.count("#active-switch") == 0
    assert await browser.count("#close-batch") == 0
    assert await browser.count("form.create-links") == 0
    assert "Closed on" in await browser.text("#closed-note")
    await shot(browser, "13-overview-closed")
    for person in (bots[0][1], bots[1][1]):
        assert await asyncio.wait_for(person.closed, 10) == (4410, "batch_closed")
    refused = await Browser(participant_url).enter(codes[2])
    assert refused.status_code == 410 and "batch_closed" in refused.text
    # Closing again is harmless; new links are refused.
    csrf = await browser.value("form.settings input[name=csrf]")
    answer = await browser.eval(
        """async ([path, csrf]) => { const r = await fetch(path, {method: 'POST',
        body: new URLSearchParams({csrf})}); return [r.status, r.url]; }""",
        [f"{batch_page}/close", csrf])
    assert answer[0] == 200 and answer[1].endswith("?ok=closed")
    answer = await browser.eval(
        """async ([path, csrf]) => { const r = await fetch(path, {method: 'POST',
        body: new URLSearchParams({csrf, type: 'general_multiple', count: '1'})});
        return [r.status, await r.text()]; }""", [f"{batch_page}/links", csrf])
    assert answer[0] == 409 and "takes no new links" in answer[1]
    await browser.goto(f"{console_url}/console/studies/{study}")
    assert (await browser.text("table.grid .badge.closed")).startswith("closed ")
    await shot(browser, "14-study-with-closed-batch")
    # The timeline stays.
    await browser.goto(f"{batch_page}/timeline")
    await browser.wait_until("() => Number(document.getElementById('scrubber').max) > 0")
    await shot(browser, "15-timeline-closed")

    # -- CSRF and logout ---------------------------------------------------------------------
    status = await browser.eval(
        """async (path) => (await fetch(path, {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify({ops: []})})).status""",
        f"/api/studies/{study}/batches/{batch}/session")
    assert status == 403, "a cookie-authenticated POST needs the CSRF header"
    status = await browser.eval(
        """async (path) => (await fetch(path, {method: 'POST', headers: {'Content-Type':
        'application/x-www-form-urlencoded'}, body: 'active=on'})).status""",
        f"/console/studies/{study}/batches/{batch}/active")
    assert status == 403, "a console form needs its CSRF field"
    await browser.click("header form button")
    await browser.wait_for("input[name=password]")
    again = await browser.goto(f"{console_url}/console")
    assert "/console/login" in again["url"]
    for _, channel in bots:
        await channel.close()


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


async def console_login(client: httpx.AsyncClient, username: str, password: str
                        ) -> httpx.Response:
    form = await client.get("/console/login")
    assert form.status_code == 200
    token = CSRF_FIELD.search(form.text)
    assert token is not None
    return await client.post("/console/login", data={
        "csrf": token.group(1), "username": username, "password": password,
        "next": "/console"})


async def test_console_sessions_csrf_and_logout(make_stack: Any) -> None:
    stack = make_stack(gateways=1, workers=1)
    [url] = stack.gateway_urls
    token = await asyncio.to_thread(add_user, stack, "cleo", PASSWORD)
    await asyncio.to_thread(add_user, stack, "dan", PASSWORD)
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as api:
        study = (await api.post("/api/studies", files={
            "file": ("three.zip", study_zip("uuid-console-http"))})).json()["study_id"]
        batch = (await api.post(f"/api/studies/{study}/batches", json={})).json()["id"]

    async with httpx.AsyncClient(base_url=url, timeout=30) as cleo:
        # Pages need a session; the login form needs its own token.
        page = await cleo.get(f"/console/studies/{study}")
        assert page.status_code == 303
        assert page.headers["location"] == f"/console/login?next=/console/studies/{study}"
        await cleo.get("/console/login")
        forged = await cleo.post("/console/login", data={
            "csrf": "forged", "username": "cleo", "password": PASSWORD})
        assert forged.status_code == 403 and "expired" in forged.text
        wrong = await console_login(cleo, "cleo", "wrong password!")
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        done = await console_login(cleo, "cleo", PASSWORD)
        assert done.status_code == 303 and done.headers["location"] == "/console"
        set_cookie = next(v for v in done.headers.get_list("set-cookie")
                          if v.startswith("cohort_console="))
        assert "HttpOnly" in set_cookie and "samesite=lax" in set_cookie.lower()
        assert "Path=/" in set_cookie
        cookie = cleo.cookies["cohort_console"]

        # The cookie authenticates the API; changes need the CSRF header.
        assert (await cleo.get("/api/me")).json()["username"] == "cleo"
        path = f"/api/studies/{study}/batches/{batch}/session"
        edit = {"ops": [{"op": "add", "path": "/x", "value": 1}], "version": 0}
        refused = await cleo.post(path, json=edit)
        assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
        page = await cleo.get(f"/console/studies/{study}/batches/{batch}/session")
        csrf = json.loads(re.search(r'id="console-config">(.*?)</script>', page.text)
                          .group(1))["csrf"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert (await cleo.post(path, json=edit, headers={"X-CSRF-Token": csrf})).status_code \
            == 200
        # Console forms need the token too.
        active = f"/console/studies/{study}/batches/{batch}/active"
        assert (await cleo.post(active, data={"active": "on"})).status_code == 403
        assert (await cleo.post(active, data={"active": "on", "csrf": csrf})).status_code == 303
        settings = f"/console/studies/{study}/batches/{batch}/settings"
        saved = await cleo.post(settings, data={
            "csrf": csrf, "label": "Wednesday", "max_total_participants": "5",
            "allowed_link_types": ["general_multiple", "preview"], "groups": "on",
            "max_active_members": "2", "json_input": '{"fee": 3}'})
        assert saved.status_code == 303 and saved.headers["location"].endswith("?ok=settings")
        batch_now = (await cleo.get(f"/api/studies/{study}/batches/{batch}")).json()
        assert batch_now["label"] == "Wednesday" and batch_now["max_total_participants"] == 5
        assert batch_now["allowed_link_types"] == ["general_multiple", "preview"]
        assert batch_now["group_settings"]["max_active_members"] == 2
        assert batch_now["json_input"] == {"fee": 3} and batch_now["active"]
        bad = await cleo.post(settings, data={"csrf": csrf, "allowed_link_types": "preview",
                                             "json_input": "{nope"})
        assert bad.status_code == 400 and "not JSON" in bad.text
        # A study imported through the console's form (a JATOS archive).
        imported = await cleo.post("/console/studies", data={"csrf": csrf}, files={
            "file": ("old.jzip", jatos_archive("uuid-console-jzip", "From JATOS"))})
        assert imported.status_code == 303, imported.text
        assert "ok=imported" in imported.headers["location"]
        listed = (await cleo.get("/console")).text
        assert "From JATOS" in listed and "Three steps" in listed

        # The console socket takes the cookie from the console's own origin only.
        ws_url = f"{url.replace('http', 'ws', 1)}/ws/console/{batch}"
        host = url.split("://", 1)[1]
        headers = {"Cookie": f"cohort_console={cookie}"}
        async with websockets.connect(ws_url, additional_headers=headers,
                                      origin=f"http://{host}") as socket:
            assert json.loads(await socket.recv())["type"] == "live"
        async with websockets.connect(ws_url, additional_headers=headers,
                                      origin="https://evil.example") as socket:
            assert json.loads(await socket.recv())["code"] == "forbidden"

        # A tampered cookie is no session.
        payload, mac = cookie.split(".")
        tampered = httpx.Cookies({"cohort_console": f"{payload}x.{mac}"})
        async with httpx.AsyncClient(base_url=url, cookies=tampered) as forger:
            assert (await forger.get("/api/me")).status_code == 401
            assert (await forger.get("/console")).status_code == 303

        # Closing for good: refused while a run is in progress (nothing changes), then
        # with the box ticked; afterwards no switching on, no new links, and closing
        # again is harmless.
        person = await join(stack, batch)
        close = f"/console/studies/{study}/batches/{batch}/close"
        overview_path = f"/console/studies/{study}/batches/{batch}"
        assert 'id="close-batch"' in (await cleo.get(overview_path)).text
        assert (await cleo.post(close, data={})).status_code == 403
        refused = await cleo.post(close, data={"csrf": csrf})
        assert refused.status_code == 409, refused.text
        assert "1 run is still in progress" in refused.text
        assert "also end runs still in progress" in refused.text
        assert "Traceback" not in refused.text
        assert (await cleo.get(f"/api/studies/{study}/batches/{batch}")).json()["active"]
        assert not person.closed.done()
        closed = await cleo.post(close, data={"csrf": csrf, "force": "on"})
        assert closed.status_code == 303 and closed.headers["location"].endswith("?ok=closed")
        assert await asyncio.wait_for(person.closed, 10) == (4410, "batch_closed")
        overview = (await cleo.get(closed.headers["location"])).text
        assert "closed for good" in overview and '<span class="badge closed">closed' in overview
        assert 'id="active-switch"' not in overview and 'id="close-batch"' not in overview
        assert "Closed on" in overview and 'id="links-closed"' in overview
        assert 'id="close"' not in overview
        again = await cleo.post(close, data={"csrf": csrf})
        assert again.status_code == 303 and again.headers["location"].endswith("?ok=closed")
        switched = await cleo.post(active, data={"active": "on", "csrf": csrf})
        assert switched.status_code == 409 and "closed for good" in switched.text
        links = await cleo.post(f"{overview_path}/links", data={
            "csrf": csrf, "type": "general_multiple", "count": "1"})
        assert links.status_code == 409 and "takes no new links" in links.text
        assert (await cleo.get(f"/api/studies/{study}/batches/{batch}/links")).json() == []
        after = (await cleo.get(f"/api/studies/{study}/batches/{batch}")).json()
        assert after["active"] is False and after["label"] == "Wednesday"
        assert '<span class="badge closed">closed' in (
            await cleo.get(f"/console/studies/{study}")).text
        await person.close()

        # Logging out ends the session everywhere, also for a copy of the cookie.
        assert (await cleo.post("/console/logout", data={})).status_code == 403
        out = await cleo.post("/console/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
        async with httpx.AsyncClient(base_url=url,
                                     cookies={"cohort_console": cookie}) as copy:
            assert (await copy.get("/api/me")).status_code == 401

    async with httpx.AsyncClient(base_url=url, timeout=30) as dan:
        assert (await console_login(dan, "dan", PASSWORD)).status_code == 303
        assert (await dan.get(f"/console/studies/{study}")).status_code == 403
        assert (await dan.get(f"/api/studies/{study}/batches/{batch}/live")).status_code == 403
        assert (await dan.get(f"/console/studies/{study}/batches/{batch}/monitor")
                ).status_code == 403

    # Failed logins are throttled per username and address.
    async with httpx.AsyncClient(base_url=url, timeout=30) as guess:
        for _ in range(10):
            assert (await console_login(guess, "dan", "not it at all")).status_code == 401
        assert (await console_login(guess, "dan", PASSWORD)).status_code == 429
