"""Result data, files, logs, bonuses, payoffs, exports and purges (gateway/results.py,
results_store/results.py, results_store/exports.py) through a litestar app on real
Postgres: the participant routes, the experimenter routes, and the batcher."""

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.experimenter import experimenter_routes
from gateway.results import close_results, results_export_routes, results_routes
from gateway.studycache import StudyCache
from gateway.tokens import TokenSigner
from results_store import results
from results_store.migrate import migrate
from results_store.results import Quotas, ResultWriter
from services.settings import Settings
from tests.results_support import Lab, make_lab, three_step_study

REPO = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer test-admin-token"}
TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"
QUOTAS = {"max_result_bytes_per_component": 20_000, "max_result_bytes_per_run": 60_000,
          "max_file_bytes": 30_000, "max_log_bytes_per_run": 2_000}


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The test's own pool (the app's pool lives on the test client's event loop)."""
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def client(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[AsyncTestClient]:
    app_settings = msgspec.structs.replace(settings, **QUOTAS)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app_pool = await asyncpg.create_pool(app_settings.database_url, min_size=1, max_size=4)
        app.state.update(pg=app_pool, settings=app_settings, studies=StudyCache(app_pool),
                         signer=TokenSigner(app_settings.secret, 3600))
        try:
            yield
        finally:
            await close_results(app)
            await app_pool.close()

    app = Litestar(route_handlers=[*results_routes, results_export_routes, experimenter_routes],
                   lifespan=[lifespan])
    async with AsyncTestClient(app) as test_client:
        yield test_client


def url(lab: Lab, i: int, what: str) -> str:
    return f"/r/{lab.keys[i]}/{what}"


def cid() -> dict[str, str]:
    return {"X-Cohort-Command-Id": uuid.uuid4().hex}


async def stored(pool: asyncpg.Pool, run: str, pos: int, round_: int = 1) -> bytes | None:
    return await pool.fetchval("SELECT data FROM component_results WHERE run_id = $1 AND "
                               "pos = $2 AND round = $3", run, pos, round_)


async def export(client: AsyncTestClient, lab: Lab, fmt: str) -> bytes:
    response = await client.get(
        f"/api/studies/{lab.study_id}/batches/{lab.batch_id}/export", params={"format": fmt},
        headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.content


def csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))


# ---------------------------------------------------------------------------
# Three participants through three components, one with three rounds


class Scenario(msgspec.Struct):
    lab: Lab
    data: dict[tuple[str, int, int], bytes]          # (run, pos, round) -> result data
    files: dict[tuple[str, int, str], bytes]         # (run, pos, filename) -> content
    bonus: dict[tuple[str, int, int], int]
    logs: dict[str, list[str]]


@pytest.fixture(scope="module")
async def scenario(client: AsyncTestClient, pool: asyncpg.Pool) -> Scenario:
    lab = await make_lab(pool, 3, secret=TEST_SECRET, preview=1)
    data: dict[tuple[str, int, int], bytes] = {}
    files: dict[tuple[str, int, str], bytes] = {}
    bonus: dict[tuple[str, int, int], int] = {}
    logs: dict[str, list[str]] = {}
    for i, run in enumerate(lab.runs[:3]):
        # Intro: replaced twice (submitResultData), a raw file upload, two log lines.
        first = await client.post(url(lab, i, "result-data"), params={"pos": 1},
                                  content=b"draft")
        assert first.status_code == 200, first.text
        intro = json.dumps({"consent": True, "age": 30 + i, "name": f"Ada {i}"}).encode()
        answer = await client.post(url(lab, i, "result-data"), params={"pos": 1},
                                   content=intro, headers=cid())
        assert answer.json() == {"stored": True, "pos": 1, "round": 1, "size": len(intro)}
        data[(run, 1, 1)] = intro
        notes = f"notes of participant {i}\n".encode() * 10
        up = await client.post(url(lab, i, "files/notes.txt"), params={"pos": 1},
                               content=notes, headers={"Content-Type": "text/plain"})
        assert up.status_code == 200, up.text
        files[(run, 1, "notes.txt")] = notes
        logs[run] = []
        for line in (f"participant {i} started", f"participant {i} read the intro"):
            assert (await client.post(url(lab, i, "log"), params={"pos": 1},
                                      content=line.encode())).status_code == 200
            logs[run].append(line)
        # Game, three rounds: an object per round (replace) and a bonus per round.
        for round_ in (1, 2, 3):
            body = json.dumps({"contribution": 10 * i + round_, "round": round_}).encode()
            response = await client.post(url(lab, i, "result-data"),
                                         params={"pos": 2, "round": round_}, content=body)
            assert response.status_code == 200, response.text
            data[(run, 2, round_)] = body
            points = 10 * (i + 1) + round_
            response = await client.post(url(lab, i, "bonus"), params={"pos": 2, "round": round_},
                                         json={"points": points})
            assert response.json()["points"] == points, response.text
            bonus[(run, 2, round_)] = points
        # Survey: JSON lines appended (appendResultData), and a multipart upload.
        lines = b""
        for trial in range(4):
            line = json.dumps({"trial": trial, "rt": 300 + 7 * trial + i}).encode() + b"\n"
            response = await client.post(url(lab, i, "result-data/append"), params={"pos": 3},
                                         content=line, headers=cid())
            assert response.status_code == 200, response.text
            lines += line
            assert response.json()["size"] == len(lines)
        data[(run, 3, 1)] = lines
        drawing = os.urandom(4000 + i)
        response = await client.post(url(lab, i, "files/drawing.png"), params={"pos": 3},
                                      files={"file": ("blob", drawing, "image/png")})
        assert response.status_code == 200, response.text
        files[(run, 3, "drawing.png")] = drawing
    # The preview run posts a bonus too (it is not in the payments report).
    assert (await client.post(url(lab, 3, "bonus"), params={"pos": 1},
                              json={"points": 999})).status_code == 200
    await results.mark_run_ended(pool, lab.runs[0], "finished")
    await results.mark_run_ended(pool, lab.runs[1], "failed", "timeout")
    return Scenario(lab=lab, data=data, files=files, bonus=bonus, logs=logs)



