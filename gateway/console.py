"""The experimenter's console: server-rendered pages under ``/console``.

Plain HTML from this module, one shared stylesheet and small vanilla-JS ES
modules under ``gateway/static/console/`` (no front-end build). The pages that
change live (monitor, batch session, groups, timeline, results) render a
skeleton plus a JSON config, and their scripts talk to the experimenter API
(``/api``) and the console socket (``/ws/console/<batch>``) with the same
session cookie.

Sessions: logging in (username and password, results_store/accounts.py) sets a
signed cookie (HMAC with ``COHORT_SECRET``, so any gateway accepts it; HttpOnly,
SameSite=Lax, Secure on https) naming the session id, the account and a
fingerprint of its password hash (changing the password ends every session).
Logging out records the session id in Redis until the cookie would have
expired. ``session_cookie_authenticator`` lets the same cookie authenticate the
API and the console socket (gateway/experimenter.py ``AUTHENTICATORS``).

CSRF: every session has a token (an HMAC of its id). Console forms carry it in
a hidden ``csrf`` field; scripts send it as ``X-CSRF-Token``. Every POST of the
console and every non-GET API request authenticated by the cookie is refused
(403 ``csrf_failed``) without it; a console socket opened with the cookie must
come from the same origin. The login form has its own token, tied to a
short-lived pre-login cookie.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import logging
import re
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, UploadFile
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Stream
from litestar.static_files import create_static_files_router

from gateway.closing import close_through_hub
from gateway.experimenter import (
    ARCHIVE_SLACK_BYTES,
    MAX_UPLOAD_BYTES,
    ApiProblem,
    authenticate,
    check_study,
    study_batch,
)
from gateway.experimenter import login as check_login
from results_store import accounts, catalog, studies
from results_store.accounts import Account, AccountError
from results_store.catalog import Batch, BatchUpdate, CatalogError
from results_store.closing import CloseRefused
from results_store.definition import GroupSettings
from results_store.studies import LINK_TYPES, ImportLimits, StudyImportError

log = logging.getLogger("cohort.console")

STATIC = Path(__file__).parent / "static" / "console"
COOKIE = "cohort_console"
LOGIN_COOKIE = "cohort_login"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600
LOGIN_FORM_TTL_S = 3600
MAX_LOGIN_FAILURES = 10          # per username and address, within LOGIN_FAILURE_WINDOW_S
LOGIN_FAILURE_WINDOW_S = 300
LINKS_SHOWN = 200                # the batch page lists this many links; the CSV has all
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

LINK_TYPE_NAMES = {
    "personal_single": "Personal single",
    "personal_multiple": "Personal multiple",
    "general_single": "General single",
    "general_multiple": "General multiple",
    "mturk": "MTurk",
    "mturk_sandbox": "MTurk sandbox",
    "preview": "Preview",
}


# ---------------------------------------------------------------------------
# Session cookies


class ConsoleSession(msgspec.Struct, array_like=True, frozen=True):
    sid: str            # random; logout records it as ended
    account: int
    username: str
    expires: int        # unix seconds
    pw: str             # fingerprint of the password hash when the session began


_session_encoder = msgspec.msgpack.Encoder()
_session_decoder = msgspec.msgpack.Decoder(ConsoleSession)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(settings: Any, purpose: str) -> bytes:
    return hmac.new(settings.secret.encode(), f"cohort console {purpose} v1".encode(),
                    hashlib.sha256).digest()


def _sign(settings: Any, purpose: str, data: bytes) -> bytes:
    return hmac.new(_key(settings, purpose), data, hashlib.sha256).digest()


def password_fingerprint(password_hash: str | None) -> str:
    return _b64(hashlib.sha256((password_hash or "").encode()).digest()[:9])


def encode_session(settings: Any, session: ConsoleSession) -> str:
    payload = _session_encoder.encode(session)
    return f"{_b64(payload)}.{_b64(_sign(settings, 'session', payload))}"


def decode_session(settings: Any, value: str, now: float | None = None) -> ConsoleSession | None:
    """The session a cookie names, or None (malformed, forged or expired)."""
    payload_b64, _, mac_b64 = value.partition(".")
    try:
        payload, mac = _unb64(payload_b64), _unb64(mac_b64)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac, _sign(settings, "session", payload)):
        return None
    try:
        session = _session_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    return session if session.expires > (time.time() if now is None else now) else None


def csrf_token(settings: Any, sid: str) -> str:
    return _b64(_sign(settings, "csrf", sid.encode()))[:32]


def _login_token(settings: Any, nonce: str) -> str:
    return _b64(_sign(settings, "login", nonce.encode()))[:32]


def _ended_key(settings: Any, sid: str) -> str:
    return f"{settings.key_prefix}:console:ended:{sid}"


def _failures_key(settings: Any, username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username}\0{address}".encode()).hexdigest()[:24]
    return f"{settings.key_prefix}:console:login-failures:{digest}"


def _same_origin(connection: ASGIConnection) -> bool:
    """Origin (or, without one, Referer) names the host the request came to."""
    source = connection.headers.get("origin") or connection.headers.get("referer")
    if not source:
        return connection.scope["type"] == "http"  # old browsers send neither on GET forms
    host = connection.headers.get("host", "")
    rest = source.split("://", 1)[-1]
    return rest.split("/", 1)[0] == host


async def load_session(connection: ASGIConnection) -> tuple[ConsoleSession, Account] | None:
    """The console session of the request's cookie and its account; None if there is
    none or it is no longer good (expired, logged out, account gone, password changed)."""
    value = connection.cookies.get(COOKIE)
    if not value:
        return None
    settings = connection.app.state.settings
    session = decode_session(settings, value)
    if session is None:
        return None
    if await connection.app.state.redis.exists(_ended_key(settings, session.sid)):
        return None
    row = await connection.app.state.pg.fetchrow(
        "SELECT id, username, display_name, is_admin, created_at, password_hash "
        "FROM accounts WHERE id = $1", session.account)
    if row is None or not row["password_hash"] or password_fingerprint(
            row["password_hash"]) != session.pw:
        return None
    account = Account(id=row["id"], username=row["username"], display_name=row["display_name"],
                      is_admin=row["is_admin"], created_at=row["created_at"])
    return session, account


async def session_cookie_authenticator(connection: ASGIConnection) -> Account | None:
    """The console's cookie, for the API and the console socket (after bearer and
    ``?token=``). Unsafe methods need the session's CSRF token in ``X-CSRF-Token``;
    a socket must be opened from the same origin."""
    found = await load_session(connection)
    if found is None:
        return None
    session, account = found
    settings = connection.app.state.settings
    if connection.scope["type"] == "websocket":
        if not _same_origin(connection):
            raise ApiProblem(403, "forbidden", "a console socket must come from the console")
    elif connection.scope.get("method", "GET") not in SAFE_METHODS:
        sent = connection.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(settings, session.sid).encode()):
            raise ApiProblem(403, "csrf_failed", "the X-CSRF-Token header is missing or wrong")
    return account


# ---------------------------------------------------------------------------
# Page helpers


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfFailed(Exception):
    pass


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _json_script(element_id: str, data: Any) -> str:
    text = msgspec.json.encode(data).decode()
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def when(moment: datetime | None) -> str:
    """A <time> the scripts show in the viewer's time zone (UTC without scripts)."""
    if moment is None:
        return '<span class="muted">&ndash;</span>'
    utc = moment.astimezone(UTC)
    return (f'<time datetime="{esc(utc.isoformat())}">'
            f'{esc(utc.strftime("%Y-%m-%d %H:%M"))} UTC</time>')


