"""Experimenter accounts, API tokens and study membership (Postgres).

Passwords are hashed with scrypt (hashlib, in a thread so the event loop keeps
running). API tokens look like ``coh_<43 url-safe characters>`` (256 random
bits); only their SHA-256 is stored, so a token is shown once, when issued.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import asyncpg
import msgspec

TOKEN_PREFIX = "coh_"
TOKEN_HINT_CHARS = 8  # "coh_" plus 4 characters: enough to tell tokens apart
# How stale last_used_at may get before a request writes it again.
LAST_USED_RESOLUTION_S = 60
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
# scrypt cost: ~50 ms and 16 MiB per hash on the reference machine.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32


class AccountError(Exception):
    """A refused account operation: ``code`` for programs, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Account(msgspec.Struct, kw_only=True):
    id: int                  # 0 for the admin-token superuser (no row)
    username: str
    display_name: str = ""
    is_admin: bool = False
    created_at: datetime | None = None


class TokenInfo(msgspec.Struct, kw_only=True):
    id: int
    name: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class IssuedToken(msgspec.Struct, kw_only=True):
    id: int
    name: str
    token: str               # shown once: only its hash is stored
    created_at: datetime


# The holder of COHORT_ADMIN_TOKEN: an administrator without an account row.
ADMIN_TOKEN_ACCOUNT = Account(id=0, username="admin-token", display_name="Admin token",
                              is_admin=True)

_ACCOUNT_COLUMNS = "id, username, display_name, is_admin, created_at"


def _account(row: asyncpg.Record) -> Account:
    return Account(id=row["id"], username=row["username"], display_name=row["display_name"],
                   is_admin=row["is_admin"], created_at=row["created_at"])


def normalize_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME_RE.match(name):
        raise AccountError("bad_username", "a username is 1-64 characters: letters, digits, "
                           "'.', '_', '@' or '-', starting with a letter or digit")
    return name


# ---------------------------------------------------------------------------
# Passwords


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=SCRYPT_DKLEN)
    b64 = base64.b64encode
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{b64(salt).decode()}${b64(digest).decode()}")


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash to check against when the account does not exist, so a wrong username
# takes as long as a wrong password.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_hex(8))
    return _DUMMY_HASH


