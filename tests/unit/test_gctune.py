"""Every long-running process runs with the tuned collector (services/gctune.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.gctune import GC_THRESHOLDS

REPO = Path(__file__).resolve().parents[2]

# run_loop is how the worker and the finalizer run their main coroutine.
PROBE = """
import gc, json
from services.logs import run_loop

async def main():
    return [gc.get_threshold(), gc.get_freeze_count()]

first = run_loop(main())
frozen = gc.get_freeze_count()
from services.gctune import tune_gc
tune_gc()  # a second call changes nothing
print(json.dumps([first, gc.get_freeze_count() == frozen]))
"""


def test_run_loop_tunes_the_collector_once() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    (threshold, frozen), unchanged = json.loads(out)
    assert threshold[0] == GC_THRESHOLDS[0]
    assert frozen > 1000  # the imported modules' objects left the scans
    assert unchanged