async def test_stored_as_submitted(scenario: Scenario, pool: asyncpg.Pool,
                                   client: AsyncTestClient) -> None:
    lab = scenario.lab
    for (run, pos, round_), expected in scenario.data.items():
        assert await stored(pool, run, pos, round_) == expected
    for i, run in enumerate(lab.runs[:3]):
        found = await results.get_run_results(pool, run)
        assert found is not None
        assert [(p.pos, p.round) for p in found.players] == [(1, 1), (2, 1), (2, 2), (2, 3),
                                                             (3, 1)]
        assert [p.component_id for p in found.players] == ["intro", "game", "game", "game",
                                                           "survey"]
        assert [line.line for line in found.log] == scenario.logs[run]
        files = {(f.pos, f.filename): f for p in found.players for f in p.files}
        assert files[(3, "drawing.png")].media_type == "image/png"
        assert files[(1, "notes.txt")].size == len(scenario.files[(run, 1, "notes.txt")])
        for (file_run, pos, name), content in scenario.files.items():
            if file_run != run:
                continue
            download = await client.get(url(lab, i, f"files/{name}"))
            assert download.status_code == 200 and download.content == content
            assert name in download.headers["content-disposition"]
            by_pos = await client.get(url(lab, i, f"files/{name}"), params={"pos": pos})
            assert by_pos.content == content
        missing = await client.get(url(lab, i, "files/nothing.txt"))
        assert missing.status_code == 404 and missing.json()["code"] == "file_not_found"
    assert (await pool.fetchval("SELECT end_state FROM runs WHERE id = $1", lab.runs[0])
            ) == "finished"


async def test_payoff_for_the_participant(scenario: Scenario, client: AsyncTestClient) -> None:
    lab = scenario.lab
    for i, run in enumerate(lab.runs[:3]):
        response = await client.get(url(lab, i, "payoff"))
        assert response.status_code == 200, response.text
        body = response.json()
        points = sum(v for (r, _, _), v in scenario.bonus.items() if r == run)
        assert body["bonus_points"] == points
        assert body["payoff"] == float(Decimal("2.5") + Decimal(points) * Decimal("0.01"))
        assert body["currency"] == "EUR" and body["participation_fee"] == 2.5
        assert [(p["pos"], p["round"], p["points"]) for p in body["players"]] == [
            (1, 1, None), (2, 1, 10 * (i + 1) + 1), (2, 2, 10 * (i + 1) + 2),
            (2, 3, 10 * (i + 1) + 3), (3, 1, None)]