_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_PAGE_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.app.state.settings.public_url.startswith(
        "https://")


def _state(request: Request) -> tuple[ConsoleSession, Account] | None:
    return request.state.get("console")


def _me(request: Request) -> Account:
    found = _state(request)
    assert found is not None, "console_guard sets the session"
    return found[1]


def _csrf(request: Request) -> str:
    found = _state(request)
    return csrf_token(request.app.state.settings, found[0].sid) if found else ""


def _csrf_field(request: Request) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(_csrf(request))}">'


def page(request: Request, title: str, body: str, *, crumbs: Iterable[tuple[str, str]] = (),
         scripts: Iterable[str] = (), config: Any = None, status: int = 200,
         cookies: list[Cookie] | None = None) -> Response[str]:
    found = _state(request)
    user = ""
    if found is not None:
        account = found[1]
        name = account.display_name or account.username
        role = ' <span class="badge">admin</span>' if account.is_admin else ""
        user = (f'<div class="user"><span title="{esc(account.username)}">{esc(name)}</span>'
                f'{role}<form method="post" action="/console/logout">{_csrf_field(request)}'
                '<button class="link" type="submit">Log out</button></form></div>')
    trail = '<span class="sep">/</span>'.join(f'<a href="{esc(href)}">{esc(text)}</a>'
                                              for href, text in crumbs)
    crumb_html = f'<nav class="crumbs">{trail}</nav>' if trail else ""
    config_html = _json_script("console-config", config) if config is not None else ""
    script_html = "".join(f'<script type="module" src="/console/static/{esc(name)}"></script>'
                          for name in ("common.js", *scripts))
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · Cohort console</title>
<link rel="stylesheet" href="/console/static/console.css">
<link rel="icon" href="data:,">
</head><body>
<header class="top"><a class="brand" href="/console">Cohort <span>console</span></a>{user}</header>
<main>{crumb_html}{body}</main>
{config_html}{script_html}
</body></html>"""
    return Response(document, status_code=status, media_type="text/html; charset=utf-8",
                    headers=_PAGE_HEADERS, cookies=cookies or [])


def _error_page(request: Request, status: int, title: str, message: str) -> Response[str]:
    body = (f'<section class="card narrow"><h1>{esc(title)}</h1><p>{esc(message)}</p>'
            '<p><a href="/console">Back to the studies</a></p></section>')
    return page(request, title, body, status=status)


def _login_redirect(request: Request, exc: LoginRequired) -> Response[Any]:
    target = "/console/login" + (f"?next={quote(exc.next_path)}" if exc.next_path not in (
        "", "/console") else "")
    return Redirect(target, status_code=303)


def _problem_page(request: Request, exc: ApiProblem) -> Response[str]:
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 413: "Too large"}
    return _error_page(request, exc.status, titles.get(exc.status, "Something is wrong"),
                       exc.message)


def _csrf_page(request: Request, _: CsrfFailed) -> Response[str]:
    return _error_page(request, 403, "Form expired",
                       "This form was not sent from your current console session "
                       "(it may be stale, or from another site). Go back, reload and try again.")


def _http_page(request: Request, exc: HTTPException) -> Response[str]:
    return _error_page(request, exc.status_code, "Error", str(exc.detail))


async def console_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    if handler.opt.get("public"):
        return
    found = await load_session(connection)
    if found is None:
        path = connection.url.path
        query = connection.url.query
        raise LoginRequired(path + (f"?{query}" if query else ""))
    connection.state.console = found


async def _form(request: Request) -> Any:
    """The posted form, after checking its CSRF token (hidden field or header)."""
    form = await request.form()
    sent = form.get("csrf") or request.headers.get(CSRF_HEADER, "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(),
                                                            _csrf(request).encode()):
        raise CsrfFailed()
    return form


def _text(form: Any, name: str, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def _optional_int(form: Any, name: str, what: str) -> int | None:
    raw = _text(form, name)
    if raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise CatalogError("bad_limit", f"{what}: a whole number, or empty for no limit") from None
    if value < 0:
        raise CatalogError("bad_limit", f"{what}: not negative")
    return value


def _safe_next(target: str) -> str:
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"


def _base_url(request: Request) -> str:
    public = request.app.state.settings.public_url
    return public.rstrip("/") if public else f"{request.url.scheme}://{request.url.netloc}"


def _has_routes(request: Request, fragment: str) -> bool:
    """Whether this app serves a route whose path holds ``fragment`` (the replay and
    results APIs are optional here: the pages say when they are missing)."""
    return any(fragment in route.path for route in request.app.routes)


def features(request: Request) -> dict[str, bool]:
    return {"replay": _has_routes(request, "/api/batches/{batch_id:str}/timeline"),
            "results": _has_routes(request, "/api/studies/{study_id:str}/batches/"
                                   "{batch_id:str}/export")}


# ---------------------------------------------------------------------------
# Login and logout


def _login_page(request: Request, *, next_path: str, error: str = "", username: str = "",
                status: int = 200) -> Response[str]:
    nonce = secrets.token_urlsafe(18)
    settings = request.app.state.settings
    cookie = Cookie(key=LOGIN_COOKIE, value=nonce, max_age=LOGIN_FORM_TTL_S, path="/console",
                    httponly=True, samesite="lax", secure=_secure(request))
    problem = f'<p class="alert error" role="alert">{esc(error)}</p>' if error else ""
    body = f"""<section class="card narrow login">
<h1>Log in</h1>{problem}
<form method="post" action="/console/login" class="stack">
<input type="hidden" name="csrf" value="{esc(_login_token(settings, nonce))}">
<input type="hidden" name="next" value="{esc(next_path)}">
<label>Username <input name="username" autocomplete="username" required autofocus
 value="{esc(username)}"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
 required></label>