def _validate_password(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError("bad_password", f"a password has {MIN_PASSWORD_CHARS} to "
                           f"{MAX_PASSWORD_CHARS} characters")


# ---------------------------------------------------------------------------
# Accounts


async def create_account(pool: asyncpg.Pool, username: str, *, password: str | None = None,
                         display_name: str = "", is_admin: bool = False) -> Account:
    """A new account; ``account_exists`` if the username is taken."""
    name = normalize_username(username)
    password_hash = None
    if password is not None:
        _validate_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
    row = await pool.fetchrow(
        "INSERT INTO accounts (username, display_name, password_hash, is_admin) "
        f"VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING RETURNING {_ACCOUNT_COLUMNS}",
        name, display_name.strip()[:200], password_hash, is_admin)
    if row is None:
        raise AccountError("account_exists", f"the username {name!r} is taken")
    return _account(row)


async def set_password(pool: asyncpg.Pool, username: str, password: str | None) -> bool:
    """Set (or with ``None`` remove) an account's password; False if no such account."""
    password_hash = None
    if password is not None:
        _validate_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
    status = await pool.execute("UPDATE accounts SET password_hash = $2 WHERE username = $1",
                                username.strip().lower(), password_hash)
    return status.endswith(" 1")


async def get_account(pool: asyncpg.Pool, username: str) -> Account | None:
    row = await pool.fetchrow(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE username = $1",
                              username.strip().lower())
    return _account(row) if row else None


async def list_accounts(pool: asyncpg.Pool) -> list[Account]:
    rows = await pool.fetch(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY username")
    return [_account(row) for row in rows]


async def verify_password(pool: asyncpg.Pool, username: str, password: str) -> Account | None:
    """The account if the password is right; None otherwise (also without a password)."""
    row = await pool.fetchrow(
        f"SELECT {_ACCOUNT_COLUMNS}, password_hash FROM accounts WHERE username = $1",
        username.strip().lower())
    stored = row["password_hash"] if row is not None else None
    if len(password) > MAX_PASSWORD_CHARS:
        return None
    ok = await asyncio.to_thread(check_password, password, stored or _dummy_hash())
    return _account(row) if ok and row is not None and stored else None


# ---------------------------------------------------------------------------
# API tokens


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def looks_like_api_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 200


async def issue_token(pool: asyncpg.Pool, account_id: int, name: str = "") -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = await pool.fetchrow(
        "INSERT INTO api_tokens (account_id, name, token_hash, hint) VALUES ($1, $2, $3, $4) "
        "RETURNING id, created_at",
        account_id, name.strip()[:200], token_hash(token), token[:TOKEN_HINT_CHARS])
    return IssuedToken(id=row["id"], name=name.strip()[:200], token=token,
                       created_at=row["created_at"])


async def list_tokens(pool: asyncpg.Pool, account_id: int) -> list[TokenInfo]:
    rows = await pool.fetch(
        "SELECT id, name, hint, created_at, last_used_at, revoked_at FROM api_tokens "
        "WHERE account_id = $1 ORDER BY created_at, id", account_id)
    return [TokenInfo(**dict(row)) for row in rows]


async def revoke_token(pool: asyncpg.Pool, account_id: int, token_id: int) -> bool:
    """Revoke one of the account's tokens; False if it has no such token.

    Revoking a revoked token is a no-op that still answers True."""
    row = await pool.fetchrow(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) "
        "WHERE id = $1 AND account_id = $2 RETURNING id", token_id, account_id)
    return row is not None


async def resolve_token(pool: asyncpg.Pool, token: str) -> Account | None:
    """The account a bearer token belongs to; None for unknown or revoked tokens.

    Writes ``last_used_at`` at most once per LAST_USED_RESOLUTION_S per token."""
    if not looks_like_api_token(token):
        return None
    row = await pool.fetchrow(
        "SELECT t.id AS token_id, (t.last_used_at IS NULL "
        "  OR t.last_used_at < now() - make_interval(secs => $2)) AS stale, "
        "a.id, a.username, a.display_name, a.is_admin, a.created_at "
        "FROM api_tokens t JOIN accounts a ON a.id = t.account_id "
        "WHERE t.token_hash = $1 AND t.revoked_at IS NULL",
        token_hash(token), float(LAST_USED_RESOLUTION_S))
    if row is None:
        return None
    if row["stale"]:
        await pool.execute(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 AND "
            "(last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))",
            row["token_id"], float(LAST_USED_RESOLUTION_S))
    return _account(row)


# ---------------------------------------------------------------------------
# Study access


async def can_access(pool: asyncpg.Pool | asyncpg.Connection, account: Account,
                     study_id: str) -> bool:
    """Admins may touch every study; other accounts the studies they are members of."""
    if account.is_admin:
        return True
    return bool(await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM study_members WHERE study_id = $1 AND account_id = $2)",
        study_id, account.id))


async def add_member(pool: asyncpg.Pool | asyncpg.Connection, study_id: str,
                     account_id: int) -> None:
    await pool.execute(
        "INSERT INTO study_members (study_id, account_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        study_id, account_id)


async def share_study(pool: asyncpg.Pool, study_id: str, username: str) -> Account:
    """Make ``username`` a member of the study; answers that account."""
    account = await get_account(pool, username)
    if account is None:
        raise AccountError("account_not_found", f"there is no account {username!r}")
    try:
        await add_member(pool, study_id, account.id)
    except asyncpg.ForeignKeyViolationError:
        raise AccountError("study_not_found", f"there is no study {study_id!r}") from None
    return account


async def unshare_study(pool: asyncpg.Pool, study_id: str, username: str) -> bool:
    status = await pool.execute(
        "DELETE FROM study_members m USING accounts a "
        "WHERE m.account_id = a.id AND m.study_id = $1 AND a.username = $2",
        study_id, username.strip().lower())
    return status.endswith(" 1")


async def list_members(pool: asyncpg.Pool, study_id: str) -> list[Account]:
    rows = await pool.fetch(
        "SELECT a.id, a.username, a.display_name, a.is_admin, a.created_at "
        "FROM study_members m JOIN accounts a ON a.id = m.account_id "
        "WHERE m.study_id = $1 ORDER BY a.username", study_id)
    return [_account(row) for row in rows]