async def test_jatos_results_archive(scenario: Scenario, client: AsyncTestClient,
                                     pool: asyncpg.Pool) -> None:
    lab = scenario.lab
    archive = zipfile.ZipFile(io.BytesIO(await export(client, lab, "jatos")))
    assert archive.testzip() is None
    names = archive.namelist()
    assert names[-1] == "metadata.json"
    ids = {r["id"]: r["result_id"] for r in await pool.fetch(
        "SELECT id, result_id FROM runs WHERE batch_id = $1", lab.batch_id)}
    players = {(r["run_id"], r["pos"], r["round"]): r["id"] for r in await pool.fetch(
        "SELECT c.run_id, c.pos, c.round, c.id FROM component_results c JOIN runs r "
        "ON r.id = c.run_id WHERE r.batch_id = $1", lab.batch_id)}
    for (run, pos, round_), expected in scenario.data.items():
        path = f"study_result_{ids[run]}/comp_result_{players[(run, pos, round_)]}/data.txt"
        assert archive.read(path) == expected
    for (run, pos, name), content in scenario.files.items():
        path = f"study_result_{ids[run]}/comp_result_{players[(run, pos, 1)]}/files/{name}"
        assert archive.read(path) == content
    data_entries = [n for n in names if n.endswith("/data.txt")]
    assert len(data_entries) == len(scenario.data)
    metadata = json.loads(archive.read("metadata.json"))
    assert metadata["apiVersion"] == "1.0.0"
    [study] = metadata["data"]
    assert (study["studyId"], study["studyTitle"]) == (lab.study_id, "Results study")
    assert study["studyUuid"] == lab.definition.uuid
    by_uuid = {r["uuid"]: r for r in study["studyResults"]}
    assert set(by_uuid) == set(lab.runs)
    first = by_uuid[lab.runs[0]]
    assert first["id"] == ids[lab.runs[0]] and first["studyState"] == "FINISHED"
    assert by_uuid[lab.runs[1]]["studyState"] == "FAIL"
    assert by_uuid[lab.runs[1]]["message"] == "timeout"
    assert by_uuid[lab.runs[2]]["studyState"] == "STARTED"
    assert by_uuid[lab.runs[3]]["workerType"] == "Jatos" and by_uuid[lab.runs[3]]["preview"]
    assert first["workerType"] == "PersonalSingle"
    assert first["urlQueryParameters"] == {"PROLIFIC_PID": "pid0"}
    assert first["batchId"] == lab.batch_id and first["batchTitle"] == "Tuesday 3 PM"
    assert isinstance(first["startDate"], int) and isinstance(first["endDate"], int)
    assert first["comment"] == lab.labels[0]
    components = first["componentResults"]
    assert [(c["componentPos"], c["round"], c["componentId"]) for c in components] == [
        (1, 1, "intro"), (2, 1, "game"), (2, 2, "game"), (2, 3, "game"), (3, 1, "survey")]
    for c in components:
        assert c["path"] == f"/study_result_{first['id']}/comp_result_{c['id']}"
        assert archive.getinfo(c["path"][1:] + "/data.txt").file_size == c["data"]["size"]
        assert c["componentState"] == "FINISHED"
    assert [f["filename"] for f in components[4]["files"]] == ["drawing.png"]
    assert components[1]["bonus"] == 11 and components[0]["bonus"] is None
    assert first["bonusPoints"] == 11 + 12 + 13
    assert first["payoff"] == pytest.approx(2.5 + 0.36)
    assert by_uuid[lab.runs[2]]["componentResults"][0]["componentState"] == "RESULTDATA_POSTED"


async def test_data_only_and_metadata_exports(scenario: Scenario, client: AsyncTestClient
                                             ) -> None:
    lab = scenario.lab
    text = await export(client, lab, "data")
    expected = b"".join(
        scenario.data[(run, pos, round_)] + b"\n"
        for run in lab.runs[:3]
        for pos, round_ in ((1, 1), (2, 1), (2, 2), (2, 3), (3, 1)))
    assert text == expected

    metadata = json.loads(await export(client, lab, "metadata-json"))
    archive_meta = json.loads(zipfile.ZipFile(io.BytesIO(await export(client, lab, "jatos")))
                              .read("metadata.json"))
    assert metadata == archive_meta

    rows = csv_rows(await export(client, lab, "metadata-csv"))
    assert len(rows) == 3 * 5 + 1       # the preview run: one player (its bonus)
    mine = [r for r in rows if r["run_id"] == lab.runs[0]]
    assert [(r["component_pos"], r["round"], r["component_id"], r["component_title"])
            for r in mine][1:4] == [("2", "1", "game", "Public goods"),
                                     ("2", "2", "game", "Public goods"),
                                     ("2", "3", "game", "Public goods")]
    assert {r["state"] for r in mine} == {"finished"}
    assert [r["bonus_points"] for r in mine] == ["", "11", "12", "13", ""]
    sizes = {(r["run_id"], int(r["component_pos"]), int(r["round"])): int(r["data_size"])
             for r in rows if r["run_id"] in lab.runs[:3]}
    assert sizes == {key: len(value) for key, value in scenario.data.items()}
    assert mine[4]["file_count"] == "1" and mine[0]["file_count"] == "1"
    assert json.loads(mine[0]["url_query"]) == {"PROLIFIC_PID": "pid0"}


