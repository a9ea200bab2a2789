"""Structured logging: one JSON object per line on stderr.

Every line has ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``msg``, ``process`` (which Cohort process: gateway, worker, ...) and ``pid``,
plus whatever the call passes in ``extra=`` and ``exc`` for a traceback::

    log.info("partition taken", extra={"partition": 3, "epoch": 12})
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from services.gctune import tune_gc

LEVELS = ("debug", "info", "warning", "error", "critical")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "process": self.process,
            "pid": record.process or os.getpid(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str, process: str) -> None:
    """Route every logger (ours, uvicorn's, asyncio's) to one JSON handler on stderr."""
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name.upper())
    # Libraries that install their own handlers log through ours instead.
    for lib in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncio"):
        logger = logging.getLogger(lib)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)


def run_loop(main: Any) -> Any:
    """Run a process's main coroutine on uvloop where it is installed (uvicorn[standard]
    brings it on Linux), else on asyncio's own loop, with the collector tuned."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.run(main)
    return uvloop.run(main)
