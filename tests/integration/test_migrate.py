"""The migration runner: name order, once each, atomic per file, safe when concurrent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from results_store.migrate import migrate, migration_files

MakeDatabase = Callable[[], Awaitable[str]]


async def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_applies_every_migration_once(make_database: MakeDatabase) -> None:
    url = await make_database()
    names = [path.stem for path in migration_files()]
    assert names[0] == "001_initial"
    assert await migrate(url) == names
    assert await migrate(url) == []
    rows = await _fetch(url, "SELECT name, applied_at FROM schema_migrations ORDER BY name")
    assert [row["name"] for row in rows] == names
    assert all(row["applied_at"] is not None for row in rows)


async def test_initial_schema(make_database: MakeDatabase) -> None:
    url = await make_database()
    await migrate(url)
    await _fetch(url, "INSERT INTO batches (id) VALUES ('b1')")
    batch = (await _fetch(url, "SELECT * FROM batches"))[0]
    assert batch["label"] == "" and batch["created_at"] is not None
    await _fetch(
        url,
        "INSERT INTO archived_segments (batch_id, first_pos, last_pos, archived_at)"
        " VALUES ('b1', '1-0', '5-0', now())",
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await _fetch(
            url,
            "INSERT INTO archived_segments (batch_id, first_pos, last_pos, archived_at)"
            " VALUES ('b1', '1-0', '9-0', now())",
        )


async def test_concurrent_runners_apply_each_migration_exactly_once(
    make_database: MakeDatabase,
) -> None:
    url = await make_database()
    results = await asyncio.gather(*(migrate(url) for _ in range(8)))
    names = [path.stem for path in migration_files()]
    assert sorted(name for applied in results for name in applied) == sorted(names)
    assert sum(1 for applied in results if applied) == 1
    rows = await _fetch(url, "SELECT name FROM schema_migrations")
    assert sorted(row["name"] for row in rows) == sorted(names)


async def test_name_order_and_a_failing_file_is_not_recorded(
    make_database: MakeDatabase, tmp_path: Path
) -> None:
    url = await make_database()
    (tmp_path / "002_second.sql").write_text(
        "CREATE TABLE second (x int); INSERT INTO first VALUES (2); SELECT no_such_function();"
    )
    (tmp_path / "001_first.sql").write_text("CREATE TABLE first (x int);")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(url, tmp_path)
    assert [row["name"] for row in await _fetch(url, "SELECT name FROM schema_migrations")] == [
        "001_first"
    ]
    tables = await _fetch(
        url, "SELECT table_name FROM information_schema.tables WHERE table_name = 'second'"
    )
    assert tables == []  # the failed file left nothing behind
    assert await _fetch(url, "SELECT x FROM first") == []

    (tmp_path / "002_second.sql").write_text(
        "CREATE TABLE second (x int); INSERT INTO first VALUES (2);"
    )
    assert await migrate(url, tmp_path) == ["002_second"]
    assert [row["x"] for row in await _fetch(url, "SELECT x FROM first")] == [2]