<button class="primary" type="submit">Log in</button>
</form>
<p class="muted small">Accounts are made by an administrator
(<code>cohort user add NAME --password-stdin</code>).</p>
</section>"""
    return page(request, "Log in", body, status=status, cookies=[cookie])


@get("/login", opt={"public": True})
async def login_form(request: Request, next: FromQuery[str] = "/console") -> Response[str]:
    found = await load_session(request)
    if found is not None:
        return Redirect(_safe_next(next), status_code=303)
    return _login_page(request, next_path=_safe_next(next))


@post("/login", opt={"public": True}, status_code=303)
async def login(request: Request) -> Response[Any]:
    form = await request.form()
    settings = request.app.state.settings
    next_path = _safe_next(_text(form, "next", "/console"))
    username = _text(form, "username")
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    sent = _text(form, "csrf")
    if not nonce or not hmac.compare_digest(sent.encode(), _login_token(settings, nonce).encode()):
        return _login_page(request, next_path=next_path, username=username, status=403,
                           error="The login form expired. Please try again.")
    redis = request.app.state.redis
    address = request.client.host if request.client else ""
    failures_key = _failures_key(settings, username.lower(), address)
    if int(await redis.get(failures_key) or 0) >= MAX_LOGIN_FAILURES:
        return _login_page(request, next_path=next_path, username=username, status=429,
                           error="Too many failed attempts. Wait a few minutes and try again.")
    try:
        account: Account | None = await check_login(request.app.state.pg, username, password)
    except ApiProblem:
        account = None
    if account is None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.incr(failures_key)
            pipe.expire(failures_key, LOGIN_FAILURE_WINDOW_S)
            await pipe.execute()
        log.info("console login refused", extra={"account": username[:64]})
        return _login_page(request, next_path=next_path, username=username, status=401,
                           error="Unknown username or wrong password.")
    await redis.delete(failures_key)
    stored = await request.app.state.pg.fetchval(
        "SELECT password_hash FROM accounts WHERE id = $1", account.id)
    session = ConsoleSession(sid=secrets.token_urlsafe(18), account=account.id,
                             username=account.username,
                             expires=int(time.time()) + SESSION_TTL_S,
                             pw=password_fingerprint(stored))
    log.info("console login", extra={"account": account.username})
    return Redirect(next_path, status_code=303, cookies=[
        Cookie(key=COOKIE, value=encode_session(settings, session), max_age=SESSION_TTL_S,
               path="/", httponly=True, samesite="lax", secure=_secure(request)),
        Cookie(key=LOGIN_COOKIE, value="", max_age=0, path="/console", httponly=True,
               samesite="lax", secure=_secure(request)),
    ])


@post("/logout", status_code=303)
async def logout(request: Request) -> Response[Any]:
    await _form(request)
    session, account = _state(request)  # type: ignore[misc]
    settings = request.app.state.settings
    remaining = max(1, session.expires - int(time.time()))
    await request.app.state.redis.set(_ended_key(settings, session.sid), b"1", ex=remaining)
    log.info("console logout", extra={"account": account.username})
    return Redirect("/console/login", status_code=303, cookies=[
        Cookie(key=COOKIE, value="", max_age=0, path="/", httponly=True, samesite="lax",
               secure=_secure(request))])


# ---------------------------------------------------------------------------
# Studies


_NOTICES = {
    "settings": "Batch settings saved.",
    "active": "The batch is now {state}.",
    "links": "Created {n} link(s).",
    "batch": "Batch created.",
    "imported": "Study imported (version {n}).",
    "closed": "The batch is closed for good.",
}


def _notice(ok: str | None, **values: Any) -> str:
    template = _NOTICES.get(ok or "")
    if template is None:
        return ""
    try:
        text = template.format(**{k: esc(v) for k, v in values.items()})
    except (KeyError, IndexError):
        return ""
    return f'<p class="alert ok" role="status">{text}</p>'


def _problem(message: str) -> str:
    return f'<p class="alert error" role="alert">{esc(message)}</p>' if message else ""


async def _studies_page(request: Request, *, error: str = "", status: int = 200,
                        ok: str | None = None, n: str = "") -> Response[str]:
    me = _me(request)
    found = await studies.list_studies(request.app.state.pg, me)
    rows = "".join(
        f'<tr><td><a href="/console/studies/{esc(s.id)}">{esc(s.title)}</a></td>'
        f'<td><code>{esc(s.id)}</code></td><td class="num">{s.current_version}</td>'
        f'<td>{esc(s.created_by or "")}</td><td>{when(s.created_at)}</td></tr>'
        for s in found)
    table = (f'<table class="grid"><thead><tr><th>Title</th><th>Id</th><th class="num">Version'
             f'</th><th>By</th><th>Imported</th></tr></thead><tbody>{rows}</tbody></table>'
             if found else '<p class="empty">No studies yet. Import one below.</p>')
    body = f"""<h1>Studies</h1>{_notice(ok, n=n)}{_problem(error)}