async def test_wide_csv(scenario: Scenario, client: AsyncTestClient) -> None:
    lab = scenario.lab
    rows = csv_rows(await export(client, lab, "wide-csv"))
    assert [r["participant.code"] for r in rows] == lab.runs
    assert [r["participant.id_in_session"] for r in rows] == ["1", "2", "3", "4"]
    header = list(rows[0])
    assert header.index("session.config.treatment") < header.index("intro.1.player.payoff")
    assert header.index("game.3.player.contribution") < header.index("survey.1.player.payoff")
    for i, run in enumerate(lab.runs[:3]):
        row = rows[i]
        assert row["participant.label"] == lab.labels[i]
        assert row["session.code"] == lab.batch_id
        assert row["session.config.participation_fee"] == "2.5"
        assert row["session.config.real_world_currency_per_point"] == "0.01"
        assert row["session.config.treatment"] == "A"
        assert row["intro.1.player.age"] == str(30 + i)
        assert row["intro.1.player.consent"] == "true"
        assert row["intro.1.player.name"] == f"Ada {i}"
        for round_ in (1, 2, 3):
            assert row[f"game.{round_}.player.contribution"] == str(10 * i + round_)
            assert row[f"game.{round_}.player.round"] == str(round_)
            assert row[f"game.{round_}.player.payoff"] == str(10 * (i + 1) + round_)
        # Survey data are JSON lines, not an object: kept whole.
        assert row["survey.1.player.data"] == scenario.data[(run, 3, 1)].decode()
        points = sum(10 * (i + 1) + r for r in (1, 2, 3))
        assert row["participant.payoff"] == str(points)
        assert Decimal(row["participant.payoff_plus_participation_fee"]) == (
            Decimal("2.5") + Decimal(points) * Decimal("0.01"))
    assert "intro.1.player.data" not in header
    assert rows[3]["participant.preview"] == "true"


async def test_payments_report(scenario: Scenario, client: AsyncTestClient) -> None:
    lab = scenario.lab
    base = f"/api/studies/{lab.study_id}/batches/{lab.batch_id}/payments"
    report = (await client.get(base, headers=ADMIN)).json()
    rows = csv_rows((await client.get(base, params={"format": "csv"}, headers=ADMIN)).content)
    assert rows == csv_rows(await export(client, lab, "payments"))
    assert [p["run_id"] for p in report["payments"]] == lab.runs[:3]   # no preview run
    assert [r["run_id"] for r in rows] == lab.runs[:3]
    total = Decimal(0)
    for i, (payment, row) in enumerate(zip(report["payments"], rows, strict=True)):
        points = sum(10 * (i + 1) + r for r in (1, 2, 3))
        amount = Decimal("2.5") + Decimal(points) * Decimal("0.01")
        total += amount
        assert payment["bonus_points"] == points and row["bonus_points"] == str(points)
        assert Decimal(row["payoff"]) == amount and payment["payoff"] == float(amount)
        assert row["currency"] == payment["currency"] == "EUR"
        assert row["worker_id"] == payment["worker_id"] and row["label"] == lab.labels[i]
        assert row["participation_fee"] == "2.5"
    assert [r["state"] for r in rows] == ["finished", "failed", "started"]
    assert report["totals"] == [{"currency": "EUR", "payoff": float(total), "participants": 3}]


# ---------------------------------------------------------------------------
# Idempotency, batching, quotas, ended runs, purges


