"""The experimenter API (gateway/experimenter.py) over HTTP against real Postgres:
accounts, tokens, study import and access, batches, links, CSV export, runs."""

from __future__ import annotations

import csv
import io
import json
import secrets
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.experimenter import experimenter_routes
from results_store import catalog
from results_store.migrate import migrate
from services.settings import Settings

ADMIN = {"Authorization": "Bearer test-admin-token"}
BASE_URL = "https://cohort.example.org"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def study_zip(study_uuid: str, title: str = "API study") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("api-study/study.toml", f'''
title = "{title}"
uuid = "{study_uuid}"
[batch]
max_total_participants = 5
[[components]]
id = "page"
html_file = "index.html"
''')
        archive.writestr("api-study/index.html", "<!doctype html><p>hi</p>")
    return out.getvalue()


def jzip(study_uuid: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("rt/index.html", "<p>rt</p>")
        archive.writestr("rt.jas", json.dumps({"version": "3", "data": {
            "uuid": study_uuid, "title": "RT", "dirName": "rt",
            "componentList": [{"uuid": "c-1", "title": "RT", "htmlFilePath": "index.html"}],
            "batchList": [{"uuid": "b", "title": "Default",
                           "allowedWorkerTypes": ["GeneralSingle", "Jatos"]}]}}))
    return out.getvalue()


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The test's own pool (the app's pool lives on the test client's event loop)."""
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    await migrate(settings.database_url)
    app_settings = msgspec.structs.replace(settings, public_url=BASE_URL)
    opened: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(app_settings.database_url, min_size=1, max_size=4)

        async def batch_opener(batch: catalog.Batch) -> None:
            opened.append(batch.id)

        app.state.update(pg=pool, settings=app_settings, batch_opener=batch_opener,
                         opened=opened)
        try:
            yield
        finally:
            await pool.close()

    app = Litestar(route_handlers=[experimenter_routes], lifespan=[lifespan])
    async with AsyncTestClient(app) as test_client:
        yield test_client


async def new_account(client: AsyncTestClient, prefix: str, **extra: object
                      ) -> tuple[str, str]:
    username = f"{prefix}-{secrets.token_hex(4)}"
    response = await client.post("/api/accounts", headers=ADMIN,
                                 json={"username": username, **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["account"]["username"] == username and body["token"].startswith("coh_")
    return username, body["token"]


async def upload(client: AsyncTestClient, token: str, data: bytes, name: str = "study.zip",
                 **params: str) -> httpx.Response:
    return await client.post("/api/studies", headers=bearer(token), params=params,
                             files={"file": (name, data, "application/zip")})


@pytest.fixture(scope="module")
async def alice(client: AsyncTestClient) -> tuple[str, str]:
    return await new_account(client, "alice", display_name="Alice")


@pytest.fixture(scope="module")
async def bob(client: AsyncTestClient) -> tuple[str, str]:
    return await new_account(client, "bob")


@pytest.fixture(scope="module")
async def alice_study(client: AsyncTestClient, alice: tuple[str, str]) -> str:
    response = await upload(client, alice[1], study_zip(str(uuid.uuid4())))
    assert response.status_code == 201, response.text
    return response.json()["study_id"]


# ---------------------------------------------------------------------------


async def test_authentication(client: AsyncTestClient, alice: tuple[str, str]) -> None:
    response = await client.get("/api/studies")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    for header in ({"Authorization": "Bearer coh_nonsense_nonsense_nonsense"},
                   {"Authorization": "Bearer wrong-admin-token"},
                   {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = await client.get("/api/me", headers=header)
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    me = (await client.get("/api/me", headers=bearer(alice[1]))).json()
    assert (me["username"], me["display_name"], me["is_admin"]) == (alice[0], "Alice", False)
    assert (await client.get("/api/me", headers=ADMIN)).json()["is_admin"] is True


async def test_accounts_are_for_admins(client: AsyncTestClient, alice: tuple[str, str]) -> None:
    response = await client.post("/api/accounts", headers=bearer(alice[1]),
                                 json={"username": "eve-" + secrets.token_hex(3)})
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert (await client.get("/api/accounts", headers=bearer(alice[1]))).status_code == 403
    listed = (await client.get("/api/accounts", headers=ADMIN)).json()
    assert alice[0] in [a["username"] for a in listed]
    again = await client.post("/api/accounts", headers=ADMIN, json={"username": alice[0]})
    assert again.status_code == 409 and again.json()["code"] == "account_exists"
    bad = await client.post("/api/accounts", headers=ADMIN, json={"username": "no spaces"})
    assert bad.status_code == 400 and bad.json()["code"] == "bad_username"
    unknown = await client.post("/api/accounts", headers=ADMIN, json={"user": "x"})
    assert unknown.status_code == 400 and unknown.json()["code"] == "bad_request"
    # An admin account made through the API is an admin for every study.
    _, admin_token = await new_account(client, "root", is_admin=True)
    assert (await client.get("/api/accounts", headers=bearer(admin_token))).status_code == 200


async def test_tokens_issue_list_revoke(client: AsyncTestClient) -> None:
    _, first = await new_account(client, "tokens")
    response = await client.post("/api/tokens", headers=bearer(first), json={"name": "ci"})
    assert response.status_code == 201
    second = response.json()
    assert second["token"].startswith("coh_") and second["name"] == "ci"
    listed = (await client.get("/api/tokens", headers=bearer(first))).json()
    assert [t["name"] for t in listed] == ["initial", "ci"]
    assert all("token" not in t for t in listed)
    assert (await client.get("/api/me", headers=bearer(second["token"]))).status_code == 200

    response = await client.delete(f"/api/tokens/{second['id']}", headers=bearer(first))
    assert response.status_code == 204
    response = await client.get("/api/me", headers=bearer(second["token"]))
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    # Another account cannot revoke my token.
    _, other = await new_account(client, "other")
    response = await client.delete(f"/api/tokens/{listed[0]['id']}", headers=bearer(other))
    assert response.status_code == 404 and response.json()["code"] == "token_not_found"
    assert (await client.get("/api/me", headers=bearer(first))).status_code == 200
    # A token revokes itself: refused from then on.
    assert (await client.delete(f"/api/tokens/{listed[0]['id']}",
                                headers=bearer(first))).status_code == 204
    assert (await client.get("/api/studies", headers=bearer(first))).status_code == 401
    # The admin token has no account, so no tokens.
    response = await client.get("/api/tokens", headers=ADMIN)
    assert response.status_code == 400 and response.json()["code"] == "no_account"


async def test_study_import_and_access(client: AsyncTestClient, alice: tuple[str, str],
                                       bob: tuple[str, str]) -> None:
    study_uuid = str(uuid.uuid4())
    response = await upload(client, alice[1], study_zip(study_uuid))
    assert response.status_code == 201, response.text
    stored = response.json()
    assert (stored["uuid"], stored["version"], stored["created"]) == (study_uuid, 1, True)
    study_id = stored["study_id"]

    detail = (await client.get(f"/api/studies/{study_id}", headers=bearer(alice[1]))).json()
    assert detail["members"] == [alice[0]] and detail["current_version"] == 1
    assert detail["definition"]["components"][0]["id"] == "page"
    assert study_id in [s["id"] for s in
                        (await client.get("/api/studies", headers=bearer(alice[1]))).json()]

    # Bob cannot see, change, re-import or share Alice's study.
    assert study_id not in [s["id"] for s in
                            (await client.get("/api/studies", headers=bearer(bob[1]))).json()]
    for method, path, body in [
        ("GET", f"/api/studies/{study_id}", None),
        ("GET", f"/api/studies/{study_id}/versions/1", None),
        ("GET", f"/api/studies/{study_id}/batches", None),
        ("POST", f"/api/studies/{study_id}/batches", {"label": "mine now"}),
        ("POST", f"/api/studies/{study_id}/members", {"username": bob[0]}),
    ]:
        response = await client.request(method, path, headers=bearer(bob[1]), json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"
    response = await upload(client, bob[1], study_zip(study_uuid))
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    # Missing studies are 404 for everybody.
    response = await client.get("/api/studies/no-such-study", headers=bearer(bob[1]))
    assert response.status_code == 404 and response.json()["code"] == "study_not_found"

    # Shared, Bob may re-import: version 2.
    response = await client.post(f"/api/studies/{study_id}/members", headers=bearer(alice[1]),
                                  json={"username": bob[0]})
    assert response.status_code == 201 and sorted(response.json()) == sorted([alice[0], bob[0]])
    response = await upload(client, bob[1], study_zip(study_uuid, "API study v2"))
    assert response.status_code == 201 and response.json()["version"] == 2
    version1 = (await client.get(f"/api/studies/{study_id}/versions/1",
                                 headers=bearer(bob[1]))).json()
    assert version1["definition"]["title"] == "API study"
    assert [f["path"] for f in version1["files"]] == ["index.html"]
    assert version1["files"][0]["media_type"] == "text/html"
    response = await client.get(f"/api/studies/{study_id}/versions/3", headers=bearer(bob[1]))
    assert response.status_code == 404 and response.json()["code"] == "version_not_found"
    # And can be taken off again.
    response = await client.delete(f"/api/studies/{study_id}/members/{bob[0]}",
                                   headers=bearer(alice[1]))
    assert response.status_code == 204
    assert (await client.get(f"/api/studies/{study_id}",
                             headers=bearer(bob[1]))).status_code == 403
    # Sharing with nobody is a 404.
    response = await client.post(f"/api/studies/{study_id}/members", headers=bearer(alice[1]),
                                  json={"username": "ghost-" + secrets.token_hex(3)})
    assert response.status_code == 404 and response.json()["code"] == "account_not_found"


async def test_import_errors_and_formats(client: AsyncTestClient, alice: tuple[str, str],
                                         tmp_path: Path) -> None:
    response = await upload(client, alice[1], b"not a zip at all", "study.zip")
    assert response.status_code == 400 and response.json()["code"] == "bad_archive"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("study.toml", 'title = "x"\n[[components]]\nhtml_file = "../x.html"\n')
    response = await upload(client, alice[1], out.getvalue())
    assert response.status_code == 400 and response.json()["code"] == "unsafe_path"
    assert "components[0].html_file" in response.json()["message"]

    response = await upload(client, alice[1], jzip(str(uuid.uuid4())), "rt.jzip")
    assert response.status_code == 201, response.text
    study_id = response.json()["study_id"]
    assert study_id.startswith("rt")
    batch = (await client.post(f"/api/studies/{study_id}/batches", headers=bearer(alice[1]),
                               json={})).json()
    assert batch["allowed_link_types"] == ["general_single", "preview"]

    # Importing a folder on the server: administrators only.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.toml").write_text(
        'title = "From path"\n[[components]]\nhtml_file = "a.html"\n')
    (tmp_path / "s" / "a.html").write_text("<p>a</p>")
    body = {"path": str(tmp_path / "s")}
    response = await client.post("/api/studies/import-path", headers=bearer(alice[1]), json=body)
    assert response.status_code == 403
    response = await client.post("/api/studies/import-path", headers=ADMIN, json=body)
    assert response.status_code == 201 and response.json()["title"] == "From path"
    into = response.json()["study_id"]
    response = await client.post("/api/studies/import-path", headers=ADMIN,
                                 json={**body, "study": into})
    assert response.status_code == 201 and response.json()["version"] == 2
    response = await client.post("/api/studies/import-path", headers=ADMIN,
                                 json={"path": str(tmp_path / "nothing-here")})
    assert response.status_code == 400 and response.json()["code"] == "not_found"


async def test_batches_links_csv_and_runs(client: AsyncTestClient, alice: tuple[str, str],
                                          alice_study: str, pool: asyncpg.Pool) -> None:
    headers = bearer(alice[1])
    base = f"/api/studies/{alice_study}/batches"
    response = await client.post(base, headers=headers, json={"label": "Tuesday 3 PM"})
    assert response.status_code == 201, response.text
    batch = response.json()
    assert (batch["label"], batch["active"], batch["max_total_participants"],
            batch["participants"]) == ("Tuesday 3 PM", True, 5, 0)  # 5: the study's default
    assert client.app.state.opened[-1] == batch["id"]
    batch_url = f"{base}/{batch['id']}"
    assert (await client.get(batch_url, headers=headers)).json()["id"] == batch["id"]
    assert [b["id"] for b in (await client.get(base, headers=headers)).json()] == [batch["id"]]

    response = await client.patch(batch_url, headers=headers,
                                  json={"max_total_participants": None, "active": False,
                                        "json_input": {"condition": "B"}})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert (patched["max_total_participants"], patched["active"], patched["json_input"],
            patched["label"]) == (None, False, {"condition": "B"}, "Tuesday 3 PM")
    response = await client.patch(batch_url, headers=headers,
                                  json={"allowed_link_types": ["vip"]})
    assert response.status_code == 400 and response.json()["code"] == "bad_link_type"
    response = await client.patch(batch_url, headers=headers, json={"active": "yes"})
    assert response.status_code == 400 and response.json()["code"] == "bad_request"
    await client.patch(batch_url, headers=headers, json={"active": True})

    labels = [f"P{i:03d}" for i in range(120)]
    response = await client.post(f"{batch_url}/links", headers=headers,
                                 json={"type": "personal_single", "labels": labels})
    assert response.status_code == 201, response.text
    links = response.json()
    assert [link["label"] for link in links] == labels
    assert links[0]["url"] == f"{BASE_URL}/go/{links[0]['code']}"
    response = await client.post(f"{batch_url}/links", headers=headers,
                                 json={"type": "general_multiple", "count": 2})
    assert response.status_code == 201 and len(response.json()) == 2
    response = await client.post(f"{batch_url}/links", headers=headers,
                                 json={"type": "golden_ticket", "count": 2})
    assert response.status_code == 400 and response.json()["code"] == "bad_link_type"
    listed = (await client.get(f"{batch_url}/links", headers=headers,
                               params={"type": "general_multiple"})).json()
    assert len(listed) == 2

    entered = await catalog.enter(pool, links[0]["code"], {"src": "email"})
    response = await client.get(f"{batch_url}/links.csv", headers=headers,
                                params={"type": "personal_single"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["label"] for row in rows] == labels
    assert [row["code"] for row in rows] == [link["code"] for link in links]
    assert all(row["url"] == f"{BASE_URL}/go/{row['code']}" for row in rows)
    assert rows[0]["used_at"] and not rows[1]["used_at"]

    runs = (await client.get(f"{batch_url}/runs", headers=headers)).json()
    assert [(r["id"], r["label"], r["url_query"], r["link_type"], r["study_version"])
            for r in runs] == [(entered.run_id, "P000", {"src": "email"}, "personal_single", 1)]

    # The batch must belong to the study in the path.
    _, other_token = await new_account(client, "carol")
    other_study = (await upload(client, other_token, study_zip(str(uuid.uuid4())))).json()
    response = await client.get(f"/api/studies/{other_study['study_id']}/batches/{batch['id']}",
                                headers=bearer(other_token))
    assert response.status_code == 404 and response.json()["code"] == "batch_not_found"
    for path in (batch_url, f"{batch_url}/links", f"{batch_url}/links.csv", f"{batch_url}/runs"):
        response = await client.get(path, headers=bearer(other_token))
        assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_openapi_documents_the_routes(client: AsyncTestClient) -> None:
    schema = client.app.openapi_schema.to_schema()
    paths = schema["paths"]
    assert "/api/studies/{study_id}/batches/{batch_id}/links.csv" in paths
    tags = {tag for path in paths.values() for op in path.values() for tag in op.get("tags", [])}
    assert {"accounts", "tokens", "studies", "batches", "links", "runs"} <= tags