<section class="card">{table}</section>
<section class="card">
<h2>Import a study</h2>
<p class="muted">A .zip of a folder with <code>study.toml</code> or <code>study.json</code>, or a
JATOS <code>.jzip</code>. The same uuid again makes a new version.</p>
<form method="post" action="/console/studies" enctype="multipart/form-data" class="row">
{_csrf_field(request)}
<input type="file" name="file" accept=".zip,.jzip" required>
<button class="primary" type="submit">Import</button>
</form></section>"""
    return page(request, "Studies", body, status=status)


@get("/")
async def studies_index(request: Request, ok: FromQuery[str | None] = None,
                        n: FromQuery[str] = "") -> Response[str]:
    return await _studies_page(request, ok=ok, n=n)


@post("/studies", request_max_body_size=MAX_UPLOAD_BYTES, status_code=303)
async def import_study(request: Request) -> Response[Any]:
    form = await _form(request)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _studies_page(request, error="Choose a .zip or .jzip file.", status=400)
    limits = ImportLimits.from_settings(request.app.state.settings)
    content = await upload.read()
    if len(content) > limits.max_bytes + ARCHIVE_SLACK_BYTES:
        return await _studies_page(request, status=413, error=(
            f"The file is larger than the study size limit ({limits.max_bytes:,} bytes)."))
    try:
        source = await asyncio.to_thread(studies.read_study_archive, content, upload.filename,
                                         limits)
        stored = await studies.import_study(request.app.state.pg, source, _me(request))
    except StudyImportError as exc:
        return await _studies_page(request, error=f"{exc.code}: {exc.message}", status=400)
    log.info("study imported", extra={"study": stored.study_id, "version": stored.version,
                                      "by": _me(request).username})
    return Redirect(f"/console/studies/{quote(stored.study_id)}?ok=imported&n={stored.version}",
                    status_code=303)


def _state_badge(batch: Batch) -> str:
    """active, inactive, or closed (with its date)."""
    if batch.closed_at is not None:
        return f'<span class="badge closed">closed {when(batch.closed_at)}</span>'
    return ('<span class="badge on">active</span>' if batch.active
            else '<span class="badge off">inactive</span>')


def _batch_row(study_id: str, batch: Batch) -> str:
    limit = batch.max_total_participants
    state = _state_badge(batch)
    return (f'<tr><td><a href="/console/studies/{esc(study_id)}/batches/{esc(batch.id)}">'
            f'{esc(batch.label or batch.id)}</a></td><td><code>{esc(batch.id)}</code></td>'
            f'<td>{state}</td><td class="num">{batch.participants}'
            f'{"" if limit is None else f" / {limit}"}</td><td>{when(batch.created_at)}</td></tr>')


async def _study_page(request: Request, study_id: str, *, error: str = "", status: int = 200,
                      ok: str | None = None, n: str = "") -> Response[str]:
    me = _me(request)
    await check_study(request, me, study_id)
    pool = request.app.state.pg
    info = await studies.get_study(pool, study_id)
    if info is None:
        raise ApiProblem(404, "study_not_found", f"there is no study {study_id!r}")
    definition = await studies.load_definition(pool, study_id)
    batches = await catalog.list_batches(pool, study_id)
    batch_rows = "".join(_batch_row(study_id, b) for b in batches)
    batch_table = (f'<table class="grid"><thead><tr><th>Batch</th><th>Id</th><th>State</th>'
                   f'<th class="num">Participants</th><th>Created</th></tr></thead>'
                   f'<tbody>{batch_rows}</tbody></table>' if batches
                   else '<p class="empty">No batches yet.</p>')
    components = ""
    if definition is not None:
        items = "".join(
            f'<li><strong>{esc(c.title)}</strong> <code>{esc(c.html_file)}</code>'
            f'{"" if c.rounds == 1 else f" · {c.rounds} rounds"}'
            f'{"" if c.active else " · <em>inactive</em>"}</li>'
            for c in definition.components)
        components = f"<ol class=\"components\">{items}</ol>"
    versions = "".join(
        f'<tr><td class="num">{v.version}</td><td>{when(v.created_at)}</td>'
        f'<td>{esc(v.source)}</td><td class="num">{v.file_count}</td>'
        f'<td class="num">{v.total_bytes:,}</td><td>{esc(v.created_by or "")}</td></tr>'
        for v in reversed(info.versions))
    members = ", ".join(esc(m) for m in info.members) or '<span class="muted">none</span>'
    description = (f'<p>{esc(definition.description)}</p>'
                   if definition is not None and definition.description else "")
    body = f"""<h1>{esc(info.title)}</h1>{_notice(ok, n=n)}{_problem(error)}
<p class="muted">Study <code>{esc(info.id)}</code> · version {info.current_version} ·
members: {members}</p>{description}
<section class="card"><h2>Batches</h2>{batch_table}
<details class="create"><summary>New batch</summary>
<form method="post" action="/console/studies/{esc(study_id)}/batches" class="row">
{_csrf_field(request)}
<label>Label <input name="label" maxlength="200" placeholder="Tuesday 3 PM lab"></label>
<label>Max participants <input name="max_total_participants" type="number" min="0"
 placeholder="no limit"></label>
<label class="check"><input type="checkbox" name="active" checked> active</label>
<button class="primary" type="submit">Create batch</button>
</form></details></section>
<div class="columns">
<section class="card"><h2>Components</h2>{components}</section>
<section class="card"><h2>Versions</h2><table class="grid compact"><thead><tr>
<th class="num">#</th><th>Imported</th><th>Source</th><th class="num">Files</th>
<th class="num">Bytes</th><th>By</th></tr></thead><tbody>{versions}</tbody></table></section>
</div>"""
    return page(request, info.title, body, status=status,
                crumbs=[("/console", "Studies")])


@get("/studies/{study_id:str}")
async def study_page(request: Request, study_id: FromPath[str], ok: FromQuery[str | None] = None,
                     n: FromQuery[str] = "") -> Response[str]:
    return await _study_page(request, study_id, ok=ok, n=n)


@post("/studies/{study_id:str}/batches", status_code=303)
async def create_batch(request: Request, study_id: FromPath[str]) -> Response[Any]:
    form = await _form(request)
    me = _me(request)
    await check_study(request, me, study_id)
    try:
        limit = _optional_int(form, "max_total_participants", "max participants")
        batch = await catalog.create_batch(
            request.app.state.pg, study_id, label=_text(form, "label"),
            active=form.get("active") is not None,
            **({} if limit is None else {"max_total_participants": limit}),
            created_by=me.id or None)
    except CatalogError as exc:
        return await _study_page(request, study_id, error=exc.message, status=400)
    opener = request.app.state.get("batch_opener")
    if opener is not None:
        await opener(batch)
    return Redirect(f"/console/studies/{quote(study_id)}/batches/{quote(batch.id)}?ok=batch",
                    status_code=303)


# ---------------------------------------------------------------------------
# Batches: overview (settings, links)

_TABS = (("", "Overview"), ("monitor", "Monitor"), ("session", "Session & groups"),
         ("timeline", "Timeline"), ("results", "Results"))


def _batch_base(study_id: str, batch_id: str) -> str:
    return f"/console/studies/{quote(study_id)}/batches/{quote(batch_id)}"


def _batch_header(request: Request, study_title: str, batch: Batch, current: str) -> str:
    assert batch.study_id is not None
    base = _batch_base(batch.study_id, batch.id)
    here = ' aria-current="page" class="current"'
    tabs = "".join(
        f'<a href="{base}{"/" + slug if slug else ""}"{here if slug == current else ""}>'
        f'{name}</a>' for slug, name in _TABS)
    state = _state_badge(batch)
    limit = ("" if batch.max_total_participants is None
             else f" / {batch.max_total_participants}")
    switch = f"""<form method="post" action="{base}/active" class="switch-form" data-autosubmit>
{_csrf_field(request)}<input type="hidden" name="return" value="{esc(current)}">
<label class="switch" title="Participants may enter only while the batch is active">
<input type="checkbox" name="active" value="on" {"checked" if batch.active else ""}
 id="active-switch"><span class="slider" aria-hidden="true"></span>
