"""Result data, files, bonuses and exports end to end: a real stack (gateway and worker
processes, Redis, Postgres), a study uploaded through the API, three participants
through three components (one with three rounds) in their browsers, then every
export format parsed back, from the API and from ``cohort export``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.stack import REPO, Stack
from tests.e2e.test_study_flow import Browser, Experimenter

pytestmark = pytest.mark.e2e

PAGE = "<!doctype html><title>{name}</title><script src='jatos.js'></script><p>{name}</p>"
STUDY_TOML = """
title = "Public goods with results"
uuid = "{uuid}"

[session_config]
participation_fee = 1.5
real_world_currency_per_point = 0.05
currency = "GBP"
endowment = 20

[[components]]
id = "consent"
title = "Consent"
html_file = "consent.html"

[[components]]
id = "pgg"
title = "Contribute"
html_file = "pgg.html"
rounds = 3

[[components]]
id = "survey"
title = "Survey"
html_file = "survey.html"
"""


def study_zip(study_uuid: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pgg/study.toml", STUDY_TOML.format(uuid=study_uuid))
        for name in ("consent", "pgg", "survey"):
            archive.writestr(f"pgg/{name}.html", PAGE.format(name=name))
    return buffer.getvalue()


@pytest.fixture
def results_stack(make_stack: Any) -> Stack:
    return make_stack(gateways=2, workers=1)


async def participate(browser: Browser, i: int) -> dict[str, Any]:
    """One participant's whole run; answers what it submitted."""
    sent: dict[str, Any] = {"data": {}, "files": {}, "bonus": {}}
    init = await browser.init()
    assert init["componentPos"] == 1
    sent["run"] = init["studyResultId"]
    key = browser.key

    async def post(what: str, params: dict[str, Any], **body: Any) -> dict[str, Any]:
        response = await browser.http.post(f"/r/{key}/{what}", params=params, **body)
        assert response.status_code == 200, response.text
        return response.json()

    consent = json.dumps({"consent": True, "participant": i}).encode()
    await post("result-data", {"pos": 1}, content=consent)
    sent["data"][(1, 1)] = consent
    await post("log", {"pos": 1}, content=f"participant {i} consented".encode())

    assert (await browser.open(2, "pgg.html")).status_code == 200
    for round_ in (1, 2, 3):
        body = json.dumps({"contribution": 5 * i + round_, "round": round_}).encode()
        await post("result-data", {"pos": 2, "round": round_}, content=body)
        sent["data"][(2, round_)] = body
        points = 10 + 5 * i + round_
        await post("bonus", {"pos": 2, "round": round_}, json={"points": points})
        sent["bonus"][(2, round_)] = points

    assert (await browser.open(3, "survey.html")).status_code == 200
    lines = b""
    for trial in range(3):
        line = json.dumps({"trial": trial, "answer": f"a{i}{trial}"}).encode() + b"\n"
        command = {"X-Cohort-Command-Id": f"append-{trial}-{uuid.uuid4().hex}"}
        # A flaky network: the page retries each append five times at once.
        answers = await asyncio.gather(*(
            browser.http.post(f"/r/{key}/result-data/append", params={"pos": 3}, content=line,
                              headers=command) for _ in range(5)))
        lines += line
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["size"] for a in answers} == {len(lines)}
    sent["data"][(3, 1)] = lines
    picture = os.urandom(3000 + i)
    await post("files/picture.png", {"pos": 3}, files={"file": ("picture.png", picture,
                                                                 "image/png")})
    sent["files"][(3, "picture.png")] = picture
    download = await browser.http.get(f"/r/{key}/files/picture.png")
    assert download.status_code == 200 and download.content == picture
    payoff = (await browser.http.get(f"/r/{key}/payoff")).json()
    points = sum(sent["bonus"].values())
    assert payoff["bonus_points"] == points and payoff["currency"] == "GBP"
    assert payoff["payoff"] == pytest.approx(1.5 + points * 0.05)
    sent["points"] = points
    return sent


