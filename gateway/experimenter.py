"""The experimenter API: accounts, API tokens, studies, batches, links and runs.

``experimenter_routes`` is a litestar Router mounted at ``/api``. Every route
needs ``Authorization: Bearer <token>``: an API token of an account
(results_store/accounts.py) or the deployment's ``COHORT_ADMIN_TOKEN``, which
acts as an administrator without an account. Authentication goes through
``AUTHENTICATORS``: a list of functions that each may recognise a request, so
the console's session cookie (issue 8) is one more entry there.

Errors are ``{"code", "message"}`` with 400 (bad input), 401 (no valid token),
403 (``forbidden``: not your study / admins only), 404 (``*_not_found``), 409
(exists already) and 413 (too large). Studies are reached through their id; a
batch always under its study (``/api/studies/<study>/batches/<batch>``), so one
access check on the study covers everything below it.

The app must hold ``app.state.pg`` (an asyncpg pool) and ``app.state.settings``.
Optionally ``app.state.batch_opener`` and ``app.state.batch_updater``: async
callables ``(Batch) -> None`` called after a batch is created or changed (the
live side opens it in the event log, or records its new group limits).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response, Router, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody, MultipartBody
from msgspec import UNSET, UnsetType

from results_store import accounts, catalog, studies
from results_store.accounts import Account, AccountError, IssuedToken, TokenInfo
from results_store.catalog import Batch, BatchUpdate, CatalogError, Link, Run
from results_store.definition import GroupSettings, StudyDefinition
from results_store.studies import (
    FileInfo,
    ImportLimits,
    StoredStudy,
    StudyImportError,
    StudyInfo,
    StudySummary,
    VersionInfo,
)

log = logging.getLogger("cohort.experimenter")

# The authenticated account, injected into every handler as ``me``.
Me = NamedDependency[Account]

# Hard cap on an upload's body; the study size limits (settings) are checked too.
MAX_UPLOAD_BYTES = 1024 * 1024 * 1024
ARCHIVE_SLACK_BYTES = 64 * 1024 * 1024  # zip headers on top of the files' own bytes


class ApiError(msgspec.Struct):
    code: str
    message: str


class ApiProblem(Exception):
    """Raised by a handler: answered as ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def problem_response(_: Request, exc: ApiProblem) -> Response[ApiError]:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return Response(ApiError(exc.code, exc.message), status_code=exc.status, headers=headers)


def _validation_response(_: Request, exc: ValidationException) -> Response[ApiError]:
    detail = exc.detail
    if exc.extra:
        detail = f"{detail}: {msgspec.json.encode(exc.extra).decode()}"
    return Response(ApiError("bad_request", detail), status_code=400)


def _http_response(_: Request, exc: HTTPException) -> Response[ApiError]:
    code = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
            413: "too_large"}.get(exc.status_code, "error")
    return Response(ApiError(code, exc.detail), status_code=exc.status_code,
                    headers=exc.headers)


_IMPORT_STATUS = {"forbidden": 403, "study_not_found": 404, "not_found": 400,
                  "too_large": 413, "too_many_files": 413}
_CATALOG_STATUS = {"study_not_found": 404, "batch_not_found": 404, "batch_exists": 409,
                   "code_collision": 409, "batch_closed": 409}
_ACCOUNT_STATUS = {"account_exists": 409, "account_not_found": 404, "study_not_found": 404}


def _catalog_problem(_: Request, exc: CatalogError) -> Response[ApiError]:
    return Response(ApiError(exc.code, exc.message),
                    status_code=_CATALOG_STATUS.get(exc.code, 400))


def _account_problem(_: Request, exc: AccountError) -> Response[ApiError]:
    return Response(ApiError(exc.code, exc.message),
                    status_code=_ACCOUNT_STATUS.get(exc.code, 400))


def _import_problem(_: Request, exc: StudyImportError) -> Response[ApiError]:
    return Response(ApiError(exc.code, exc.message),
                    status_code=_IMPORT_STATUS.get(exc.code, 400))


# ---------------------------------------------------------------------------
# Authentication


Authenticator = Callable[[ASGIConnection], Awaitable[Account | None]]


