"""``cohort export``: a batch's results from Postgres to a file (or stdout).

    cohort export BATCH --format jatos|data|metadata-json|metadata-csv|wide-csv|payments
                        [-o FILE] [--no-progress]

Streams like the API export (results_store/exports.py), so memory does not grow
with the batch; a progress bar (runs done, bytes written) goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

CLI_FORMATS = ("jatos", "data", "metadata-json", "metadata-csv", "wide-csv", "payments",
               "payments-json")


def add_results_commands(sub: Any, common: argparse.ArgumentParser,
                         handler: Callable[[argparse.Namespace], int] | None = None) -> None:
    text = "export a batch's results (streamed): JATOS results archive, data, metadata, " \
           "oTree wide CSV or the payments report"
    cmd = sub.add_parser("export", parents=[common], help=text, description=text,
                         allow_abbrev=False)
    cmd.set_defaults(handler=handler or cmd_export)
    cmd.add_argument("batch", help="batch id")
    cmd.add_argument("--format", "-f", choices=CLI_FORMATS, default="jatos",
                     help="default: jatos (a .zip as JATOS exports it)")
    cmd.add_argument("-o", "--output", type=Path,
                     help="file to write (default: <kind>_<batch>_<time>.<ext> here; "
                     "'-' for stdout)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


class ProgressBar:
    """``[#####.....]  52%  1040/2000 runs  3.1 MB`` on one stderr line."""

    def __init__(self, stream: Any = None, width: int = 30, every_s: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.every_s = every_s
        self.done = 0
        self.total = 0
        self.bytes = 0
        self._shown = 0.0

    def update(self, done: int | None = None, total: int | None = None, written: int = 0,
               force: bool = False) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        self.bytes += written
        now = time.monotonic()
        if force or now - self._shown >= self.every_s:
            self._shown = now
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self) -> str:
        share = self.done / self.total if self.total else 1.0
        filled = round(share * self.width)
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%}  "
                f"{self.done}/{self.total} runs  {self.bytes / 1e6:.1f} MB")

    def close(self) -> None:
        self.update(force=True)
        self.stream.write("\n")
        self.stream.flush()


async def export_to(database_url: str, batch: str, fmt: str, out: BinaryIO,
                    bar: ProgressBar | None = None) -> int:
    """Write the export to ``out``; answer the bytes written."""
    import asyncpg

    from results_store.exports import export_batch

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    written = 0
    try:
        progress = (lambda done, total: bar.update(done, total)) if bar else None
        async for chunk in export_batch(pool, batch, fmt, progress=progress):
            out.write(chunk)
            written += len(chunk)
            if bar is not None:
                bar.update(written=len(chunk))
    finally:
        await pool.close()
    return written


def cmd_export(args: argparse.Namespace) -> int:
    import asyncpg

    from results_store.exports import ExportError, export_filename
    from services.settings import Settings

    overrides = {"log_level": args.log_level} if args.log_level else {}
    settings = Settings.from_env(**overrides)
    target = args.output or Path(export_filename(args.batch, args.format))
    to_stdout = str(target) == "-"
    bar = None if args.no_progress else ProgressBar()
    partial = target.with_name(target.name + ".partial") if not to_stdout else None
    try:
        if to_stdout:
            written = asyncio.run(export_to(settings.database_url, args.batch, args.format,
                                            sys.stdout.buffer, bar))
        else:
            assert partial is not None
            with partial.open("wb") as out:
                written = asyncio.run(export_to(settings.database_url, args.batch, args.format,
                                                out, bar))
            partial.replace(target)
    except ExportError as exc:
        raise SystemExit(f"cohort: {exc.code}: {exc.message}") from None
    except asyncpg.UndefinedTableError:
        raise SystemExit("cohort: the database has no schema yet: run `cohort migrate`") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"cohort: export failed: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
        if partial is not None and partial.exists():
            partial.unlink()
    if not to_stdout:
        print(f"{written} bytes written to {target}", file=sys.stderr)
    return 0