<span class="switch-label">Active</span></label>
<noscript><button type="submit">Save</button></noscript></form>"""
    if batch.closed_at is not None:
        switch = ""  # a closed batch is never switched on again
    return f"""<div class="batch-head"><div>
<h1>{esc(batch.label or batch.id)} {state}</h1>
<p class="muted">Batch <code>{esc(batch.id)}</code> of <em>{esc(study_title)}</em> ·
<span id="participant-count">{batch.participants}{limit}</span> participants</p></div>
{switch}</div>
<nav class="tabs">{tabs}</nav>"""


async def _batch_context(request: Request, study_id: str, batch_id: str
                         ) -> tuple[Batch, str, Any]:
    batch = await study_batch(request, _me(request), study_id, batch_id)
    definition = await studies.load_definition(request.app.state.pg, study_id)
    title = definition.title if definition is not None else study_id
    return batch, title, definition


def _crumbs(study_id: str, study_title: str) -> list[tuple[str, str]]:
    return [("/console", "Studies"), (f"/console/studies/{quote(study_id)}", study_title)]


def _settings_form(request: Request, batch: Batch) -> str:
    assert batch.study_id is not None
    base = _batch_base(batch.study_id, batch.id)
    types = "".join(
        f'<label class="check"><input type="checkbox" name="allowed_link_types" value="{t}"'
        f'{" checked" if t in batch.allowed_link_types else ""}> {LINK_TYPE_NAMES[t]}</label>'
        for t in LINK_TYPES)
    groups = batch.group_settings
    json_input = ("" if batch.json_input is None else
                  msgspec.json.format(msgspec.json.encode(batch.json_input), indent=2).decode())

    def num(value: int | None) -> str:
        return "" if value is None else str(value)

    return f"""<form method="post" action="{base}/settings" class="stack settings">
{_csrf_field(request)}
<div class="row">
<label>Label <input name="label" maxlength="200" value="{esc(batch.label)}"></label>
<label>Max total participants <input name="max_total_participants" type="number" min="0"
 value="{num(batch.max_total_participants)}" placeholder="no limit"></label>
</div>
<fieldset><legend>Allowed link types</legend><div class="checks">{types}</div></fieldset>
<fieldset><legend>Groups</legend>
<div class="row">
<label class="check"><input type="checkbox" name="groups" value="on"
 {"checked" if groups is not None else ""}> group study</label>
<label>Max active members <input name="max_active_members" type="number" min="1"
 value="{num(groups.max_active_members if groups else None)}" placeholder="no limit"></label>
<label>Max total members <input name="max_total_members" type="number" min="1"
 value="{num(groups.max_total_members if groups else None)}" placeholder="no limit"></label>
<label>Form groups of <input name="form_by_arrival" type="number" min="1"
 value="{num(groups.form_by_arrival if groups else None)}" placeholder="off"></label>
</div></fieldset>
<label>Batch JSON input
<textarea name="json_input" rows="4" class="code" spellcheck="false"
 placeholder="read-only JSON the study's pages get (jatos.batchJsonInput); empty: none"
>{esc(json_input)}</textarea></label>
<div><button class="primary" type="submit">Save settings</button></div>
</form>"""


def _links_section(request: Request, batch: Batch, links: list[catalog.Link],
                   shown_type: str | None, types_made: set[str], made: str | None) -> str:
    assert batch.study_id is not None
    base = _batch_base(batch.study_id, batch.id)
    api = f"/api/studies/{quote(batch.study_id)}/batches/{quote(batch.id)}"
    base_url = _base_url(request)
    options = "".join(
        f'<option value="{t}"{"" if t in batch.allowed_link_types else " disabled"}'
        f'{" selected" if t == made else ""}>'
        f'{LINK_TYPE_NAMES[t]}{"" if t in batch.allowed_link_types else " (not allowed)"}'
        '</option>' for t in LINK_TYPES)
    total = len(links)  # of the type shown
    recent = links[-LINKS_SHOWN:][::-1]
    rows = []
    for link in recent:
        url = catalog.link_url(base_url, link.code)
        used = when(link.used_at) if link.used_at else '<span class="muted">&ndash;</span>'
        label = esc(link.label) if link.label else '<span class="muted">&ndash;</span>'
        if link.label_required:
            label += ' <span class="badge">asks label</span>'
        rows.append(
            f'<tr data-code="{esc(link.code)}"><td>{label}</td>'
            f'<td>{LINK_TYPE_NAMES.get(link.type, esc(link.type))}</td>'
            f'<td class="url"><div class="url-box"><input readonly value="{esc(url)}" '
            f'aria-label="Link URL"><button type="button" class="copy" data-copy="{esc(url)}">'
            'Copy</button></div></td>'
            f'<td>{when(link.created_at)}</td><td>{used}</td></tr>')
    filters = "".join(
        f'<a href="{base}?type={t}#links" class="chip{" on" if t == shown_type else ""}">'
        f'{LINK_TYPE_NAMES[t]}</a>' for t in sorted(types_made, key=LINK_TYPES.index))
    if filters:
        filters = (f'<span class="muted small">Show:</span><a href="{base}#links" class="chip'
                   f'{"" if shown_type else " on"}">all</a>{filters}')
    csv_href = f"{api}/links.csv" + (f"?type={quote(shown_type)}" if shown_type else "")
    more = (f'<p class="muted small">Showing the newest {LINKS_SHOWN} of {total}; the CSV has '
            'all of them.</p>' if total > LINKS_SHOWN else "")
    table = (f'<table class="grid links"><thead><tr><th>Label</th><th>Type</th><th>URL</th>'
             f'<th>Created</th><th>Used</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
             if links else '<p class="empty">No links yet.</p>')
    head = f"""<section class="card" id="links">
<div class="section-head"><h2>Links <span class="count">{total}</span></h2>
<div class="actions"><a class="button" href="{esc(csv_href)}" download id="links-csv">Export
 CSV</a> <button type="button" class="copy-all">Copy all URLs</button></div></div>"""
    if batch.closed_at is not None:
        return (f'{head}<p class="muted" id="links-closed">{esc(CLOSED_NO_LINKS)}</p>'
                f'<div class="chips">{filters}</div>{more}{table}</section>')
    return f"""{head}
<form method="post" action="{base}/links" class="row create-links">
{_csrf_field(request)}
<label>Type <select name="type" id="link-type">{options}</select></label>
<label>Count <input name="count" type="number" min="1" max="{catalog.MAX_LINKS_PER_CALL}"
 value="1"></label>
<label class="grow">Labels
<textarea name="labels" rows="1" spellcheck="false"
 placeholder="optional: one label per line, one link each"></textarea></label>