async def account_for_token(connection: ASGIConnection, token: str) -> Account:
    """The admin token's account, or the account of an API token; 401 for a bad one."""
    admin_token = connection.app.state.settings.admin_token
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return accounts.ADMIN_TOKEN_ACCOUNT
    account = await accounts.resolve_token(connection.app.state.pg, token)
    if account is None:
        raise ApiProblem(401, "unauthorized", "the API token is unknown or revoked")
    return account


async def bearer_authenticator(connection: ASGIConnection) -> Account | None:
    """``Authorization: Bearer <token>``; None when the request has none."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return await account_for_token(connection, token)


async def query_token_authenticator(connection: ASGIConnection) -> Account | None:
    """``?token=`` on WebSockets only (browsers cannot set headers on them)."""
    token = connection.query_params.get("token", "")
    if connection.scope["type"] != "websocket" or not token:
        return None
    return await account_for_token(connection, token)


async def session_cookie_authenticator(connection: ASGIConnection) -> Account | None:
    """The console's login cookie (gateway/console.py): CSRF header on unsafe methods,
    same origin on sockets."""
    from gateway.console import session_cookie_authenticator as console_cookie

    return await console_cookie(connection)


async def login(pool: asyncpg.Pool, username: str, password: str) -> Account:
    """The account of a username and password (the console's login); 401 otherwise."""
    account = await accounts.verify_password(pool, username, password)
    if account is None:
        raise ApiProblem(401, "unauthorized", "unknown username or wrong password")
    return account


# Tried in order; the first that recognises the request wins.
AUTHENTICATORS: list[Authenticator] = [bearer_authenticator, query_token_authenticator,
                                       session_cookie_authenticator]


async def authenticate(connection: ASGIConnection) -> Account:
    for authenticator in AUTHENTICATORS:
        account = await authenticator(connection)
        if account is not None:
            return account
    raise ApiProblem(401, "unauthorized", "an API token is required (Authorization: Bearer)")


async def auth_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Authenticates every route of the router before its body is read."""
    connection.state.cohort_account = await authenticate(connection)


async def current_account(request: Request) -> Account:
    account = request.state.get("cohort_account")
    return account if account is not None else await authenticate(request)


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pg


def _require_admin(me: Account) -> None:
    if not me.is_admin:
        raise ApiProblem(403, "forbidden", "only administrators may do this")


def _require_account(me: Account) -> None:
    if me.id == 0:
        raise ApiProblem(400, "no_account", "the admin token has no account; create one "
                         "(POST /api/accounts) and use its API token")


async def check_study(request: Request, me: Account, study_id: str) -> None:
    pool = _pool(request)
    if await pool.fetchval("SELECT 1 FROM studies WHERE id = $1", study_id) is None:
        raise ApiProblem(404, "study_not_found", f"there is no study {study_id!r}")
    if not await accounts.can_access(pool, me, study_id):
        raise ApiProblem(403, "forbidden", f"you have no access to study {study_id!r}")


async def study_batch(request: Request, me: Account, study_id: str, batch_id: str) -> Batch:
    await check_study(request, me, study_id)
    batch = await catalog.get_batch(_pool(request), batch_id)
    if batch is None or batch.study_id != study_id:
        raise ApiProblem(404, "batch_not_found", f"study {study_id!r} has no batch {batch_id!r}")
    return batch


def _base_url(request: Request) -> str:
    public = request.app.state.settings.public_url
    return public.rstrip("/") if public else f"{request.url.scheme}://{request.url.netloc}"


# ---------------------------------------------------------------------------
# Accounts and tokens


class NewAccount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: str
    display_name: str = ""
    password: str | None = None
    is_admin: bool = False


class AccountCreated(msgspec.Struct, kw_only=True):
    account: Account
    token: str            # the new account's first API token, shown once


class NewToken(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str = ""


@post("/accounts", status_code=201, tags=["accounts"])
async def create_account(request: Request, me: Me, data: JSONBody[NewAccount]) -> AccountCreated:
    """Create an account (administrators only); answers its first API token, once."""
    _require_admin(me)
    account = await accounts.create_account(
        _pool(request), data.username, password=data.password, display_name=data.display_name,
        is_admin=data.is_admin)
    issued = await accounts.issue_token(_pool(request), account.id, "initial")
    log.info("account created", extra={"account": account.username, "by": me.username})
    return AccountCreated(account=account, token=issued.token)


@get("/accounts", tags=["accounts"])
async def list_accounts(request: Request, me: Me) -> list[Account]:
    """Every account (administrators only)."""
    _require_admin(me)
    return await accounts.list_accounts(_pool(request))


@get("/me", tags=["accounts"])
async def who_am_i(me: Me) -> Account:
    """The account the token belongs to."""
    return me


@post("/tokens", status_code=201, tags=["tokens"])
async def issue_token(request: Request, me: Me, data: JSONBody[NewToken]) -> IssuedToken:
    """Issue an API token for your account. The token is in this answer only."""
    _require_account(me)
    return await accounts.issue_token(_pool(request), me.id, data.name)


@get("/tokens", tags=["tokens"])
async def list_tokens(request: Request, me: Me) -> list[TokenInfo]:
    """Your API tokens (never the tokens themselves)."""
    _require_account(me)
    return await accounts.list_tokens(_pool(request), me.id)


@delete("/tokens/{token_id:int}", tags=["tokens"])
async def revoke_token(request: Request, me: Me, token_id: FromPath[int]) -> None:
    """Revoke one of your API tokens: it stops working at once."""
    _require_account(me)
    if not await accounts.revoke_token(_pool(request), me.id, token_id):
        raise ApiProblem(404, "token_not_found", f"you have no token {token_id}")


# ---------------------------------------------------------------------------
# Studies


@dataclass
class StudyUpload:
    file: UploadFile


class ImportPath(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str
    study: str | None = None


class StudyDetail(StudyInfo, kw_only=True):
    definition: StudyDefinition | None = None


class VersionDetail(msgspec.Struct, kw_only=True):
    study_id: str
    version: VersionInfo
    definition: StudyDefinition
    files: list[FileInfo]


class NewMember(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: str


def _limits(request: Request) -> ImportLimits:
    return ImportLimits.from_settings(request.app.state.settings)


def _upload_size_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    limit = ImportLimits.from_settings(connection.app.state.settings).max_bytes
    length = connection.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + ARCHIVE_SLACK_BYTES:
        raise ApiProblem(413, "too_large", f"the upload is larger than the study size limit "
                         f"({limit} bytes)")


@post("/studies", status_code=201, tags=["studies"], guards=[_upload_size_guard],
      request_max_body_size=MAX_UPLOAD_BYTES)
async def import_study_upload(
    request: Request, me: Me,
    data: MultipartBody[StudyUpload],
    study: FromQuery[str | None] = None,
) -> StoredStudy:
    """Import a study from an uploaded archive (multipart field ``file``): a .zip of a
    folder with study.toml or study.json, or a JATOS .jzip. The same uuid again makes
    a new version of that study (yours, or shared with you). ``?study=<id>`` imports
    into that study (for a study.toml without a uuid)."""
    if study is not None:
        await check_study(request, me, study)
    limits = _limits(request)
    content = await data.file.read()
    if len(content) > limits.max_bytes + ARCHIVE_SLACK_BYTES:
        raise ApiProblem(413, "too_large", "the upload is larger than the study size limit")
    source = await asyncio.to_thread(studies.read_study_archive, content,
                                     data.file.filename or "upload", limits)
    stored = await studies.import_study(_pool(request), source, me, into_study=study)
    log.info("study imported", extra={"study": stored.study_id, "version": stored.version,
                                      "by": me.username})
    return stored


@post("/studies/import-path", status_code=201, tags=["studies"])
async def import_study_path(request: Request, me: Me, data: JSONBody[ImportPath]) -> StoredStudy:
    """Import a study from a folder, .zip or .jzip on the server (administrators only)."""
    _require_admin(me)
    if data.study is not None:
        await check_study(request, me, data.study)
    source = await asyncio.to_thread(studies.read_study, Path(data.path), _limits(request))
    stored = await studies.import_study(_pool(request), source, me, into_study=data.study)
    log.info("study imported", extra={"study": stored.study_id, "version": stored.version,
                                      "by": me.username})
    return stored


@get("/studies", tags=["studies"])
async def list_studies(request: Request, me: Me) -> list[StudySummary]:
    """The studies you may touch (administrators: every study)."""
    return await studies.list_studies(_pool(request), me)


@get("/studies/{study_id:str}", tags=["studies"])
async def get_study(request: Request, me: Me, study_id: FromPath[str]) -> StudyDetail:
    """A study: its versions, members and current definition."""
    await check_study(request, me, study_id)
    info = await studies.get_study(_pool(request), study_id)
    if info is None:
        raise ApiProblem(404, "study_not_found", f"there is no study {study_id!r}")
    definition = await studies.load_definition(_pool(request), study_id)
    return StudyDetail(**msgspec.structs.asdict(info), definition=definition)


@get("/studies/{study_id:str}/versions/{version:int}", tags=["studies"])
async def get_study_version(request: Request, me: Me, study_id: FromPath[str],
                            version: FromPath[int]) -> VersionDetail:
    """One version of a study: its definition and its files."""
    await check_study(request, me, study_id)
    info = await studies.get_study(_pool(request), study_id)
    found = [v for v in info.versions if v.version == version] if info else []
    definition = await studies.load_definition(_pool(request), study_id, version)
    if not found or definition is None:
        raise ApiProblem(404, "version_not_found", f"study {study_id!r} has no version {version}")
    files = await studies.list_files(_pool(request), study_id, version)
    return VersionDetail(study_id=study_id, version=found[0], definition=definition, files=files)


@post("/studies/{study_id:str}/members", status_code=201, tags=["studies"])
async def share_study(request: Request, me: Me, study_id: FromPath[str],
                      data: JSONBody[NewMember]) -> list[str]:
    """Share the study with another account; answers the members."""
    await check_study(request, me, study_id)
    await accounts.share_study(_pool(request), study_id, data.username)
    return [m.username for m in await accounts.list_members(_pool(request), study_id)]


@delete("/studies/{study_id:str}/members/{username:str}", tags=["studies"])
async def unshare_study(request: Request, me: Me, study_id: FromPath[str],
                        username: FromPath[str]) -> None:
    """Take an account off the study's members."""
    await check_study(request, me, study_id)
    if not await accounts.unshare_study(_pool(request), study_id, username):
        raise ApiProblem(404, "member_not_found", f"{username!r} is not a member")


# ---------------------------------------------------------------------------
# Batches


class NewBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new batch. Fields left out take the study's defaults (its batch settings,
    JATOS: the first batch of the archive)."""

    id: str | None = None
    label: str = ""
    active: bool = True
    max_total_participants: int | UnsetType | None = UNSET
    allowed_link_types: list[str] | UnsetType = UNSET
    json_input: Any | UnsetType = UNSET
    group_settings: GroupSettings | UnsetType | None = UNSET


@post("/studies/{study_id:str}/batches", status_code=201, tags=["batches"])
async def create_batch(request: Request, me: Me, study_id: FromPath[str],
                       data: JSONBody[NewBatch]) -> Batch:
    """Create a batch of the study."""
    await check_study(request, me, study_id)
    batch = await catalog.create_batch(
        _pool(request), study_id, label=data.label, active=data.active,
        max_total_participants=data.max_total_participants,
        allowed_link_types=data.allowed_link_types, json_input=data.json_input,
        group_settings=data.group_settings, batch_id=data.id, created_by=me.id or None)
    opener = request.app.state.get("batch_opener")
    if opener is not None:
        await opener(batch)
    return batch


@get("/studies/{study_id:str}/batches", tags=["batches"])
async def list_batches(request: Request, me: Me, study_id: FromPath[str]) -> list[Batch]:
    """The study's batches."""
    await check_study(request, me, study_id)
    return await catalog.list_batches(_pool(request), study_id)


