"""Schema migrations: plain SQL files in ``migrations/``, applied in name order.

Each file runs in its own transaction together with its row in
``schema_migrations``, so a file is applied completely and exactly once, or not
at all. A session-level advisory lock serializes concurrent runners (N processes
starting at once): the second one waits, then finds nothing left to do.

Rules for migration files: name them ``NNN_what.sql``; never edit one that has
shipped (add a new one); no ``BEGIN``/``COMMIT`` inside, and nothing that cannot
run in a transaction (such as ``CREATE INDEX CONCURRENTLY``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Key of the advisory lock held while migrating ("cohort" in ASCII).
LOCK_KEY = 0x636F686F7274

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

log = logging.getLogger(__name__)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"), key=lambda path: path.name)


async def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not applied yet; return their names (file stems) in order."""
    applied: list[str] = []
    conn = await asyncpg.connect(database_url)
    try:
        # Released when the connection closes, whatever happens below.
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await conn.execute(_CREATE_TABLE)
        done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(directory):
            name = path.stem
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, now())", name
                )
            log.info("migration applied", extra={"migration": name})
            applied.append(name)
    finally:
        await conn.close()
    return applied