async def test_append_retried_concurrently_is_stored_once(client: AsyncTestClient,
                                                          pool: asyncpg.Pool) -> None:
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    await client.post(url(lab, 0, "result-data"), params={"pos": 3}, content=b"head\n")
    headers = {"X-Cohort-Command-Id": "append-1"}
    answers = await asyncio.gather(*(
        client.post(url(lab, 0, "result-data/append"), params={"pos": 3}, content=b"line\n",
                    headers=headers) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.json() == {"stored": True, "pos": 3, "round": 1, "size": 10} for a in answers)
    assert sum(a.headers.get("x-cohort-replayed") == "true" for a in answers) == 4
    assert await stored(pool, lab.runs[0], 3) == b"head\nline\n"
    # A later retry (another batch) is still stored once, and so is one through a
    # writer of another gateway (a second ResultWriter on its own pool).
    again = await client.post(url(lab, 0, "result-data/append"), params={"pos": 3},
                              content=b"line\n", headers=headers)
    assert again.json()["size"] == 10 and again.headers["x-cohort-replayed"] == "true"
    other = ResultWriter(pool, Quotas())
    replay = await asyncio.gather(*(other.write(lab.runs[0], 3, 1, "survey", b"line\n",
                                                append=True, command_id="append-1")
                                    for _ in range(5)))
    await other.close()
    assert all(r.replayed for r in replay)
    assert await stored(pool, lab.runs[0], 3) == b"head\nline\n"
    # The same key on a file upload, a log line and a bonus: once each.
    for what, params, body in (("files/a.txt", {"pos": 1}, b"abc"), ("log", {}, b"hello"),
                               ("bonus", {"pos": 2}, b'{"points": 3}')):
        key = {"X-Cohort-Command-Id": f"once-{what}"}
        done = await asyncio.gather(*(client.post(url(lab, 0, what), params=params,
                                                  content=body, headers=key)
                                      for _ in range(5)))
        assert [d.status_code for d in done] == [200] * 5
        assert len({d.text for d in done}) == 1
    assert await pool.fetchval("SELECT count(*) FROM run_logs WHERE run_id = $1",
                               lab.runs[0]) == 1


async def test_batched_and_acknowledged_after_commit(pool: asyncpg.Pool, database_url: str
                                                     ) -> None:
    lab = await make_lab(pool, 4, secret=TEST_SECRET)
    writer = ResultWriter(pool, Quotas(), max_batch=100)
    observer = await asyncpg.connect(database_url)
    observing = asyncio.Lock()
    checked = 0

    async def submit(n: int) -> None:
        nonlocal checked
        run = lab.runs[n % 4]
        body = f'{{"n": {n}}}\n'.encode()
        answer = await writer.write(run, 3, 1, "survey", body, append=True,
                                    command_id=f"c{n}")
        assert answer.body["stored"] is True
        # Acknowledged: another connection sees it committed.
        async with observing:
            data = await observer.fetchval("SELECT data FROM component_results WHERE "
                                           "run_id = $1 AND pos = 3", run)
        assert body in data
        checked += 1

    try:
        await asyncio.gather(*(submit(n) for n in range(400)))
    finally:
        await observer.close()
        await writer.close()
    assert checked == 400 and writer.writes == 400
    assert writer.batches < 100, "submissions were written in batches"
    for i, run in enumerate(lab.runs):
        data = await stored(pool, run, 3)
        assert sorted(data.splitlines()) == sorted(
            f'{{"n": {n}}}'.encode() for n in range(i, 400, 4))


async def test_quotas_store_nothing(client: AsyncTestClient, pool: asyncpg.Pool) -> None:
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    run = lab.runs[0]
    assert (await client.post(url(lab, 0, "result-data"), params={"pos": 1},
                              content=b"keep me")).status_code == 200

    async def refused(what: str, params: dict[str, Any], **body: Any) -> None:
        response = await client.post(url(lab, 0, what), params=params, **body)
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "quota_exceeded"

    # Per component (20,000 bytes): a replacement, and an append that would cross it.
    await refused("result-data", {"pos": 1}, content=b"x" * 20_001)
    assert await stored(pool, run, 1) == b"keep me"
    assert (await client.post(url(lab, 0, "result-data/append"), params={"pos": 1},
                              content=b"y" * 19_000)).status_code == 200
    await refused("result-data/append", {"pos": 1}, content=b"z" * 1_000,
                  headers={"X-Cohort-Command-Id": "too-much"})
    assert await stored(pool, run, 1) == b"keep me" + b"y" * 19_000
    # A refused write did not consume its idempotency key.
    assert await pool.fetchval("SELECT count(*) FROM result_commands WHERE run_id = $1",
                               run) == 0
    # Per run (60,000 bytes of data and files together).
    for round_ in (1, 2):
        assert (await client.post(url(lab, 0, "result-data"), params={"pos": 2, "round": round_},
                                  content=b"r" * 19_000)).status_code == 200
    await refused("result-data", {"pos": 2, "round": 3}, content=b"r" * 5_000)
    assert await stored(pool, run, 2, 3) is None
    await refused("files/big.bin", {"pos": 3}, content=b"f" * 5_000)
    # A file over the file limit (30,000), raw and multipart.
    lab2 = await make_lab(pool, 1, secret=TEST_SECRET)
    for body in ({"content": b"f" * 30_001},
                 {"files": {"file": ("big.bin", b"f" * 30_001, "application/octet-stream")}}):
        response = await client.post(url(lab2, 0, "files/big.bin"), params={"pos": 3}, **body)
        assert response.status_code == 413 and response.json()["code"] == "quota_exceeded"
    assert await pool.fetchval("SELECT count(*) FROM result_files f JOIN component_results c "
                               "ON c.id = f.component_result_id WHERE c.run_id = ANY($1)",
                               [run, lab2.runs[0]]) == 0
    # The log (2,000 bytes per run).
    assert (await client.post(url(lab2, 0, "log"), content=b"l" * 1_500)).status_code == 200
    response = await client.post(url(lab2, 0, "log"), content=b"l" * 600)
    assert response.status_code == 413 and response.json()["code"] == "quota_exceeded"
    assert await pool.fetchval("SELECT count(*) FROM run_logs WHERE run_id = $1",
                               lab2.runs[0]) == 1
    # Over quota inside one batch: the others of the batch are stored.
    writer = ResultWriter(pool, Quotas(per_component=100, per_run=1000))
    outcomes = await asyncio.gather(
        writer.write(lab2.runs[0], 1, 1, "intro", b"a" * 60, append=True),
        writer.write(lab2.runs[0], 1, 1, "intro", b"b" * 60, append=True),
        writer.write(lab2.runs[0], 1, 1, "intro", b"c" * 30, append=True),
        return_exceptions=True)
    await writer.close()
    assert isinstance(outcomes[1], results.ResultError) and outcomes[1].code == "quota_exceeded"
    assert await stored(pool, lab2.runs[0], 1) == b"a" * 60 + b"c" * 30


async def test_bad_requests(client: AsyncTestClient, pool: asyncpg.Pool) -> None:
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    forged = await client.post("/r/not-a-key/result-data", params={"pos": 1}, content=b"x")
    assert forged.status_code == 403 and forged.json()["code"] == "forbidden"
    cases = [("result-data", {"pos": 4}, 404, "component_not_found"),
             ("result-data", {"pos": 0}, 404, "component_not_found"),
             ("result-data", {"pos": 1, "round": 2}, 400, "bad_round"),
             ("result-data", {"pos": 2, "round": 4}, 400, "bad_round"),
             ("files/a%5Cb", {"pos": 1}, 400, "bad_filename"),
             ("files/%20x", {"pos": 1}, 400, "bad_filename"),
             ("bonus", {"pos": 2}, 400, "bad_bonus")]
    for what, params, status, code in cases:
        response = await client.post(url(lab, 0, what), params=params,
                                     content=b'{"points": "lots"}')
        assert (response.status_code, response.json()["code"]) == (status, code), what
    too_big = await client.post(url(lab, 0, "bonus"), params={"pos": 2},
                                json={"points": 1001})          # max_bonus_points = 1000
    assert too_big.status_code == 400 and too_big.json()["code"] == "bad_bonus"
    assert await pool.fetchval("SELECT count(*) FROM component_results WHERE run_id = $1",
                               lab.runs[0]) == 0
    # A run made without a study (an API ticket) has nowhere to store results.
    ticket = TokenSigner(TEST_SECRET, 60).issue("no-such-run", lab.batch_id)
    response = await client.post(f"/r/{ticket}/result-data", params={"pos": 1}, content=b"x")
    assert response.status_code == 404


async def test_bonus_set_by_experimenter_only(client: AsyncTestClient, pool: asyncpg.Pool
                                              ) -> None:
    definition = three_step_study(custom={"participant_bonus": False})
    lab = await make_lab(pool, 1, secret=TEST_SECRET, definition=definition)
    response = await client.post(url(lab, 0, "bonus"), params={"pos": 2}, json={"points": 5})
    assert response.status_code == 403 and response.json()["code"] == "bonus_not_allowed"
    await results.mark_run_ended(pool, lab.runs[0], "finished")
    put = f"/api/studies/{lab.study_id}/batches/{lab.batch_id}/runs/{lab.runs[0]}/bonus"
    response = await client.put(put, json={"pos": 2, "round": 3, "points": 7.25}, headers=ADMIN)
    assert response.status_code == 200, response.text
    payoff = (await client.get(url(lab, 0, "payoff"))).json()
    assert payoff["bonus_points"] == 7.25 and payoff["payoff"] == 2.57   # 2.5 + 0.0725
    assert payoff["state"] == "finished"
    bad = await client.put(put, json={"pos": 2, "round": 9, "points": 1}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["code"] == "bad_round"
    assert (await client.put(put, json={"pos": 2, "points": 1})).status_code == 401


async def test_ended_runs_take_no_writes(client: AsyncTestClient, pool: asyncpg.Pool) -> None:
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    assert (await client.post(url(lab, 0, "result-data"), params={"pos": 1},
                              content=b"before")).status_code == 200
    assert await results.mark_run_ended(pool, lab.runs[0], "finished")
    assert not await results.mark_run_ended(pool, lab.runs[0], "failed")   # first end wins
    for what, params in (("result-data", {"pos": 1}), ("result-data/append", {"pos": 1}),
                         ("files/x.txt", {"pos": 1}), ("log", {}), ("bonus", {"pos": 1})):
        response = await client.post(url(lab, 0, what), params=params, content=b'{"points":1}')
        assert response.status_code == 409 and response.json()["code"] == "run_ended", what
    assert await stored(pool, lab.runs[0], 1) == b"before"


async def test_abort_purge_and_experimenter_delete(client: AsyncTestClient, pool: asyncpg.Pool
                                                   ) -> None:
    lab = await make_lab(pool, 2, secret=TEST_SECRET)
    for i in range(2):
        await client.post(url(lab, i, "result-data"), params={"pos": 1}, content=b"secret")
        await client.post(url(lab, i, "result-data/append"), params={"pos": 3}, content=b"a\n")
        await client.post(url(lab, i, "files/f.txt"), params={"pos": 3}, content=b"file")
        await client.post(url(lab, i, "log"), content=b"a line")
        await client.post(url(lab, i, "bonus"), params={"pos": 2}, json={"points": 4})
    # The abort route: purge and end in one transaction.
    purged = await results.purge_run(pool, lab.runs[0], end_state="aborted", message="bye")
    assert (purged.found, purged.players, purged.files, purged.log_lines, purged.ended) == (
        True, 2, 1, 1, True)
    # The experimenter's delete (the run stays live).
    route = f"/api/studies/{lab.study_id}/batches/{lab.batch_id}/runs/{lab.runs[1]}/results"
    response = await client.delete(route, headers=ADMIN)
    assert response.status_code == 200 and response.json()["players"] == 2
    for run in lab.runs:
        assert await pool.fetchval("SELECT count(*) FROM component_results WHERE run_id = $1 "
                                   "AND (data IS NOT NULL OR file_count > 0)", run) == 0
        assert await pool.fetchval("SELECT count(*) FROM run_logs WHERE run_id = $1", run) == 0
        found = await results.get_run_results(pool, run)
        assert [(p.pos, p.round, p.data, p.files, p.bonus) for p in found.players] == [
            (1, 1, None, [], None), (2, 1, None, [], 4), (3, 1, None, [], None)]
        assert all(p.purged_at is not None for p in found.players if p.pos != 2)
    assert await pool.fetchval("SELECT end_state FROM runs WHERE id = $1", lab.runs[0]
                               ) == "aborted"
    # The aborted run takes no more writes; the deleted-but-live one does.
    assert (await client.post(url(lab, 0, "result-data"), params={"pos": 1},
                              content=b"x")).status_code == 409
    assert (await client.post(url(lab, 1, "result-data"), params={"pos": 1},
                              content=b"new")).status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(await export(client, lab, "jatos")))
    assert [n for n in archive.namelist() if "/files/" in n] == []
    assert [archive.read(n) for n in archive.namelist() if n.endswith("data.txt")] == [b"new"]
    meta = json.loads(archive.read("metadata.json"))["data"][0]["studyResults"]
    assert meta[0]["studyState"] == "ABORTED" and meta[0]["componentResults"][0]["purged"]
    # Unknown runs and runs of another batch.
    other = await make_lab(pool, 1, secret=TEST_SECRET)
    wrong = f"/api/studies/{lab.study_id}/batches/{lab.batch_id}/runs/{other.runs[0]}/results"
    response = await client.delete(wrong, headers=ADMIN)
    assert response.status_code == 404 and response.json()["code"] == "run_not_found"
    assert not (await results.purge_run(pool, "no-such-run")).found


async def test_export_access_and_errors(client: AsyncTestClient, pool: asyncpg.Pool) -> None:
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    base = f"/api/studies/{lab.study_id}/batches/{lab.batch_id}"
    assert (await client.get(base + "/export")).status_code == 401
    response = await client.post("/api/accounts", headers=ADMIN,
                                 json={"username": f"eve-{uuid.uuid4().hex[:6]}"})
    eve = {"Authorization": f"Bearer {response.json()['token']}"}
    response = await client.get(base + "/export", headers=eve)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    response = await client.get(base + "/export", params={"format": "xlsx"}, headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "bad_format"
    response = await client.get(f"/api/studies/{lab.study_id}/batches/nope/export",
                                headers=ADMIN)
    assert response.status_code == 404 and response.json()["code"] == "batch_not_found"
    response = await client.get(base + "/export", params={"format": "jatos"}, headers=ADMIN)
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith(
        'attachment; filename="jatos_results_')
    # An empty batch exports valid, empty files.
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    meta = json.loads(archive.read("metadata.json"))
    assert [len(r["componentResults"]) for r in meta["data"][0]["studyResults"]] == [0]
    run = (await client.get(base + f"/runs/{lab.runs[0]}/results", headers=ADMIN)).json()
    assert run["run_id"] == lab.runs[0] and run["players"] == [] and run["state"] == "started"


async def test_file_names_and_log_bodies(client: AsyncTestClient, pool: asyncpg.Pool) -> None:
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    name = "résumé 1 (final).txt"
    quoted = "r%C3%A9sum%C3%A9%201%20%28final%29.txt"
    response = await client.post(url(lab, 0, f"files/{quoted}"), params={"pos": 1},
                                 files={"upload": ("other-name.bin", b"v1", "text/plain")})
    assert response.status_code == 200 and response.json()["filename"] == name
    response = await client.post(url(lab, 0, f"files/{quoted}"), params={"pos": 1},
                                 content=b"v2", headers={"Content-Type": "text/plain"})
    assert response.status_code == 200          # the same name again replaces the file
    download = await client.get(url(lab, 0, f"files/{quoted}"))
    assert download.content == b"v2" and download.headers["content-type"].startswith(
        "text/plain")
    assert f"filename*=UTF-8''{quoted}" in download.headers["content-disposition"]
    assert await pool.fetchval("SELECT file_count FROM component_results WHERE run_id = $1",
                               lab.runs[0]) == 1
    for body, headers in ((b"plain line", {}),
                          (b'"a JSON string"', {"Content-Type": "application/json"}),
                          (b'{"message": "a message"}', {"Content-Type": "application/json"}),
                          (b'{"other": 1}', {"Content-Type": "application/json"})):
        assert (await client.post(url(lab, 0, "log"), content=body,
                                  headers=headers)).status_code == 200
    lines = [r["line"] for r in await pool.fetch(
        "SELECT line FROM run_logs WHERE run_id = $1 ORDER BY id", lab.runs[0])]
    assert lines == ["plain line", "a JSON string", "a message", '{"other":1}']


async def test_quota_exact_across_gateways(pool: asyncpg.Pool) -> None:
    """Two gateways' writers appending to one player at once never pass the quota."""
    lab = await make_lab(pool, 1, secret=TEST_SECRET)
    quotas = Quotas(per_component=1000, per_run=10_000)
    writers = [ResultWriter(pool, quotas, max_batch=7), ResultWriter(pool, quotas, max_batch=5)]
    outcomes = await asyncio.gather(*(
        writers[n % 2].write(lab.runs[0], 3, 1, "survey", b"%02d" % n + b"." * 98, append=True)
        for n in range(30)), return_exceptions=True)
    for writer in writers:
        await writer.close()
    stored_ok = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, results.ResultError)]
    assert len(stored_ok) == 10 and len(refused) == 20
    assert {o.code for o in refused} == {"quota_exceeded"}
    data = await stored(pool, lab.runs[0], 3)
    assert len(data) == 1000 and sorted(o.body["size"] for o in stored_ok) == list(
        range(100, 1001, 100))