@get("/studies/{study_id:str}/batches/{batch_id:str}", tags=["batches"])
async def get_batch(request: Request, me: Me, study_id: FromPath[str],
                    batch_id: FromPath[str]) -> Batch:
    """One batch: settings, limits and how many participants entered."""
    return await study_batch(request, me, study_id, batch_id)


@patch("/studies/{study_id:str}/batches/{batch_id:str}", tags=["batches"])
async def update_batch(request: Request, me: Me, study_id: FromPath[str], batch_id: FromPath[str],
                       data: JSONBody[BatchUpdate]) -> Batch:
    """Change a batch: label, active, limits, allowed link types, JSON input, groups."""
    await study_batch(request, me, study_id, batch_id)
    batch = await catalog.update_batch(_pool(request), batch_id, data)
    if batch is None:
        raise ApiProblem(404, "batch_not_found", f"there is no batch {batch_id!r}")
    updater = request.app.state.get("batch_updater")
    if updater is not None:
        await updater(batch)  # group limits live in the event log too
    return batch


# ---------------------------------------------------------------------------
# Links and runs


class NewLinks(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str
    count: int | None = None
    labels: list[str] | None = None
    label_required: bool = False


class LinkOut(Link, kw_only=True):
    url: str = ""


def _with_url(links: list[Link], base: str) -> list[LinkOut]:
    return [LinkOut(**msgspec.structs.asdict(link), url=catalog.link_url(base, link.code))
            for link in links]


@post("/studies/{study_id:str}/batches/{batch_id:str}/links", status_code=201, tags=["links"])
async def create_links(request: Request, me: Me, study_id: FromPath[str], batch_id: FromPath[str],
                       data: JSONBody[NewLinks]) -> list[LinkOut]:
    """Create links of one type: ``count`` of them, or one per label (in order)."""
    await study_batch(request, me, study_id, batch_id)
    links = await catalog.create_links(_pool(request), batch_id, data.type, count=data.count,
                                       labels=data.labels, label_required=data.label_required,
                                       created_by=me.id or None)
    return _with_url(links, _base_url(request))


@get("/studies/{study_id:str}/batches/{batch_id:str}/links", tags=["links"])
async def list_links(request: Request, me: Me, study_id: FromPath[str], batch_id: FromPath[str],
                     type: FromQuery[str | None] = None) -> list[LinkOut]:
    """The batch's links (optionally of one ``type``), in creation order."""
    await study_batch(request, me, study_id, batch_id)
    links = await catalog.list_links(_pool(request), batch_id, type)
    return _with_url(links, _base_url(request))


@get("/studies/{study_id:str}/batches/{batch_id:str}/links.csv", tags=["links"],
     media_type="text/csv")
async def export_links(request: Request, me: Me, study_id: FromPath[str], batch_id: FromPath[str],
                       type: FromQuery[str | None] = None) -> Response[str]:
    """The batch's links as CSV: code, type, label, url, created_at, used_at."""
    await study_batch(request, me, study_id, batch_id)
    links = await catalog.list_links(_pool(request), batch_id, type)
    return Response(catalog.links_csv(links, _base_url(request)),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="links-{batch_id}.csv"'})


@get("/studies/{study_id:str}/batches/{batch_id:str}/runs", tags=["runs"])
async def list_runs(request: Request, me: Me, study_id: FromPath[str], batch_id: FromPath[str],
                    limit: FromQuery[int] = 1000, offset: FromQuery[int] = 0) -> list[Run]:
    """The batch's runs in order of entry: link, worker, label, URL query, version."""
    await study_batch(request, me, study_id, batch_id)
    return await catalog.list_runs(_pool(request), batch_id, limit=limit, offset=offset)


# The answers every experimenter-facing router gives to errors ({"code", "message"}).
API_EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiProblem: problem_response,
    ValidationException: _validation_response,
    HTTPException: _http_response,
}

experimenter_routes = Router(
    path="/api",
    route_handlers=[
        create_account, list_accounts, who_am_i, issue_token, list_tokens, revoke_token,
        import_study_upload, import_study_path, list_studies, get_study, get_study_version,
        share_study, unshare_study, create_batch, list_batches, get_batch, update_batch,
        create_links, list_links, export_links, list_runs,
    ],
    dependencies={"me": Provide(current_account)},
    guards=[auth_guard],
    exception_handlers={
        **API_EXCEPTION_HANDLERS,
        StudyImportError: _import_problem,
        CatalogError: _catalog_problem,
        AccountError: _account_problem,
    },
    security=[{"BearerToken": []}],
)
