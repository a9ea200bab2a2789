"""Study definitions and files, read from Postgres once per gateway and kept.

A (study, version) never changes once stored, so entries never go stale; the
file cache is bounded in bytes and drops the least recently used files.
"""

from __future__ import annotations

from collections import OrderedDict

import asyncpg

from results_store import studies
from results_store.definition import StudyDefinition

FILE_CACHE_BYTES = 64 * 1024 * 1024
BIG_FILE_BYTES = 4 * 1024 * 1024  # served, not cached


class StudyCache:
    def __init__(self, pool: asyncpg.Pool, max_bytes: int = FILE_CACHE_BYTES) -> None:
        self.pool = pool
        self.max_bytes = max_bytes
        self._definitions: dict[tuple[str, int], StudyDefinition] = {}
        self._files: OrderedDict[tuple[str, int, str], tuple[bytes, str]] = OrderedDict()
        self._bytes = 0

    async def definition(self, study_id: str, version: int) -> StudyDefinition | None:
        key = (study_id, version)
        found = self._definitions.get(key)
        if found is None:
            found = await studies.load_definition(self.pool, study_id, version)
            if found is not None:
                self._definitions[key] = found
        return found

    async def file(self, study_id: str, version: int, path: str) -> tuple[bytes, str] | None:
        key = (study_id, version, path)
        found = self._files.get(key)
        if found is not None:
            self._files.move_to_end(key)
            return found
        found = await studies.load_file(self.pool, study_id, version, path)
        if found is not None and len(found[0]) <= BIG_FILE_BYTES:
            self._files[key] = found
            self._bytes += len(found[0])
            while self._bytes > self.max_bytes:
                _, (content, _) = self._files.popitem(last=False)
                self._bytes -= len(content)
        return found