def test_cli_export(scenario: Scenario, database_url: str, tmp_path: Path,
                    settings: Settings) -> None:
    lab = scenario.lab
    env = {**os.environ, "COHORT_DATABASE_URL": database_url, "COHORT_LOG_LEVEL": "warning"}

    def cohort(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli", "export", *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                              check=False)

    out = tmp_path / "payments.csv"
    done = cohort(lab.batch_id, "--format", "payments", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr and "4/4 runs" in done.stderr
    rows = csv_rows(out.read_bytes())
    assert [r["run_id"] for r in rows] == lab.runs[:3]
    archive_path = tmp_path / "results.zip"
    assert cohort(lab.batch_id, "-o", str(archive_path), "--no-progress").returncode == 0
    with zipfile.ZipFile(archive_path) as archive:
        meta = json.loads(archive.read("metadata.json"))
        assert {r["uuid"] for r in meta["data"][0]["studyResults"]} == set(lab.runs)
        assert sum(n.endswith("/data.txt") for n in archive.namelist()) == len(scenario.data)
    stdout = cohort(lab.batch_id, "--format", "data", "-o", "-", "--no-progress")
    assert stdout.returncode == 0
    assert stdout.stdout.encode() == b"".join(
        scenario.data[(run, pos, round_)] + b"\n" for run in lab.runs[:3]
        for pos, round_ in ((1, 1), (2, 1), (2, 2), (2, 3), (3, 1)))
    missing = cohort("no-such-batch", "-o", str(tmp_path / "x.zip"))
    assert missing.returncode == 1 and "batch_not_found" in missing.stderr
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "x.zip.partial").exists()


async def test_one_bad_write_does_not_fail_its_batch(pool: asyncpg.Pool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    lab = await make_lab(pool, 2, secret=TEST_SECRET)
    writer = ResultWriter(pool, Quotas())
    # Position 0 breaks a CHECK in Postgres: the batch is retried write by write.
    outcomes = await asyncio.gather(
        writer.write(lab.runs[0], 1, 1, "intro", b"good 1", append=False),
        writer.write(lab.runs[0], 0, 1, "intro", b"bad", append=False),
        writer.write(lab.runs[1], 1, 1, "intro", b"good 2", append=False),
        return_exceptions=True)
    assert isinstance(outcomes[1], results.ResultError) and outcomes[1].status == 500
    assert [o.body["stored"] for o in (outcomes[0], outcomes[2])] == [True, True]
    assert await stored(pool, lab.runs[0], 1) == b"good 1"
    assert await stored(pool, lab.runs[1], 1) == b"good 2"
    # A lost connection: the outcome is unknown, so 503, and the writer goes on with
    # another connection; the client's retry with the same key is stored once.
    original = ResultWriter._write_batch
    calls = 0

    async def flaky(self: ResultWriter, conn: asyncpg.Connection, batch: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await original(self, conn, batch)
            raise ConnectionResetError("lost after the commit")
        return await original(self, conn, batch)

    monkeypatch.setattr(ResultWriter, "_write_batch", flaky)
    with pytest.raises(results.ResultError) as lost:
        await writer.write(lab.runs[1], 3, 1, "survey", b"once\n", append=True,
                           command_id="retry-me")
    assert lost.value.status == 503 and lost.value.code == "store_unavailable"
    again = await writer.write(lab.runs[1], 3, 1, "survey", b"once\n", append=True,
                               command_id="retry-me")
    assert again.replayed and await stored(pool, lab.runs[1], 3) == b"once\n"
    await writer.close()
