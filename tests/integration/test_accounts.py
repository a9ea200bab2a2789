"""Experimenter accounts, API tokens and study access (real Postgres)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from results_store import accounts
from results_store.accounts import AccountError
from results_store.definition import Component, StudyDefinition
from results_store.migrate import migrate
from results_store.studies import store_study


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def new_study(pool: asyncpg.Pool, owner: accounts.Account | None) -> str:
    definition = StudyDefinition(uuid="", title="Access test", components=[
        Component(id="c1", title="One", html_file="index.html")])
    stored = await store_study(pool, definition, {"index.html": b"<p>hi</p>"}, owner)
    return stored.study_id


async def test_create_account_normalizes_and_refuses_duplicates(pool: asyncpg.Pool) -> None:
    name = unique("Alice")
    account = await accounts.create_account(pool, f"  {name} ", display_name="Alice A.")
    assert account.username == name.lower()
    assert account.display_name == "Alice A." and not account.is_admin and account.id > 0
    assert (await accounts.get_account(pool, name.upper())).id == account.id
    with pytest.raises(AccountError) as refused:
        await accounts.create_account(pool, name.lower())
    assert refused.value.code == "account_exists"
    assert name.lower() in [a.username for a in await accounts.list_accounts(pool)]


@pytest.mark.parametrize("bad", ["", "has space", "-dash-first", "x" * 65, "semi;colon", "é"])
async def test_bad_usernames_are_refused(pool: asyncpg.Pool, bad: str) -> None:
    with pytest.raises(AccountError) as refused:
        await accounts.create_account(pool, bad)
    assert refused.value.code == "bad_username"


async def test_passwords_are_scrypt_hashed_and_verified(pool: asyncpg.Pool) -> None:
    name = unique("bob")
    account = await accounts.create_account(pool, name, password="correct horse")
    stored = await pool.fetchval("SELECT password_hash FROM accounts WHERE id = $1", account.id)
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert (await accounts.verify_password(pool, name, "correct horse")).id == account.id
    assert await accounts.verify_password(pool, name, "wrong horse") is None
    assert await accounts.verify_password(pool, unique("nobody"), "correct horse") is None
    with pytest.raises(AccountError) as refused:
        await accounts.create_account(pool, unique("short"), password="1234567")
    assert refused.value.code == "bad_password"
    # An account without a password cannot log in with any password.
    tokens_only = await accounts.create_account(pool, unique("tok"))
    assert await accounts.verify_password(pool, tokens_only.username, "") is None
    assert await accounts.set_password(pool, tokens_only.username, "now-has-one")
    assert await accounts.verify_password(pool, tokens_only.username, "now-has-one")


async def test_tokens_are_shown_once_stored_hashed_and_revocable(pool: asyncpg.Pool) -> None:
    account = await accounts.create_account(pool, unique("carol"))
    issued = await accounts.issue_token(pool, account.id, "laptop")
    assert issued.token.startswith("coh_") and len(issued.token) >= 40
    row = await pool.fetchrow("SELECT * FROM api_tokens WHERE id = $1", issued.id)
    assert bytes(row["token_hash"]) == hashlib.sha256(issued.token.encode()).digest()
    assert issued.token not in str(dict(row))  # only the hint, never the token
    assert row["hint"] == issued.token[:8]

    listed = await accounts.list_tokens(pool, account.id)
    assert [(t.id, t.name, t.hint, t.revoked_at) for t in listed] == [
        (issued.id, "laptop", issued.token[:8], None)]

    resolved = await accounts.resolve_token(pool, issued.token)
    assert resolved is not None and resolved.id == account.id
    assert await accounts.resolve_token(pool, issued.token + "x") is None
    assert await accounts.resolve_token(pool, "coh_" + "A" * 43) is None
    assert await accounts.resolve_token(pool, "not-a-token") is None

    other = await accounts.create_account(pool, unique("mallory"))
    assert not await accounts.revoke_token(pool, other.id, issued.id)  # not theirs
    assert await accounts.resolve_token(pool, issued.token) is not None
    assert await accounts.revoke_token(pool, account.id, issued.id)
    assert await accounts.resolve_token(pool, issued.token) is None
    assert (await accounts.list_tokens(pool, account.id))[0].revoked_at is not None
    assert await accounts.revoke_token(pool, account.id, issued.id)  # again: still fine
    assert not await accounts.revoke_token(pool, account.id, 10**12)


async def test_last_used_is_written_at_most_once_a_minute(pool: asyncpg.Pool) -> None:
    account = await accounts.create_account(pool, unique("dave"))
    issued = await accounts.issue_token(pool, account.id)

    async def last_used() -> object:
        return await pool.fetchval("SELECT last_used_at FROM api_tokens WHERE id = $1",
                                   issued.id)

    assert await last_used() is None
    await accounts.resolve_token(pool, issued.token)
    first = await last_used()
    assert first is not None
    for _ in range(3):
        await accounts.resolve_token(pool, issued.token)
    assert await last_used() == first
    await pool.execute("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' "
                       "WHERE id = $1", issued.id)
    stale = await last_used()
    await accounts.resolve_token(pool, issued.token)
    assert await last_used() > stale


async def test_study_access_members_admins_and_sharing(pool: asyncpg.Pool) -> None:
    owner = await accounts.create_account(pool, unique("owner"))
    stranger = await accounts.create_account(pool, unique("stranger"))
    admin = await accounts.create_account(pool, unique("root"), is_admin=True)
    study_id = await new_study(pool, owner)

    assert await accounts.can_access(pool, owner, study_id)
    assert not await accounts.can_access(pool, stranger, study_id)
    assert await accounts.can_access(pool, admin, study_id)
    assert await accounts.can_access(pool, accounts.ADMIN_TOKEN_ACCOUNT, study_id)

    shared = await accounts.share_study(pool, study_id, stranger.username.upper())
    assert shared.id == stranger.id
    assert await accounts.can_access(pool, stranger, study_id)
    await accounts.share_study(pool, study_id, stranger.username)  # twice is fine
    assert [m.username for m in await accounts.list_members(pool, study_id)] == sorted(
        [owner.username, stranger.username])

    assert await accounts.unshare_study(pool, study_id, stranger.username)
    assert not await accounts.can_access(pool, stranger, study_id)
    assert not await accounts.unshare_study(pool, study_id, stranger.username)

    with pytest.raises(AccountError) as refused:
        await accounts.share_study(pool, study_id, unique("ghost"))
    assert refused.value.code == "account_not_found"
    with pytest.raises(AccountError) as refused:
        await accounts.share_study(pool, "no-such-study", owner.username)
    assert refused.value.code == "study_not_found"


async def test_a_study_imported_without_an_account_has_no_members(pool: asyncpg.Pool) -> None:
    study_id = await new_study(pool, None)
    assert await accounts.list_members(pool, study_id) == []
    someone = await accounts.create_account(pool, unique("someone"))
    assert not await accounts.can_access(pool, someone, study_id)
