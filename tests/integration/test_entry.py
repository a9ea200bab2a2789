"""Batches, links and the entry transaction: every link type's rules and the limits
under concurrent entries (real Postgres)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from msgspec import UNSET

from results_store import accounts, catalog
from results_store.catalog import BatchUpdate, CatalogError, Entered, EntryRefused, enter
from results_store.definition import BatchDefaults, Component, GroupSettings, StudyDefinition
from results_store.migrate import migrate
from results_store.studies import store_study


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=20)
    yield pool
    await pool.close()


def definition(study_uuid: str, title: str = "Entry test", **extra: object) -> StudyDefinition:
    return StudyDefinition(uuid=study_uuid, title=title, components=[
        Component(id="c1", title="One", html_file="index.html")], **extra)


@pytest.fixture
async def study(pool: asyncpg.Pool) -> str:
    stored = await store_study(pool, definition(str(uuid.uuid4())), {"index.html": b"x"}, None)
    return stored.study_id


async def new_batch(pool: asyncpg.Pool, study: str, **settings: object) -> str:
    return (await catalog.create_batch(pool, study, **settings)).id


async def link(pool: asyncpg.Pool, batch_id: str, link_type: str, **options: object
               ) -> catalog.Link:
    return (await catalog.create_links(pool, batch_id, link_type, **options))[0]


async def refused(code: str, *args: object, **kwargs: object) -> EntryRefused:
    with pytest.raises(EntryRefused) as caught:
        await enter(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


async def run_count(pool: asyncpg.Pool, batch_id: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM runs WHERE batch_id = $1", batch_id)


# ---------------------------------------------------------------------------
# Link types


async def test_personal_single_enters_once(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    personal = await link(pool, batch_id, "personal_single", labels=["P-001"])
    assert personal.worker_id and personal.used_at is None
    entered = await enter(pool, personal.code, {"PROLIFIC_PID": "abc"})
    assert isinstance(entered, Entered)
    assert (entered.batch_id, entered.study_id, entered.study_version) == (batch_id, study, 1)
    assert (entered.link_type, entered.worker_id, entered.label, entered.preview) == (
        "personal_single", personal.worker_id, "P-001", False)
    assert entered.url_query == {"PROLIFIC_PID": "abc"} and entered.link_code == personal.code
    assert (await catalog.get_link(pool, personal.code)).used_at is not None
    await refused("link_used", pool, personal.code, {})
    run = await catalog.get_run(pool, entered.run_id)
    assert (run.worker_id, run.label, run.url_query, run.study_version) == (
        personal.worker_id, "P-001", {"PROLIFIC_PID": "abc"}, 1)
    assert await run_count(pool, batch_id) == 1


async def test_personal_multiple_keeps_one_worker(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    personal = await link(pool, batch_id, "personal_multiple", labels=["Lab PC 3"])
    runs = [await enter(pool, personal.code, {}) for _ in range(3)]
    assert len({r.run_id for r in runs}) == 3
    assert {r.worker_id for r in runs} == {personal.worker_id}
    assert {r.label for r in runs} == {"Lab PC 3"}
    # An explicit label wins over the link's.
    assert (await enter(pool, personal.code, {}, label="override")).label == "override"


async def test_general_single_once_per_browser(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    general = await link(pool, batch_id, "general_single")
    assert general.worker_id is None
    first = await enter(pool, general.code, {})
    second = await enter(pool, general.code, {})  # another browser
    assert first.worker_id != second.worker_id and first.label is None
    await refused("already_participated", pool, general.code, {}, browser_has_run=True)
    assert await run_count(pool, batch_id) == 2


async def test_general_multiple_new_worker_per_run(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    general = await link(pool, batch_id, "general_multiple")
    runs = [await enter(pool, general.code, {}, browser_has_run=True) for _ in range(4)]
    assert len({r.worker_id for r in runs}) == 4


@pytest.mark.parametrize("link_type", ["mturk", "mturk_sandbox"])
async def test_mturk_one_run_per_worker_id(pool: asyncpg.Pool, study: str,
                                           link_type: str) -> None:
    batch_id = await new_batch(pool, study)
    mturk = await link(pool, batch_id, link_type)
    query = {"workerId": "A1B2C3", "assignmentId": "X", "hitId": "H"}
    first = await enter(pool, mturk.code, query)
    assert first.worker_id == f"{link_type}:A1B2C3" and first.url_query == query
    await refused("already_participated", pool, mturk.code, query)
    await refused("already_participated", pool, mturk.code, {"workerId": "A1B2C3"})
    assert (await enter(pool, mturk.code, {"workerId": "Z9"})).worker_id == f"{link_type}:Z9"
    await refused("worker_id_missing", pool, mturk.code, {"assignmentId": "X"})
    await refused("worker_id_missing", pool, mturk.code, {"workerId": "<script>"})
    # Another batch of the same study: the worker may take part there.
    other = await link(pool, await new_batch(pool, study), link_type)
    assert (await enter(pool, other.code, query)).worker_id == f"{link_type}:A1B2C3"


async def test_preview_is_always_allowed_and_not_counted(pool: asyncpg.Pool,
                                                         study: str) -> None:
    batch_id = await new_batch(pool, study, max_total_participants=1,
                               allowed_link_types=["personal_single"])
    preview = await link(pool, batch_id, "preview")
    runs = [await enter(pool, preview.code, {}) for _ in range(3)]
    assert all(r.preview for r in runs) and len({r.worker_id for r in runs}) == 3
    assert (await catalog.get_batch(pool, batch_id)).participants == 0
    personal = await link(pool, batch_id, "personal_single")
    assert not (await enter(pool, personal.code, {})).preview
    await refused("batch_full", pool, (await link(pool, batch_id, "personal_single")).code, {})
    assert (await enter(pool, preview.code, {})).preview  # full, but previews still enter


async def test_link_type_not_allowed_and_inactive_batch(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study, allowed_link_types=["personal_single"])
    general = await link(pool, batch_id, "general_multiple")
    await refused("link_type_not_allowed", pool, general.code, {})
    await catalog.update_batch(pool, batch_id, BatchUpdate(
        allowed_link_types=["personal_single", "general_multiple"]))
    await enter(pool, general.code, {})
    await catalog.update_batch(pool, batch_id, BatchUpdate(active=False))
    await refused("batch_inactive", pool, general.code, {})
    preview = await link(pool, batch_id, "preview")
    await refused("batch_inactive", pool, preview.code, {})
    await catalog.update_batch(pool, batch_id, BatchUpdate(active=True))
    await enter(pool, general.code, {})
    assert await run_count(pool, batch_id) == 2


async def test_a_closed_batch_takes_nobody_and_cannot_be_switched_on(
        pool: asyncpg.Pool, study: str) -> None:
    from results_store.closing import CloseRefused, close_batch
    from session_store.commands import Outcome

    batch_id = await new_batch(pool, study)
    general = await link(pool, batch_id, "general_multiple")
    preview = await link(pool, batch_id, "preview")
    await enter(pool, general.code, {})
    asked: list[bool] = []

    async def log_says(outcome: Outcome):
        async def send(force: bool) -> Outcome:
            asked.append(force)
            return outcome
        return send

    # The log refuses (runs active): nothing changes in Postgres either.
    with pytest.raises(CloseRefused) as caught:
        await close_batch(pool, batch_id, await log_says(Outcome(
            cmd="c", ok=False, code="runs_active", message="1 run(s) are still active")))
    assert caught.value.status == 409 and caught.value.code == "runs_active"
    assert (await catalog.get_batch(pool, batch_id)).closed_at is None
    await enter(pool, general.code, {})
    with pytest.raises(CloseRefused) as caught:
        await close_batch(pool, "no-such-batch", await log_says(Outcome(cmd="c", ok=True)))
    assert caught.value.code == "batch_not_found" and asked == [False]

    closed = await close_batch(pool, batch_id, await log_says(Outcome(
        cmd="c", ok=True, pos="5-0")), force=True)
    assert asked == [False, True] and closed.pos == "5-0" and not closed.already
    batch = await catalog.get_batch(pool, batch_id)
    assert batch.closed_at == closed.closed_at and not batch.active
    await refused("batch_closed", pool, general.code, {})
    await refused("batch_closed", pool, preview.code, {})
    with pytest.raises(CatalogError) as switched:
        await catalog.update_batch(pool, batch_id, BatchUpdate(active=True))
    assert switched.value.code == "batch_closed"
    assert not (await catalog.get_batch(pool, batch_id)).active
    with pytest.raises(CatalogError) as linked:
        await link(pool, batch_id, "general_single")
    assert linked.value.code == "batch_closed"
    again = await close_batch(pool, batch_id, await log_says(Outcome(
        cmd="c", ok=False, code="batch_closed")))
    assert again.already and again.closed_at == closed.closed_at
    assert await run_count(pool, batch_id) == 2


async def test_postgres_follows_a_close_the_log_made(pool: asyncpg.Pool, study: str) -> None:
    """The finalizer's step for a closed batch: the batch is closed in Postgres even if
    the request that closed it never saw the answer, and every run has ended, also
    one that entered during the close and was refused before it started."""
    from services.finalizer import close_in_postgres
    from session_store.projector import BatchState, RunState

    batch_id = await new_batch(pool, study)
    general = await link(pool, batch_id, "general_multiple")
    ran = await enter(pool, general.code, {})
    late = await enter(pool, general.code, {})
    final = BatchState(batch_id=batch_id, opened=True, closed=True, runs={
        ran.run_id: RunState(state="failed", reason="batch_closed")})
    await close_in_postgres(pool, batch_id, final)
    batch = await catalog.get_batch(pool, batch_id)
    assert batch.closed_at is not None and not batch.active
    ends = {r["id"]: (r["end_state"], r["end_message"]) for r in await pool.fetch(
        "SELECT id, end_state, end_message FROM runs WHERE batch_id = $1", batch_id)}
    assert ends == {ran.run_id: ("failed", "batch_closed"),
                    late.run_id: ("failed", "batch_closed")}
    await refused("batch_closed", pool, general.code, {})
    closed_at = batch.closed_at
    await close_in_postgres(pool, batch_id, final)  # a repeated pass changes nothing
    assert (await catalog.get_batch(pool, batch_id)).closed_at == closed_at


async def test_unknown_links_and_batches_without_a_study(pool: asyncpg.Pool) -> None:
    await refused("link_not_found", pool, "A" * 22, {})
    await refused("link_not_found", pool, "../../etc", {})
    await refused("link_not_found", pool, "", {})
    bare = f"bare-{uuid.uuid4().hex[:8]}"
    await pool.execute("INSERT INTO batches (id, label) VALUES ($1, 'demo')", bare)
    bare_link = await link(pool, bare, "general_multiple")
    await refused("study_not_found", pool, bare_link.code, {})


async def test_label_required_room(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    room = await link(pool, batch_id, "general_multiple", label_required=True)
    assert room.label_required
    await refused("label_required", pool, room.code, {})
    await refused("label_required", pool, room.code, {}, label="   ")
    entered = await enter(pool, room.code, {"x": "1"}, label=" seat-12 ")
    assert entered.label == "seat-12"
    assert (await catalog.get_run(pool, entered.run_id)).label == "seat-12"


async def test_runs_pin_the_version_they_entered_with(pool: asyncpg.Pool) -> None:
    study_uuid = str(uuid.uuid4())
    first = await store_study(pool, definition(study_uuid), {"index.html": b"v1"}, None)
    batch_id = await new_batch(pool, first.study_id)
    general = await link(pool, batch_id, "general_multiple")
    early = await enter(pool, general.code, {})
    await store_study(pool, definition(study_uuid, "Entry test v2"), {"index.html": b"v2"}, None)
    late = await enter(pool, general.code, {})
    assert (early.study_version, late.study_version) == (1, 2)
    assert (await catalog.get_run(pool, early.run_id)).study_version == 1
    runs = await catalog.list_runs(pool, batch_id)
    assert [(r.id, r.study_version) for r in runs] == [(early.run_id, 1), (late.run_id, 2)]


# ---------------------------------------------------------------------------
# Limits under concurrency


async def test_max_total_participants_holds_under_50_concurrent_entries(
    pool: asyncpg.Pool, study: str,
) -> None:
    limit = 7
    batch_id = await new_batch(pool, study, max_total_participants=limit)
    general = await link(pool, batch_id, "general_multiple")
    personal = await catalog.create_links(pool, batch_id, "personal_single", count=25)
    codes = [general.code] * 25 + [p.code for p in personal]
    results = await asyncio.gather(*(enter(pool, code, {"i": str(i)})
                                     for i, code in enumerate(codes)), return_exceptions=True)
    entered = [r for r in results if isinstance(r, Entered)]
    refusals = [r for r in results if isinstance(r, EntryRefused)]
    assert len(entered) == limit
    assert len(refusals) == 50 - limit
    assert {r.code for r in refusals} == {"batch_full"}
    assert await run_count(pool, batch_id) == limit
    assert (await catalog.get_batch(pool, batch_id)).participants == limit
    # Raising the limit lets exactly that many more in.
    await catalog.update_batch(pool, batch_id, BatchUpdate(max_total_participants=limit + 3))
    more = await asyncio.gather(*(enter(pool, general.code, {}) for _ in range(10)),
                                return_exceptions=True)
    assert sum(isinstance(r, Entered) for r in more) == 3
    await catalog.update_batch(pool, batch_id, BatchUpdate(max_total_participants=None))
    assert isinstance(await enter(pool, general.code, {}), Entered)


async def test_a_single_use_link_enters_once_under_concurrency(pool: asyncpg.Pool,
                                                              study: str) -> None:
    batch_id = await new_batch(pool, study)
    personal = await link(pool, batch_id, "personal_single")
    results = await asyncio.gather(*(enter(pool, personal.code, {}) for _ in range(30)),
                                   return_exceptions=True)
    assert sum(isinstance(r, Entered) for r in results) == 1
    assert {r.code for r in results if isinstance(r, EntryRefused)} == {"link_used"}
    assert await run_count(pool, batch_id) == 1


async def test_one_mturk_worker_under_concurrency(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    mturk = await link(pool, batch_id, "mturk")
    results = await asyncio.gather(*(enter(pool, mturk.code, {"workerId": "SAME"})
                                     for _ in range(30)), return_exceptions=True)
    assert sum(isinstance(r, Entered) for r in results) == 1
    assert {r.code for r in results if isinstance(r, EntryRefused)} == {"already_participated"}


# ---------------------------------------------------------------------------
# Batches and links


async def test_batches_take_the_study_defaults(pool: asyncpg.Pool) -> None:
    stored = await store_study(pool, definition(
        str(uuid.uuid4()), group_study=True,
        groups=GroupSettings(max_active_members=2, max_total_members=2),
        batch_defaults=BatchDefaults(max_total_participants=30,
                                     allowed_link_types=["general_single"],
                                     json_input={"condition": "A"}),
    ), {"index.html": b"x"}, None)
    batch = await catalog.create_batch(pool, stored.study_id, label="Tuesday 3 PM")
    assert (batch.label, batch.active, batch.max_total_participants, batch.allowed_link_types,
            batch.json_input) == ("Tuesday 3 PM", True, 30, ["general_single"],
                                  {"condition": "A"})
    assert batch.group_settings == GroupSettings(max_active_members=2, max_total_members=2)
    explicit = await catalog.create_batch(
        pool, stored.study_id, batch_id="explicit-" + uuid.uuid4().hex[:6],
        max_total_participants=None, allowed_link_types=["preview", "general_multiple"],
        json_input=None, group_settings=None, active=False)
    assert (explicit.max_total_participants, explicit.allowed_link_types, explicit.json_input,
            explicit.group_settings, explicit.active) == (
        None, ["general_multiple", "preview"], None, None, False)
    assert [b.id for b in await catalog.list_batches(pool, stored.study_id)] == [
        batch.id, explicit.id]
    assert await catalog.get_batch(pool, batch.id) == batch

    updated = await catalog.update_batch(pool, batch.id, BatchUpdate(
        label="Wednesday", json_input={"condition": "B"}, group_settings=None))
    assert (updated.label, updated.json_input, updated.group_settings,
            updated.max_total_participants) == ("Wednesday", {"condition": "B"}, None, 30)
    assert await catalog.update_batch(pool, "no-such-batch", BatchUpdate(active=False)) is None
    assert await catalog.update_batch(pool, batch.id, BatchUpdate()) == updated


async def test_batch_and_link_input_errors(pool: asyncpg.Pool, study: str) -> None:
    cases = [
        ("study_not_found", catalog.create_batch(pool, "no-such-study")),
        ("bad_batch_id", catalog.create_batch(pool, study, batch_id="has space")),
        ("bad_link_type", catalog.create_batch(pool, study, allowed_link_types=["vip"])),
        ("bad_limit", catalog.create_batch(pool, study, max_total_participants=-1)),
    ]
    for code, call in cases:
        with pytest.raises(CatalogError) as caught:
            await call
        assert caught.value.code == code
    batch_id = await new_batch(pool, study)
    with pytest.raises(CatalogError) as caught:
        await catalog.create_batch(pool, study, batch_id=batch_id)
    assert caught.value.code == "batch_exists"
    for code, kwargs in [
        ("bad_link_type", {"link_type": "vip"}),
        ("bad_count", {"link_type": "general_multiple", "count": 0}),
        ("bad_count", {"link_type": "general_multiple", "count": 10_001}),
        ("count_mismatch", {"link_type": "personal_single", "count": 2, "labels": ["a"]}),
        ("bad_label", {"link_type": "personal_single", "labels": ["x" * 201]}),
    ]:
        with pytest.raises(CatalogError) as caught:
            await catalog.create_links(pool, batch_id, **kwargs)
        assert caught.value.code == code
    with pytest.raises(CatalogError) as caught:
        await catalog.create_links(pool, "no-such-batch", "general_multiple")
    assert caught.value.code == "batch_not_found"
    with pytest.raises(CatalogError) as caught:
        await catalog.update_batch(pool, batch_id, BatchUpdate(allowed_link_types=["x"]))
    assert caught.value.code == "bad_link_type"
    assert UNSET is BatchUpdate().label


async def test_500_personal_links_with_labels_and_csv(pool: asyncpg.Pool, study: str) -> None:
    batch_id = await new_batch(pool, study)
    labels = [f"P{i:03d}" for i in range(500)]
    links = await catalog.create_links(pool, batch_id, "personal_single", labels=labels)
    assert [link.label for link in links] == labels
    assert len({link.code for link in links}) == 500
    assert len({link.worker_id for link in links}) == 500
    assert all(len(link.code) >= 20 for link in links)
    assert all(set(link.code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789-_") for link in links)
    listed = await catalog.list_links(pool, batch_id)
    assert [link.code for link in listed] == [link.code for link in links]  # creation order
    await catalog.create_links(pool, batch_id, "general_multiple", count=2)
    assert len(await catalog.list_links(pool, batch_id, "general_multiple")) == 2
    await enter(pool, links[0].code, {})

    text = catalog.links_csv(await catalog.list_links(pool, batch_id, "personal_single"),
                             "https://study.example.org/")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 500
    assert list(rows[0]) == list(catalog.CSV_COLUMNS)
    assert rows[0]["url"] == f"https://study.example.org/go/{links[0].code}"
    assert [row["label"] for row in rows] == labels
    assert rows[0]["used_at"] and not rows[1]["used_at"]


# ---------------------------------------------------------------------------
# The command line: user add, study import, batch create, link create


def cohort(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COHORT_DATABASE_URL": database_url, "COHORT_LOG_LEVEL": "warning",
           "COHORT_PUBLIC_URL": ""}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])


async def test_command_line(database_url: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    username = f"cli-{uuid.uuid4().hex[:6]}"
    made = await asyncio.to_thread(cohort, database_url, "user", "add", username,
                                   "--password-stdin", stdin="a long password\n")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("coh_")
    assert (await accounts.resolve_token(pool, token)).username == username
    assert await accounts.verify_password(pool, username, "a long password")
    again = await asyncio.to_thread(cohort, database_url, "user", "add", username)
    assert again.returncode == 1 and "account_exists" in again.stderr

    root = tmp_path / "cli-study"
    root.mkdir()
    (root / "study.toml").write_text(
        f'title = "CLI study"\nuuid = "{uuid.uuid4()}"\n'
        '[[components]]\nhtml_file = "index.html"\n')
    (root / "index.html").write_text("<p>x</p>")
    imported = await asyncio.to_thread(cohort, database_url, "study", "import", str(root),
                                       "--owner", username)
    assert imported.returncode == 0, imported.stderr
    study_id = imported.stdout.split()[2]
    assert "version 1" in imported.stdout
    owner = await accounts.get_account(pool, username)
    assert await accounts.can_access(pool, owner, study_id)
    again = await asyncio.to_thread(cohort, database_url, "study", "import", str(root))
    assert again.returncode == 0 and "version 2" in again.stdout

    made = await asyncio.to_thread(cohort, database_url, "batch", "create", study_id,
                                   "--label", "Tuesday", "--max-participants", "2")
    assert made.returncode == 0, made.stderr
    batch = await catalog.get_batch(pool, made.stdout.strip())
    assert (batch.study_id, batch.label, batch.max_total_participants) == (study_id, "Tuesday", 2)

    labels = tmp_path / "labels.txt"
    labels.write_text("P1\nP2\n\nP3\n")
    out = tmp_path / "links.csv"
    made = await asyncio.to_thread(cohort, database_url, "link", "create", batch.id, "--type",
                                   "personal_single", "--labels-file", str(labels), "--csv",
                                   str(out), "--base-url", "https://lab.example.org")
    assert made.returncode == 0, made.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["label"] for row in rows] == ["P1", "P2", "P3"]
    assert rows[0]["url"] == f"https://lab.example.org/go/{rows[0]['code']}"
    made = await asyncio.to_thread(cohort, database_url, "link", "create", batch.id, "--type",
                                   "general_multiple", "--count", "2")
    assert made.returncode == 0 and len(made.stdout.split()) == 2
    assert made.stdout.split()[0].startswith("http://127.0.0.1:8000/go/")
    bad = await asyncio.to_thread(cohort, database_url, "link", "create", batch.id, "--type",
                                  "vip")
    assert bad.returncode == 1 and "bad_link_type" in bad.stderr