<label class="check"><input type="checkbox" name="label_required" value="on"> ask for a
 label (oTree room)</label>
<button class="primary" type="submit">Create links</button>
</form>
<div class="chips">{filters}</div>{more}{table}</section>"""


CLOSED_NO_LINKS = ("This batch is closed for good: it takes no new links (nobody could enter "
                   "by them).")


def _closed_note(batch: Batch) -> str:
    """Once closed: when, and where its history is (in place of the close card)."""
    if batch.closed_at is None or batch.study_id is None:
        return ""
    base = _batch_base(batch.study_id, batch.id)
    return (f'<p class="alert closed-note" id="closed-note">Closed on {when(batch.closed_at)}; '
            f'the timeline stays under <a href="{base}/timeline">Timeline</a> and the results '
            f'under <a href="{base}/results">Results</a>. Nobody can enter it again.</p>')


def _close_section(request: Request, batch: Batch) -> str:
    """Closing for good (nothing once closed: _closed_note says when it was)."""
    assert batch.study_id is not None
    if batch.closed_at is not None:
        return ""
    name = batch.label or batch.id
    return f"""<section class="card danger" id="close">
<h2>Close batch</h2>
<p>Closing ends this batch for good: nobody can enter it again, and participants still
connected are disconnected. Its timeline and results stay readable; closing cannot be undone.</p>
<form method="post" action="{_batch_base(batch.study_id, batch.id)}/close" class="row close-form"
 data-confirm="Close the batch &quot;{esc(name)}&quot; for good? Nobody can enter it again and
 participants still connected are disconnected. This cannot be undone."
 data-confirm-force="Runs still in progress end as failed.">
{_csrf_field(request)}
<label class="check"><input type="checkbox" name="force" value="on" id="close-force"> also end
 runs still in progress (they end as failed)</label>
<button class="danger" type="submit" id="close-batch">Close batch</button>
</form></section>"""


async def _overview(request: Request, study_id: str, batch_id: str, *, error: str = "",
                    status: int = 200, ok: str | None = None, n: str = "",
                    link_type: str | None = None, made: str | None = None) -> Response[str]:
    batch, title, _ = await _batch_context(request, study_id, batch_id)
    shown_type = link_type if link_type in LINK_TYPES else None
    links = await catalog.list_links(request.app.state.pg, batch.id, shown_type)
    types_made = {row["type"] for row in await request.app.state.pg.fetch(
        "SELECT DISTINCT type FROM links WHERE batch_id = $1", batch.id)}
    notice = _notice(ok, n=n, state="active" if batch.active else "inactive")
    body = (_batch_header(request, title, batch, "") + notice + _problem(error)
            + _closed_note(batch)
            + f'<section class="card"><h2>Settings</h2>{_settings_form(request, batch)}</section>'
            + _links_section(request, batch, links, shown_type, types_made,
                             made if made in LINK_TYPES else shown_type)
            + _close_section(request, batch))
    return page(request, f"{batch.label or batch.id}", body, status=status,
                crumbs=_crumbs(study_id, title), scripts=["overview.js"])


@get("/studies/{study_id:str}/batches/{batch_id:str}")
async def batch_overview(request: Request, study_id: FromPath[str], batch_id: FromPath[str],
                         ok: FromQuery[str | None] = None, n: FromQuery[str] = "",
                         type: FromQuery[str | None] = None,
                         made: FromQuery[str | None] = None) -> Response[str]:
    return await _overview(request, study_id, batch_id, ok=ok, n=n, link_type=type, made=made)


async def _apply_update(request: Request, batch: Batch, changes: BatchUpdate) -> Batch:
    updated = await catalog.update_batch(request.app.state.pg, batch.id, changes)
    if updated is None:
        raise ApiProblem(404, "batch_not_found", f"there is no batch {batch.id!r}")
    updater = request.app.state.get("batch_updater")
    if updater is not None and updated.closed_at is None:  # a closed batch's log takes nothing
        await updater(updated)  # group limits live in the event log too
    return updated


@post("/studies/{study_id:str}/batches/{batch_id:str}/active", status_code=303)
async def set_active(request: Request, study_id: FromPath[str],
                     batch_id: FromPath[str]) -> Response[Any]:
    form = await _form(request)
    batch = await study_batch(request, _me(request), study_id, batch_id)
    active = form.get("active") is not None
    try:
        await _apply_update(request, batch, BatchUpdate(active=active))
    except CatalogError as exc:  # batch_closed: never on again
        return await _overview(request, study_id, batch_id, error=exc.message,
                               status=409 if exc.code == "batch_closed" else 400)
    back = _text(form, "return")
    slug = back if back in {s for s, _ in _TABS} else ""
    return Redirect(f"{_batch_base(study_id, batch_id)}{'/' + slug if slug else ''}"
                    "?ok=active", status_code=303)


@post("/studies/{study_id:str}/batches/{batch_id:str}/settings", status_code=303)
async def save_settings(request: Request, study_id: FromPath[str],
                        batch_id: FromPath[str]) -> Response[Any]:
    form = await _form(request)
    batch = await study_batch(request, _me(request), study_id, batch_id)
    try:
        raw_json = _text(form, "json_input")
        try:
            json_input = msgspec.json.decode(raw_json) if raw_json else None
        except msgspec.DecodeError as exc:
            raise CatalogError("bad_json_input", f"batch JSON input is not JSON: {exc}") from None
        groups = None
        if form.get("groups") is not None:
            groups = GroupSettings(
                max_active_members=_optional_int(form, "max_active_members",
                                                 "max active members"),
                max_total_members=_optional_int(form, "max_total_members", "max total members"),
                form_by_arrival=_optional_int(form, "form_by_arrival", "form groups of"),
                arrival_timeout_s=(batch.group_settings.arrival_timeout_s
                                   if batch.group_settings else GroupSettings().arrival_timeout_s))
        types = [t for t in form.getall("allowed_link_types") if isinstance(t, str)]
        if not types:
            raise CatalogError("bad_link_type", "allow at least one link type")
        changes = BatchUpdate(
            label=_text(form, "label"),
            max_total_participants=_optional_int(form, "max_total_participants",
                                                 "max total participants"),
            allowed_link_types=types, json_input=json_input, group_settings=groups)
        await _apply_update(request, batch, changes)
    except CatalogError as exc:
        return await _overview(request, study_id, batch_id, error=exc.message, status=400)
    return Redirect(f"{_batch_base(study_id, batch_id)}?ok=settings", status_code=303)


@post("/studies/{study_id:str}/batches/{batch_id:str}/links", status_code=303)
async def create_links(request: Request, study_id: FromPath[str],
                       batch_id: FromPath[str]) -> Response[Any]:
    form = await _form(request)
    me = _me(request)
    batch = await study_batch(request, me, study_id, batch_id)
    link_type = _text(form, "type")
    labels = [line.strip() for line in _text(form, "labels").splitlines() if line.strip()]
    try:
        if link_type not in batch.allowed_link_types:
            raise CatalogError("link_type_not_allowed",
                               f"this batch does not allow {link_type or 'that'} links "
                               "(change its allowed link types first)")
        count = None if labels else (_optional_int(form, "count", "count") or 1)
        links = await catalog.create_links(
            request.app.state.pg, batch.id, link_type, count=count, labels=labels or None,
            label_required=form.get("label_required") is not None, created_by=me.id or None)
    except CatalogError as exc:
        return await _overview(request, study_id, batch_id, error=exc.message,
                               status=409 if exc.code == "batch_closed" else 400,
                               made=link_type)
    query = urlencode({"ok": "links", "n": len(links), "made": link_type})
    return Redirect(f"{_batch_base(study_id, batch_id)}?{query}#links", status_code=303)


_RUNS_ACTIVE = re.compile(r"^(\d+) run")


def _refusal_text(refused: CloseRefused) -> str:
    if refused.code != "runs_active":
        return f"The batch was not closed: {refused.message}"
    found = _RUNS_ACTIVE.match(refused.message)
    count = int(found.group(1)) if found else 0
    runs = ("some runs are" if not count else "1 run is" if count == 1
            else f"{count} runs are")
    return (f"The batch was not closed: {runs} still in progress. Tick \u201calso end runs "
            "still in progress\u201d under Close batch to end them (as failed) and close it, "
            "or wait until they end.")


@post("/studies/{study_id:str}/batches/{batch_id:str}/close", status_code=303)
async def close_batch(request: Request, study_id: FromPath[str],
                      batch_id: FromPath[str]) -> Response[Any]:
    """Close the batch for good (gateway/closing.py); ``force`` ends runs in progress."""
    form = await _form(request)
    me = _me(request)
    batch = await study_batch(request, me, study_id, batch_id)
    done = f"{_batch_base(study_id, batch_id)}?ok=closed"
    if batch.closed_at is not None:  # closed already (a second tab, a double submit)
        return Redirect(done, status_code=303)
    force = form.get("force") is not None
    try:
        closed = await close_through_hub(request.app.state.pg, request.app.state.hub,
                                         batch.id, force, by=f"experimenter:{me.username}")
    except CloseRefused as refused:
        return await _overview(request, study_id, batch_id, error=_refusal_text(refused),
                               status=refused.status)
    except TimeoutError:
        return await _overview(request, study_id, batch_id, status=503, error=(
            "The session store did not answer in time, so the batch may or may not close "
            "in a moment. Reload this page in a moment to see."))
    log.info("batch closed", extra={"batch": batch.id, "by": me.username, "force": force,
                                    "already": closed.already})
    return Redirect(done, status_code=303)


# ---------------------------------------------------------------------------
# Batches: live pages (monitor, session and groups, timeline, results)


def _live_config(request: Request, batch: Batch, definition: Any) -> dict[str, Any]:
    assert batch.study_id is not None
    components = ([{"title": c.title, "rounds": c.rounds} for c in definition.components]
                  if definition is not None else [])
    return {
        "study": batch.study_id,
        "batch": batch.id,
        "label": batch.label,
        "csrf": _csrf(request),
        "api": f"/api/studies/{quote(batch.study_id)}/batches/{quote(batch.id)}",
        "ws": f"/ws/console/{quote(batch.id)}",
        "study_version": 0,
        "components": components,
        "features": features(request),
        "max_total_participants": batch.max_total_participants,
    }


async def _live_page(request: Request, study_id: str, batch_id: str, slug: str, title: str,
                     body: str, script: str, live: bool = True) -> Response[str]:
    batch, study_title, definition = await _batch_context(request, study_id, batch_id)
    header = _batch_header(request, study_title, batch, slug)
    status = ('<p class="live-status" id="live-status" data-state="connecting">'
              '<span class="dot"></span><span class="text">connecting…</span></p>') if live else ""
    return page(request, f"{title} · {batch.label or batch.id}", header + status + body,
                crumbs=_crumbs(study_id, study_title), scripts=[script],
                config=_live_config(request, batch, definition))


MONITOR_BODY = """<section class="summary" id="summary" aria-label="Summary"></section>
<section class="card">
<div class="section-head"><h2>Participants</h2>
<div class="filters">
<input type="search" id="filter-text" placeholder="Filter: label, id, component, group"
 aria-label="Text filter">
