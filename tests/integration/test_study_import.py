"""Study import: study.toml / study.json folders, zips of them, JATOS .jzip archives;
versions; every validation error (real Postgres)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import stat
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from results_store import accounts
from results_store.accounts import Account
from results_store.migrate import migrate
from results_store.studies import (
    ImportLimits,
    StudyImportError,
    get_study,
    guess_media_type,
    import_study,
    list_files,
    load_definition,
    load_file,
    read_study,
    read_study_archive,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def owner(pool: asyncpg.Pool) -> Account:
    return await accounts.create_account(pool, f"owner-{secrets.token_hex(4)}")


def study_toml(study_uuid: str, title: str = "Public goods game") -> str:
    return f'''
title = "{title}"
uuid = "{study_uuid}"
description = "Four players, ten rounds."
linear = true
end_redirect_url = "https://app.prolific.com/submissions/complete?cc=ABC"
group_study = true
json_input = {{ endowment = 20, multiplier = 1.6 }}

[groups]
max_active_members = 4
max_total_members = 4
form_by_arrival = 4

[session_config]
participation_fee = 2.5
real_world_currency_per_point = 0.01
currency = "EUR"
treatment = "punishment"

[batch]
max_total_participants = 40
allowed_link_types = ["personal_single", "general_single"]

[properties]
irb = "2024-17"

[[components]]
id = "intro"
title = "Introduction"
html_file = "intro.html"
reloadable = true

[[components]]
title = "Contribution"
html_file = "game/contribute.html"
json_input = "game/config.json"
rounds = 10

[[components]]
html_file = "end.html"
active = false
comments = "switched off for the pilot"
'''


def write_study(root: Path, study_uuid: str, **files: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    content = {
        "study.toml": study_toml(study_uuid).encode(),
        "intro.html": b"<!doctype html><script src='jatos.js'></script><h1>Hello</h1>",
        "game/contribute.html": b"<!doctype html><p>Contribute</p>",
        "game/config.json": b'{"rounds": 10, "labels": ["a", "b"]}',
        "game/app.js": b"console.log('game')",
        "img/logo.png": PNG,
        "end.html": b"<p>Thanks</p>",
        ".DS_Store": b"junk",
    }
    content.update({name.replace("__", "/"): data for name, data in files.items()})
    for name, data in content.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def zip_folder(root: Path, top: str | None) -> bytes:
    entries = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            entries[f"{top}/{rel}" if top else rel] = path.read_bytes()
    return zip_bytes(entries)


def jas(study_uuid: str, **overrides: object) -> dict:
    """A .jas as JATOS 3.x writes it (docs: JATOS Study Archive (JZIP))."""
    data = {
        "uuid": study_uuid,
        "title": "Simple Reaction Time Task",
        "description": "Here we describe the study.",
        "groupStudy": False,
        "linearStudy": True,
        "allowPreview": True,
        "dirName": "simple_rt_task",
        "comments": "pilot in May",
        "jsonData": "{\"a\":\"test\",\"b\":5}",
        "endRedirectUrl": "https://example.org/done",
        "studyEntryMsg": "Welcome back!",
        "componentList": [
            {"uuid": "dea21111-a966-5b24-9f15-a89fefa3f711", "title": "Introduction and Consent",
             "htmlFilePath": "intro.html", "reloadable": True, "active": True,
             "comments": "", "jsonData": None},
            {"uuid": "970a92f0-b966-4b2f-bf15-b89fefa3f911", "title": "Experiment",
             "htmlFilePath": "experiment/main.html", "reloadable": False, "active": True,
             "comments": "the task", "jsonData": "{\"trials\": 40}"},
            {"uuid": "11111111-2222-4333-8444-555555555555", "title": "Old debriefing",
             "htmlFilePath": "gone.html", "reloadable": False, "active": False,
             "comments": "", "jsonData": None},
        ],
        "batchList": [
            {"uuid": "9c7992ca-aa24-4081-8b0e-ee70f49cd65f", "title": "Default", "active": True,
             "maxActiveMembers": 2, "maxTotalMembers": 6, "maxTotalWorkers": 100,
             "allowedWorkerTypes": ["PersonalSingle", "Jatos", "PersonalMultiple", "MT",
                                    "GeneralSingle"],
             "comments": None, "jsonData": "{\"condition\": \"A\"}"},
            {"uuid": "0c7992ca-aa24-4081-8b0e-ee70f49cd65f", "title": "Second", "active": False,
             "maxActiveMembers": None, "maxTotalMembers": None, "maxTotalWorkers": None,
             "allowedWorkerTypes": ["GeneralMultiple"], "comments": None, "jsonData": None},
        ],
    }
    data.update(overrides)
    return {"version": "3", "data": data}


def jzip(description: dict, dir_name: str = "simple_rt_task",
         extra: dict[str, bytes] | None = None) -> bytes:
    entries = {
        f"{dir_name}/intro.html": b"<!doctype html><p>Consent</p>",
        f"{dir_name}/experiment/main.html": b"<!doctype html><p>Go!</p>",
        f"{dir_name}/experiment/task.js": b"jatos.onLoad(() => {})",
        f"{dir_name}/jatos.js": b"// an old copy of jatos.js",
        "simple_reaction_time_task.jas": json.dumps(description).encode(),
    }
    entries.update(extra or {})
    return zip_bytes(entries)


# ---------------------------------------------------------------------------
# study.toml folders and zips


async def test_import_a_folder_with_study_toml(pool: asyncpg.Pool, owner: Account,
                                               tmp_path: Path) -> None:
    study_uuid = str(uuid.uuid4())
    source = read_study(write_study(tmp_path / "pgg", study_uuid))
    assert source.source == "toml"
    d = source.definition
    assert (d.uuid, d.title, d.linear, d.group_study) == (study_uuid, "Public goods game",
                                                          True, True)
    assert d.end_redirect_url.startswith("https://app.prolific.com/")
    assert d.json_input == {"endowment": 20, "multiplier": 1.6}
    assert [c.id for c in d.components] == ["intro", "contribute", "end"]
    intro, game, end = d.components
    assert (intro.title, intro.html_file, intro.reloadable, intro.rounds) == (
        "Introduction", "intro.html", True, 1)
    assert (game.title, game.html_file, game.rounds) == ("Contribution",
                                                         "game/contribute.html", 10)
    assert game.json_input == {"rounds": 10, "labels": ["a", "b"]}
    assert (end.title, end.active, end.comments) == ("end", False, "switched off for the pilot")
    assert (d.groups.max_active_members, d.groups.max_total_members,
            d.groups.form_by_arrival) == (4, 4, 4)
    sc = d.session_config
    assert (sc.participation_fee, sc.real_world_currency_per_point, sc.currency) == (
        2.5, 0.01, "EUR")
    assert sc.custom == {"treatment": "punishment"}
    assert d.batch_defaults.max_total_participants == 40
    assert d.batch_defaults.allowed_link_types == ["personal_single", "general_single"]
    assert d.properties == {"irb": "2024-17"}
    # Assets: everything but the description and OS litter.
    assert sorted(source.files) == ["end.html", "game/app.js", "game/config.json",
                                    "game/contribute.html", "img/logo.png", "intro.html"]

    stored = await import_study(pool, source, owner)
    assert stored.created and stored.version == 1
    assert stored.study_id.startswith("public-goods-game")
    assert stored.file_count == 6 and stored.new_bytes <= stored.total_bytes
    assert await load_definition(pool, stored.study_id, 1) == d
    assert await load_definition(pool, stored.study_id) == d
    assert await load_file(pool, stored.study_id, 1, "img/logo.png") == (PNG, "image/png")
    html, media_type = await load_file(pool, stored.study_id, 1, "intro.html")
    assert media_type == "text/html" and b"<h1>Hello</h1>" in html
    assert (await load_file(pool, stored.study_id, 1, "game/app.js"))[1] == "text/javascript"
    assert await load_file(pool, stored.study_id, 1, "study.toml") is None
    assert await load_file(pool, stored.study_id, 1, "nope.html") is None
    assert await load_file(pool, stored.study_id, 2, "intro.html") is None
    assert await accounts.can_access(pool, owner, stored.study_id)


@pytest.mark.parametrize("top", [None, "my-study"])
async def test_import_a_zip_of_a_folder(pool: asyncpg.Pool, owner: Account, tmp_path: Path,
                                        top: str | None) -> None:
    study_uuid = str(uuid.uuid4())
    data = zip_folder(write_study(tmp_path / "s", study_uuid), top)
    source = read_study_archive(data, "study.zip")
    assert source.definition.uuid == study_uuid
    assert "game/contribute.html" in source.files and ".DS_Store" not in source.files
    (tmp_path / "study.zip").write_bytes(data)
    assert read_study(tmp_path / "study.zip").definition == source.definition
    stored = await import_study(pool, source, owner)
    assert stored.version == 1
    assert (await load_file(pool, stored.study_id, 1, "game/config.json"))[1] == \
        "application/json"


async def test_import_study_json(pool: asyncpg.Pool, owner: Account, tmp_path: Path) -> None:
    root = tmp_path / "json-study"
    root.mkdir()
    (root / "index.html").write_text("<p>hi</p>")
    (root / "study.json").write_text(json.dumps({
        "title": "JSON study", "components": [{"html_file": "index.html",
                                               "json_input": {"x": [1, 2]}}],
        "session_config": {"participation_fee": 1, "custom": {"a": 1}, "b": 2},
    }))
    source = read_study(root)
    assert source.source == "json" and source.definition.uuid == ""
    assert source.definition.components[0].json_input == {"x": [1, 2]}
    assert source.definition.session_config.custom == {"a": 1, "b": 2}
    stored = await import_study(pool, source, owner)
    assert uuid.UUID(stored.uuid)  # generated
    # Without a uuid, a re-import makes a new study unless it names the study.
    again = await import_study(pool, read_study(root), owner)
    assert again.study_id != stored.study_id and again.version == 1
    into = await import_study(pool, read_study(root), owner, into_study=stored.study_id)
    assert (into.study_id, into.version, into.uuid) == (stored.study_id, 2, stored.uuid)


async def test_reimport_makes_version_2_and_keeps_version_1(pool: asyncpg.Pool, owner: Account,
                                                            tmp_path: Path) -> None:
    study_uuid = str(uuid.uuid4())
    root = write_study(tmp_path / "v1", study_uuid)
    first = await import_study(pool, read_study(root), owner)
    (root / "intro.html").write_bytes(b"<h1>Hello again</h1>")
    (root / "study.toml").write_text(study_toml(study_uuid, "Public goods game II"))
    (root / "game" / "app.js").unlink()
    second = await import_study(pool, read_study(root), owner)
    assert (second.study_id, second.version, second.created) == (first.study_id, 2, False)
    # Only the changed file's bytes are new: the rest is shared with version 1.
    assert second.new_bytes == len(b"<h1>Hello again</h1>")

    assert (await load_definition(pool, first.study_id, 1)).title == "Public goods game"
    assert (await load_definition(pool, first.study_id, 2)).title == "Public goods game II"
    assert (await load_definition(pool, first.study_id)).title == "Public goods game II"
    assert b"Hello</h1>" in (await load_file(pool, first.study_id, 1, "intro.html"))[0]
    assert b"again" in (await load_file(pool, first.study_id, 2, "intro.html"))[0]
    assert await load_file(pool, first.study_id, 1, "game/app.js") is not None
    assert await load_file(pool, first.study_id, 2, "game/app.js") is None
    assert len(await list_files(pool, first.study_id, 1)) == 6
    assert len(await list_files(pool, first.study_id, 2)) == 5

    info = await get_study(pool, first.study_id)
    assert info.current_version == 2 and info.title == "Public goods game II"
    assert [v.version for v in info.versions] == [1, 2]
    assert info.members == [owner.username]


async def test_reimport_by_a_stranger_is_forbidden(pool: asyncpg.Pool, owner: Account,
                                                   tmp_path: Path) -> None:
    root = write_study(tmp_path / "s", str(uuid.uuid4()))
    stored = await import_study(pool, read_study(root), owner)
    stranger = await accounts.create_account(pool, f"stranger-{secrets.token_hex(4)}")
    with pytest.raises(StudyImportError) as refused:
        await import_study(pool, read_study(root), stranger)
    assert refused.value.code == "forbidden"
    await accounts.share_study(pool, stored.study_id, stranger.username)
    assert (await import_study(pool, read_study(root), stranger)).version == 2
    # The command line (no account) may always.
    assert (await import_study(pool, read_study(root), None)).version == 3


async def test_concurrent_imports_of_one_new_study_make_one_study(pool: asyncpg.Pool,
                                                                  owner: Account,
                                                                  tmp_path: Path) -> None:
    source = read_study(write_study(tmp_path / "c", str(uuid.uuid4())))
    results = await asyncio.gather(*(import_study(pool, source, owner) for _ in range(5)))
    assert len({r.study_id for r in results}) == 1
    assert sorted(r.version for r in results) == [1, 2, 3, 4, 5]
    assert sum(r.created for r in results) == 1


# ---------------------------------------------------------------------------
# JATOS .jzip


async def test_import_a_jatos_jzip(pool: asyncpg.Pool, owner: Account, tmp_path: Path) -> None:
    study_uuid = str(uuid.uuid4())
    source = read_study_archive(jzip(jas(study_uuid)), "simple_reaction_time_task.jzip")
    assert source.source == "jatos" and source.slug_hint == "simple-rt-task"
    d = source.definition
    assert (d.uuid, d.title, d.description) == (study_uuid, "Simple Reaction Time Task",
                                                "Here we describe the study.")
    assert (d.linear, d.group_study, d.end_redirect_url) == (True, False,
                                                             "https://example.org/done")
    assert d.json_input == {"a": "test", "b": 5}
    assert [(c.id, c.title, c.html_file, c.reloadable, c.active) for c in d.components] == [
        ("dea21111-a966-5b24-9f15-a89fefa3f711", "Introduction and Consent", "intro.html",
         True, True),
        ("970a92f0-b966-4b2f-bf15-b89fefa3f911", "Experiment", "experiment/main.html",
         False, True),
        ("11111111-2222-4333-8444-555555555555", "Old debriefing", "gone.html", False, False),
    ]
    assert d.components[0].json_input is None
    assert d.components[1].json_input == {"trials": 40}
    assert d.components[1].comments == "the task"
    # The first batch gives the defaults.
    assert (d.groups.max_active_members, d.groups.max_total_members) == (2, 6)
    assert d.batch_defaults.max_total_participants == 100
    assert d.batch_defaults.allowed_link_types == [
        "personal_single", "personal_multiple", "general_single", "mturk", "preview"]
    assert d.batch_defaults.json_input == {"condition": "A"}
    assert d.properties["jatos"] == {
        "version": "3", "dirName": "simple_rt_task", "comments": "pilot in May",
        "studyEntryMsg": "Welcome back!", "allowPreview": True,
        "batch": {"uuid": "9c7992ca-aa24-4081-8b0e-ee70f49cd65f", "title": "Default",
                  "active": True}}
    # Assets are the study assets folder's contents; the .jas is not one of them.
    assert sorted(source.files) == ["experiment/main.html", "experiment/task.js", "intro.html",
                                    "jatos.js"]

    stored = await import_study(pool, source, owner)
    assert stored.version == 1 and stored.study_id.startswith("simple-rt-task")
    assert await load_file(pool, stored.study_id, 1, "experiment/task.js") == (
        b"jatos.onLoad(() => {})", "text/javascript")
    assert await load_definition(pool, stored.study_id, 1) == d

    # Exported again by JATOS with a change: version 2 of the same study.
    changed = jas(study_uuid, title="Simple Reaction Time Task (v2)")
    path = tmp_path / "again.jzip"
    path.write_bytes(jzip(changed))
    again = await import_study(pool, read_study(path), owner)
    assert (again.study_id, again.version) == (stored.study_id, 2)
    assert (await load_definition(pool, stored.study_id, 1)).title == \
        "Simple Reaction Time Task"
    assert await load_file(pool, stored.study_id, 1, "intro.html") is not None


async def test_jatos_version_2_and_newer_aliases(pool: asyncpg.Pool) -> None:
    description = jas(str(uuid.uuid4()), studyInput={"x": 1}, jsonData=None,
                      allowedWorkerList=["GeneralMultiple"])
    description["version"] = "2"
    del description["data"]["batchList"]
    d = read_study_archive(jzip(description), "old.jzip").definition
    assert d.json_input == {"x": 1}
    assert d.batch_defaults.allowed_link_types == ["general_multiple"]
    assert d.batch_defaults.max_total_participants is None

    # A folder holding an unpacked .jzip imports the same way.
    description = jas(str(uuid.uuid4()))
    description["data"]["batchList"][0]["jsonData"] = None
    description["data"]["batchList"][0]["batchInput"] = "{\"y\": 2}"
    d = read_study_archive(jzip(description), "new.jzip").definition
    assert d.batch_defaults.json_input == {"y": 2}


async def test_an_unpacked_jzip_in_a_folder_or_zipped_again(tmp_path: Path) -> None:
    study_uuid = str(uuid.uuid4())
    with zipfile.ZipFile(io.BytesIO(jzip(jas(study_uuid)))) as archive:
        archive.extractall(tmp_path / "export")
    from_folder = read_study(tmp_path / "export")
    assert from_folder.source == "jatos" and from_folder.definition.uuid == study_uuid
    assert "experiment/task.js" in from_folder.files
    # The unpacked folder zipped again (one top folder) reads the same.
    again = read_study_archive(zip_folder(tmp_path / "export", "export"), "export.zip")
    assert again.definition == from_folder.definition and again.files == from_folder.files


async def test_a_jzip_with_several_folders_uses_dir_name(pool: asyncpg.Pool) -> None:
    data = jzip(jas(str(uuid.uuid4())), extra={"other/readme.txt": b"x"})
    source = read_study_archive(data, "x.jzip")
    assert "intro.html" in source.files and "readme.txt" not in source.files


# ---------------------------------------------------------------------------
# Validation: every problem has a code and names the file / field


def base_toml(components: str = '[[components]]\nhtml_file = "index.html"\n',
              extra: str = "") -> bytes:
    return f'title = "T"\n{extra}\n{components}'.encode()


TOML_CASES = [
    ("bad_toml", {"study.toml": b"title = 'unterminated"}, "study.toml"),
    ("missing_field", {"study.toml": b"[[components]]\nhtml_file = 'index.html'"}, "title"),
    ("no_components", {"study.toml": b'title = "T"'}, "components"),
    ("missing_html_file", {"study.toml": base_toml('[[components]]\nhtml_file = "nope.html"\n')},
     "components[0].html_file"),
    ("missing_field", {"study.toml": base_toml('[[components]]\ntitle = "x"\n')},
     "components[0].html_file"),
    ("duplicate_component_id", {"study.toml": base_toml(
        '[[components]]\nid = "a"\nhtml_file = "index.html"\n'
        '[[components]]\nid = "a"\nhtml_file = "index.html"\n')}, "components[1].id"),
    ("unknown_field", {"study.toml": base_toml(extra='titel = "typo"')}, "titel"),
    ("unknown_field", {"study.toml": base_toml(
        '[[components]]\nhtml_file = "index.html"\nreloadble = true\n')}, "components[0]"),
    ("bad_field", {"study.toml": base_toml(
        '[[components]]\nhtml_file = "index.html"\nrounds = 0\n')}, "components[0].rounds"),
    ("bad_field", {"study.toml": base_toml(extra="linear = 'yes'")}, "linear"),
    ("bad_field", {"study.toml": base_toml(extra='end_redirect_url = "javascript:alert(1)"')},
     "end_redirect_url"),
    ("bad_field", {"study.toml": base_toml(extra='[batch]\nallowed_link_types = ["vip"]')},
     "batch.allowed_link_types"),
    ("bad_field", {"study.toml": base_toml(extra="[session_config]\nparticipation_fee = -1")},
     "session_config.participation_fee"),
    ("missing_file", {"study.toml": base_toml(extra='json_input = "input.json"')},
     "json_input"),
    ("bad_json_input", {"study.toml": base_toml(extra='json_input = "input.json"'),
                        "input.json": b"{not json"}, "input.json"),
    ("unsafe_path", {"study.toml": base_toml('[[components]]\nhtml_file = "../index.html"\n')},
     "components[0].html_file"),
    ("unsafe_path", {"study.toml": base_toml('[[components]]\nhtml_file = "/etc/passwd"\n')},
     "components[0].html_file"),
    ("ambiguous_definition", {"study.toml": base_toml(), "study.json": b"{}"}, "study.json"),
    ("no_definition", {"readme.txt": b"hello"}, "study.toml"),
    ("bad_json", {"study.json": b"[1, 2"}, "study.json"),
    ("bad_encoding", {"study.toml": b"title = '\xff\xfe'"}, "study.toml"),
]


@pytest.mark.parametrize(("code", "files", "named"), TOML_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TOML_CASES)])
def test_study_folder_validation(tmp_path: Path, code: str, files: dict[str, bytes],
                                 named: str) -> None:
    files = {"index.html": b"<p>x</p>", **files}
    root = tmp_path / "bad"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with pytest.raises(StudyImportError) as refused:
        read_study(root)
    assert refused.value.code == code, refused.value.message
    assert named in refused.value.message
    # The same study zipped fails the same way.
    with pytest.raises(StudyImportError) as zipped:
        read_study_archive(zip_bytes(files), "bad.zip")
    assert zipped.value.code == code


def test_auto_component_ids_stay_unique() -> None:
    data = zip_bytes({"index.html": b"x", "study.toml": base_toml(
        '[[components]]\nhtml_file = "index.html"\n'
        '[[components]]\nhtml_file = "index.html"\n'
        '[[components]]\nid = "index-2"\nhtml_file = "index.html"\n')})
    ids = [c.id for c in read_study_archive(data, "x.zip").definition.components]
    assert ids == ["index", "index-3", "index-2"]


ARCHIVE_CASES = [
    ("unsafe_path", {"../evil.html": b"x"}, "../evil.html"),
    ("unsafe_path", {"study/../../evil.html": b"x"}, "evil.html"),
    ("unsafe_path", {"/abs/evil.html": b"x"}, "/abs/evil.html"),
    ("unsafe_path", {"C:\\windows\\evil.html": b"x"}, "evil.html"),
]


@pytest.mark.parametrize(("code", "entries", "named"), ARCHIVE_CASES)
def test_zip_slip_paths_are_refused(code: str, entries: dict[str, bytes], named: str) -> None:
    data = zip_bytes({"study.toml": base_toml(), "index.html": b"x", **entries})
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(data, "slip.zip")
    assert refused.value.code == code and named in refused.value.message


def test_symlinks_in_archives_and_folders_are_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("study.toml", base_toml())
        archive.writestr("index.html", b"x")
        link = zipfile.ZipInfo("passwd.html")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(out.getvalue(), "links.zip")
    assert refused.value.code == "unsafe_path" and "passwd.html" in refused.value.message

    root = tmp_path / "linked"
    root.mkdir()
    (root / "study.toml").write_bytes(base_toml())
    (root / "index.html").write_text("x")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, root / "secret.txt")
    with pytest.raises(StudyImportError) as refused:
        read_study(root)
    assert refused.value.code == "unsafe_path" and "secret.txt" in refused.value.message
    (root / "secret.txt").unlink()
    os.symlink(root / "index.html", root / "alias.html")  # inside the folder: fine
    assert read_study(root).files["alias.html"] == b"x"


def test_size_and_file_count_limits(tmp_path: Path) -> None:
    entries = {"study.toml": base_toml(), "index.html": b"x",
               **{f"f{i}.txt": b"0123456789" for i in range(20)}}
    data = zip_bytes(entries)
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(data, "big.zip", ImportLimits(max_bytes=150, max_files=100))
    assert refused.value.code == "too_large" and "big.zip" in refused.value.message
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(data, "many.zip", ImportLimits(max_files=10))
    assert refused.value.code == "too_many_files"
    assert len(read_study_archive(data, "ok.zip", ImportLimits(max_bytes=10_000)).files) == 21

    root = tmp_path / "big"
    for name, content in entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    with pytest.raises(StudyImportError) as refused:
        read_study(root, ImportLimits(max_bytes=150))
    assert refused.value.code == "too_large"
    with pytest.raises(StudyImportError) as refused:
        read_study(root, ImportLimits(max_files=10))
    assert refused.value.code == "too_many_files"


def test_a_zip_bomb_is_refused_before_it_is_inflated() -> None:
    data = zip_bytes({"study.toml": base_toml(), "index.html": b"x",
                      "bomb.bin": b"\0" * (5 * 1024 * 1024)})
    assert len(data) < 64 * 1024
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(data, "bomb.zip", ImportLimits(max_bytes=1024 * 1024))
    assert refused.value.code == "too_large"


def test_not_a_zip_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(b"PK but not really a zip", "broken.jzip")
    assert refused.value.code == "bad_archive" and "broken.jzip" in refused.value.message
    with pytest.raises(StudyImportError) as refused:
        read_study(tmp_path / "does-not-exist")
    assert refused.value.code == "not_found"


def _jas_with(mutate: Callable[[dict], object]) -> dict:
    description = jas(str(uuid.uuid4()))
    mutate(description["data"])
    return description


JAS_CASES = [
    ("unsupported_version", lambda d: None, {"version": "4"}, "version 4"),
    ("missing_field", lambda d: d.pop("uuid"), None, "data.uuid"),
    ("missing_field", lambda d: d.update(title=""), None, "data.title"),
    ("missing_field", lambda d: d.pop("componentList"), None, "data.componentList"),
    ("no_components", lambda d: d.update(componentList=[]), None, "data.componentList"),
    ("duplicate_component_id",
     lambda d: d["componentList"][1].update(uuid=d["componentList"][0]["uuid"]), None,
     "data.componentList[1].uuid"),
    ("missing_html_file", lambda d: d["componentList"][1].update(htmlFilePath="missing.html"),
     None, "data.componentList[1].htmlFilePath"),
    ("unsafe_path", lambda d: d["componentList"][0].update(htmlFilePath="../../x.html"), None,
     "data.componentList[0].htmlFilePath"),
    ("bad_json_input", lambda d: d.update(jsonData="{oops"), None, "data.jsonData"),
    ("bad_json_input", lambda d: d["componentList"][0].update(jsonData="[1,"), None,
     "data.componentList[0].jsonData"),
    ("bad_field", lambda d: d["batchList"][0].update(allowedWorkerTypes=["Robot"]), None,
     "allowedWorkerTypes"),
    ("bad_field", lambda d: d["batchList"][0].update(maxTotalWorkers=-3), None,
     "data.batchList[0].maxTotalWorkers"),
    ("bad_field", lambda d: d.update(linearStudy="yes"), None, "data.linearStudy"),
]


@pytest.mark.parametrize(("code", "mutate", "top", "named"), JAS_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(JAS_CASES)])
def test_jas_validation(code: str, mutate: Callable[[dict], object], top: dict | None,
                        named: str) -> None:
    description = _jas_with(mutate)
    description.update(top or {})
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(jzip(description), "study.jzip")
    assert refused.value.code == code, refused.value.message
    assert named in refused.value.message
    assert ".jas" in refused.value.message or code == "unsafe_path"


def test_jzip_structure_errors() -> None:
    description = json.dumps(jas(str(uuid.uuid4()))).encode()
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(jzip(jas(str(uuid.uuid4())), extra={"second.jas": description}),
                           "two.jzip")
    assert refused.value.code == "bad_archive" and ".jas" in refused.value.message
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(jzip(jas(str(uuid.uuid4())), extra={"a/x": b"", "b/y": b""},
                                dir_name="renamed"), "dirs.jzip")
    assert refused.value.code == "bad_archive" and "dirName" in refused.value.message
    with pytest.raises(StudyImportError) as refused:
        read_study_archive(zip_bytes({"s.jas": b"not json"}), "garbage.jzip")
    assert refused.value.code == "bad_jas" and "s.jas" in refused.value.message


def test_media_types() -> None:
    assert guess_media_type("a/b/index.HTML") == "text/html"
    assert guess_media_type("x.mjs") == "text/javascript"
    assert guess_media_type("x.woff2") == "font/woff2"
    assert guess_media_type("x.svg") == "image/svg+xml"
    assert guess_media_type("data.bin") == "application/octet-stream"
    assert guess_media_type("no-suffix") == "application/octet-stream"
