"""Exports stream: exporting 20,000 results takes about the memory of exporting
2,000 (peak RSS of a fresh process per export, real Postgres)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from results_store.migrate import migrate
from tests.results_support import bulk_results, make_lab

SCRIPT = Path(__file__).with_name("export_rss.py")
SMALL, LARGE = 2_000, 20_000       # results (players): runs x 2
GROWTH_LIMIT_KB = 6 * 1024         # the large batch has ~24 MB more result data


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def batches(pool: asyncpg.Pool) -> dict[int, str]:
    made = {}
    for results in (SMALL, LARGE):
        lab = await make_lab(pool, 0)
        assert await bulk_results(pool, lab, results // 2, per_run=2) == results
        made[results] = lab.batch_id
    return made


def run_export(database_url: str, batch: str, fmt: str, output: Path) -> dict[str, int]:
    done = subprocess.run([sys.executable, str(SCRIPT), database_url, batch, fmt, str(output)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_output(fmt: str, path: Path, results: int) -> None:
    """The export parses back and holds every result."""
    if fmt == "jatos":
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            assert sum(n.endswith("/data.txt") for n in names) == results
            meta = json.loads(archive.read("metadata.json"))
        assert sum(len(r["componentResults"]) for r in meta["data"][0]["studyResults"]) == results
    elif fmt == "data":
        lines = path.read_bytes().splitlines()
        assert len(lines) == results and all(json.loads(line)["answer"] for line in lines[:50])
    elif fmt == "wide-csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == results // 2
        assert rows[-1]["game.1.player.answer"] == rows[-1]["intro.1.player.answer"]
    elif fmt == "metadata-json":
        meta = json.loads(path.read_bytes())
        assert len(meta["data"][0]["studyResults"]) == results // 2
    elif fmt == "metadata-csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        assert len(rows) == results


@pytest.mark.parametrize("fmt", ["jatos", "data", "wide-csv", "metadata-json", "metadata-csv"])
def test_export_memory_does_not_grow_with_the_batch(batches: dict[int, str], database_url: str,
                                                    tmp_path: Path, fmt: str) -> None:
    measured = {}
    for results, batch in batches.items():
        output = tmp_path / f"{results}.out"
        measured[results] = run_export(database_url, batch, fmt, output)
        check_output(fmt, output, results)
    small, large = measured[SMALL], measured[LARGE]
    growth = large["maxrss_kb"] - small["maxrss_kb"]
    print(f"{fmt}: {SMALL} results {small['bytes'] / 1e6:.1f} MB peak {small['maxrss_kb']} KB; "
          f"{LARGE} results {large['bytes'] / 1e6:.1f} MB peak {large['maxrss_kb']} KB "
          f"({large['seconds']} s); growth {growth} KB")
    assert large["bytes"] > 8 * small["bytes"]
    assert growth < GROWTH_LIMIT_KB, (fmt, small, large)
    assert large["largest_chunk"] < 2 * 1024 * 1024