async def test_three_participants_results_and_exports(results_stack: Stack) -> None:
    stack = results_stack
    lab = Experimenter(stack)
    study = (await lab.upload("pgg.zip", study_zip(f"pgg-{uuid.uuid4()}")))["study_id"]
    batch = (await lab.batch(study, label="Thursday"))["id"]
    codes = await lab.links(study, batch, "personal_single", 3)
    browsers = [Browser(stack.gateway_urls[1]) for _ in range(3)]
    for browser, code in zip(browsers, codes, strict=True):
        assert (await browser.enter(code)).status_code == 302
    sent = await asyncio.gather(*(participate(b, i) for i, b in enumerate(browsers)))
    for browser in browsers[:2]:
        assert (await browser.post("end", {"successful": True})).status_code == 200

    async def export(fmt: str) -> bytes:
        response = await lab.client.get(f"/api/studies/{study}/batches/{batch}/export",
                                        params={"format": fmt})
        assert response.status_code == 200, response.text
        return response.content

    pool = await asyncpg.create_pool(stack.env["COHORT_DATABASE_URL"], min_size=1, max_size=2)
    try:
        runs = [r["id"] for r in await pool.fetch(
            "SELECT id FROM runs WHERE batch_id = $1 ORDER BY result_id", batch)]
    finally:
        await pool.close()
    by_run = {submitted["run"]: submitted for submitted in sent}
    assert set(by_run) == set(runs)

    # The JATOS results archive.
    archive = zipfile.ZipFile(io.BytesIO(await export("jatos")))
    meta = json.loads(archive.read("metadata.json"))["data"][0]
    assert meta["studyId"] == study and len(meta["studyResults"]) == 3
    for result in meta["studyResults"]:
        submitted = by_run[result["uuid"]]
        assert result["bonusPoints"] == submitted["points"]
        got = {}
        for component in result["componentResults"]:
            base = component["path"].lstrip("/")
            got[(component["componentPos"], component["round"])] = archive.read(
                base + "/data.txt")
            for found in component["files"]:
                assert archive.read(f"{base}/files/{found['filename']}") == \
                    submitted["files"][(component["componentPos"], found["filename"])]
        assert got == submitted["data"]
    # Data only: every player's data, one after the other in run order.
    assert await export("data") == b"".join(
        by_run[run]["data"][key] + b"\n" for run in runs
        for key in ((1, 1), (2, 1), (2, 2), (2, 3), (3, 1)))
    assert json.loads(await export("metadata-json"))["data"][0] == meta
    rows = list(csv.DictReader(io.StringIO((await export("metadata-csv")).decode("utf-8-sig"))))
    assert len(rows) == 15 and {r["component_title"] for r in rows} == {
        "Consent", "Contribute", "Survey"}
    wide = list(csv.DictReader(io.StringIO((await export("wide-csv")).decode("utf-8-sig"))))
    assert [w["participant.code"] for w in wide] == runs
    for row in wide:
        submitted = by_run[row["participant.code"]]
        for round_ in (1, 2, 3):
            expected = json.loads(submitted["data"][(2, round_)])["contribution"]
            assert row[f"pgg.{round_}.player.contribution"] == str(expected)
        assert row["survey.1.player.data"] == submitted["data"][(3, 1)].decode()
        assert row["session.config.endowment"] == "20"
    payments = json.loads(await export("payments-json"))
    assert {p["run_id"]: p["bonus_points"] for p in payments["payments"]} == {
        run: by_run[run]["points"] for run in runs}
    assert payments["totals"][0]["currency"] == "GBP"

    # The same export from the command line, with its progress bar.
    out = Path(stack.log_dir) / "wide.csv"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.cli", "export", batch, "--format",
                         "wide-csv", "-o", str(out)], cwd=REPO, env=stack.env,
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr and "3/3 runs" in done.stderr
    assert list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig")))) == wide


async def test_end_and_abort_through_the_stack(results_stack: Stack) -> None:
    stack = results_stack
    lab = Experimenter(stack)
    study = (await lab.upload("pgg.zip", study_zip(f"pgg-{uuid.uuid4()}")))["study_id"]
    batch = (await lab.batch(study))["id"]
    codes = await lab.links(study, batch, "personal_single", 2)
    finisher, quitter = Browser(stack.gateway_urls[0]), Browser(stack.gateway_urls[1])
    for browser, code in ((finisher, codes[0]), (quitter, codes[1])):
        await browser.enter(code)
        await browser.init()
        response = await browser.http.post(f"/r/{browser.key}/result-data", params={"pos": 1},
                                           content=b"private")
        assert response.status_code == 200
    assert (await finisher.post("end", {"successful": True})).status_code == 200
    assert (await quitter.post("abort", {"message": "no"})).status_code == 200
    late = await quitter.http.post(f"/r/{quitter.key}/result-data", params={"pos": 1},
                                   content=b"late")
    assert late.status_code == 409 and late.json()["code"] == "run_ended"
    meta = json.loads(zipfile.ZipFile(io.BytesIO((await lab.client.get(
        f"/api/studies/{study}/batches/{batch}/export")).content)).read("metadata.json"))
    states = sorted(r["studyState"] for r in meta["data"][0]["studyResults"])
    assert states == ["ABORTED", "FINISHED"]
    aborted = next(r for r in meta["data"][0]["studyResults"] if r["studyState"] == "ABORTED")
    assert aborted["componentResults"][0]["data"]["size"] == 0
