"""Run one batch export in a fresh process and print its peak RSS as JSON.

    python tests/integration/export_rss.py DATABASE_URL BATCH FORMAT OUTPUT_FILE

Used by test_export_memory.py: the export streams to OUTPUT_FILE, so what the
process holds is the exporter's own memory.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import BinaryIO

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from results_store.exports import export_batch


def peak_rss_kb() -> int:
    """Peak resident memory of this process in KiB: VmHWM where /proc has it (ru_maxrss
    on Linux keeps the forking parent's peak across exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def main(database_url: str, batch: str, fmt: str, out: BinaryIO
               ) -> dict[str, int | float]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    started = time.perf_counter()
    written = chunks = largest = 0
    baseline = peak_rss_kb()
    try:
        async for chunk in export_batch(pool, batch, fmt):
            out.write(chunk)
            written += len(chunk)
            chunks += 1
            largest = max(largest, len(chunk))
    finally:
        await pool.close()
    return {"bytes": written, "chunks": chunks, "largest_chunk": largest,
            "baseline_kb": baseline,
            "maxrss_kb": peak_rss_kb(),
            "seconds": round(time.perf_counter() - started, 3)}


if __name__ == "__main__":
    with open(sys.argv[4], "wb") as output:
        print(json.dumps(asyncio.run(main(*sys.argv[1:4], output))))