<select id="filter-state" aria-label="State filter">
<option value="">all states</option><option value="active">active (not ended)</option>
<option value="connected">connected</option><option value="disconnected">not connected</option>
<option value="pre">preview</option><option value="started">started</option>
<option value="data_retrieved">data retrieved</option><option value="finished">finished</option>
<option value="aborted">aborted</option><option value="failed">failed</option>
</select></div></div>
<table class="grid monitor" id="monitor"><thead><tr>
<th>Participant</th><th>Component</th><th class="num">Round</th><th>State</th><th>Group</th>
<th>Last seen</th><th>Connected</th></tr></thead><tbody></tbody></table>
<p class="empty" id="monitor-empty">Nobody has entered this batch yet.</p>
</section>
<section class="card"><h2>Groups <span class="count" id="group-count">0</span></h2>
<div id="groups-summary" class="groups compact"></div></section>"""


SESSION_BODY = """<section class="card" id="session-card">
<div class="section-head"><h2>Batch session
<span class="badge" id="session-version">v0</span></h2>
<div class="actions"><button type="button" id="session-format">Format</button>
<button type="button" id="session-revert">Revert</button>
<button type="button" class="primary" id="session-save" disabled>Save and push</button></div>
</div>
<p class="muted small">Shared by every participant of the batch. A save is a compare-and-set
against the version you loaded, and reaches every participant at once.</p>
<div id="session-notice" class="alert hidden" role="status"></div>
<textarea id="session-editor" class="code editor" rows="16" spellcheck="false"
 aria-label="Batch session JSON"></textarea>
<p id="session-validity" class="validity"></p>
<div id="session-conflict" class="conflict hidden">
<h3>Somebody changed the batch session since you loaded it</h3>
<p class="muted" id="conflict-text"></p>
<div class="columns"><div><h4>Current state</h4><pre id="conflict-current" class="code"></pre>
</div><div><h4>Your edit</h4><pre id="conflict-mine" class="code"></pre></div></div>
<div class="actions"><button type="button" class="primary" id="conflict-rebase">Re-apply my
 changes to the current state</button>
<button type="button" id="conflict-overwrite">Overwrite with my version</button>
<button type="button" id="conflict-discard">Discard mine, load current</button></div>
</div>
</section>
<section class="card"><h2>Groups <span class="count" id="group-count">0</span></h2>
<div id="groups" class="groups"></div></section>"""


TIMELINE_BODY = """<section class="card" id="timeline-card">
<div class="section-head"><h2>Timeline</h2><div class="actions">
<label>Scope <select id="scope"></select></label>
<label class="check"><input type="checkbox" id="follow" checked> follow live</label>
</div></div>
<p id="timeline-source" class="muted small"></p>
<div id="chart" class="chart" aria-label="Activity over the batch's life"></div>
<div class="scrubber">
<input type="range" id="scrubber" min="0" max="0" value="0" step="1"
 aria-label="Position in the batch's timeline">
<div class="scrub-info"><span id="scrub-pos"></span><span id="scrub-time"></span></div>
</div>
<div class="columns">
<div><h3>State at this point <span class="badge" id="state-version"></span></h3>
<pre id="scope-state" class="code state"></pre></div>
<div><h3>Events around it</h3><ol id="events" class="events"></ol></div>
</div></section>"""


RESULTS_BODY = """<section class="card" id="exports-card">
<div class="section-head"><h2>Exports</h2></div>
<div id="exports" class="exports"></div>
</section>
<section class="card">
<div class="section-head"><h2>Runs <span class="count" id="run-count">0</span></h2>
<div class="filters"><input type="search" id="runs-filter" placeholder="Filter runs"
 aria-label="Filter runs"></div></div>
<div id="results-notice" class="alert hidden" role="status"></div>
<table class="grid runs" id="runs"><thead><tr><th>Run</th><th>Participant</th><th>Link</th>
<th>Entered</th><th>State</th><th>Data</th><th></th></tr></thead><tbody></tbody></table>
<p class="empty hidden" id="runs-empty">No runs yet.</p>
</section>
<dialog id="run-dialog"><div class="section-head"><h2 id="run-title">Run</h2>
<form method="dialog"><button value="close">Close</button></form></div>
<div id="run-detail"></div></dialog>"""


@get("/studies/{study_id:str}/batches/{batch_id:str}/monitor")
async def monitor_page(request: Request, study_id: FromPath[str],
                       batch_id: FromPath[str]) -> Response[str]:
    return await _live_page(request, study_id, batch_id, "monitor", "Monitor", MONITOR_BODY,
                            "monitor.js")


@get("/studies/{study_id:str}/batches/{batch_id:str}/session")
async def session_page(request: Request, study_id: FromPath[str],
                       batch_id: FromPath[str]) -> Response[str]:
    return await _live_page(request, study_id, batch_id, "session", "Session", SESSION_BODY,
                            "session.js")


@get("/studies/{study_id:str}/batches/{batch_id:str}/timeline")
async def timeline_page(request: Request, study_id: FromPath[str],
                        batch_id: FromPath[str]) -> Response[str]:
    return await _live_page(request, study_id, batch_id, "timeline", "Timeline", TIMELINE_BODY,
                            "timeline.js")


@get("/studies/{study_id:str}/batches/{batch_id:str}/results")
async def results_page(request: Request, study_id: FromPath[str],
                       batch_id: FromPath[str]) -> Response[str]:
    return await _live_page(request, study_id, batch_id, "results", "Results", RESULTS_BODY,
                            "results.js", live=False)


@get("/studies/{study_id:str}/batches/{batch_id:str}/runs/{run_id:str}/files/{filename:str}")
async def run_file(request: Request, study_id: FromPath[str], batch_id: FromPath[str],
                   run_id: FromPath[str], filename: FromPath[str],
                   pos: FromQuery[int | None] = None,
                   round: FromQuery[int | None] = None) -> Response[Any]:
    """A file a participant uploaded, always as a download (never rendered here)."""
    await study_batch(request, _me(request), study_id, batch_id)
    try:
        from results_store import results
    except ImportError:
        raise ApiProblem(404, "not_available", "result files are not available here") from None
    owner = await request.app.state.pg.fetchval("SELECT batch_id FROM runs WHERE id = $1", run_id)
    if owner != batch_id:
        raise ApiProblem(404, "run_not_found", f"this batch has no run {run_id!r}")
    found = await results.read_file(request.app.state.pg, run_id, filename, pos, round)
    if found is None:
        raise ApiProblem(404, "file_not_found", f"the run has no file {filename!r}")
    info, chunks = found
    return Stream(chunks, media_type="application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(info.filename)}",
        "Content-Length": str(info.size),
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })


async def batch_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """For batch routes without a study in the path (the replay API): authenticated like
    the experimenter API (bearer, ``?token=``, console cookie), with access to the
    batch's study (bare batches: administrators only)."""
    try:
        account = await authenticate(connection)
    except ApiProblem as problem:
        if problem.status == 401:
            raise NotAuthorizedException(problem.message) from None
        raise PermissionDeniedException(problem.message) from None
    batch_id = connection.path_params.get("batch_id", "")
    study_id = await connection.app.state.pg.fetchval(
        "SELECT study_id FROM batches WHERE id = $1", batch_id)
    if study_id is None:
        if account.is_admin:
            return  # the route answers batch_not_found itself when there is none
        raise NotAuthorizedException("only administrators may read batches without a study")
    if not await accounts.can_access(connection.app.state.pg, account, study_id):
        raise PermissionDeniedException(f"you have no access to study {study_id!r}")


def _catalog_page(request: Request, exc: CatalogError) -> Response[str]:
    return _error_page(request, 400, "Not possible", exc.message)


def _account_page(request: Request, exc: AccountError) -> Response[str]:
    return _error_page(request, 400, "Not possible", exc.message)


console_routes = Router(
    path="/console",
    route_handlers=[
        login_form, login, logout, studies_index, import_study, study_page, create_batch,
        batch_overview, set_active, save_settings, create_links, close_batch, monitor_page,
        session_page, timeline_page, results_page, run_file,
        create_static_files_router(path="/static", directories=[STATIC], name="console-static",
                                   include_in_schema=False, opt={"public": True},
                                   cache_control=None),
    ],
    guards=[console_guard],
    include_in_schema=False,
    exception_handlers={
        LoginRequired: _login_redirect,
        CsrfFailed: _csrf_page,
        ApiProblem: _problem_page,
        CatalogError: _catalog_page,
        AccountError: _account_page,
        HTTPException: _http_page,
    },
)

__all__ = ["batch_guard", "console_routes", "session_cookie_authenticator"]
