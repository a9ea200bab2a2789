"""Result submissions acknowledged per second: the batcher vs single-row transactions
vs a COPY baseline, against a real Postgres.

Run: python tests/bench/bench_results.py [--submissions 20000] [--clients 1000]
     [--runs 2000] [--bytes 200] [--single 5000] [--json out.json]

Every submission is what ``POST /r/<key>/result-data[/append]`` does after parsing:
a write of ``--bytes`` bytes to one player (run, position, round) of one of
``--runs`` runs; two thirds replace (positions 1 and 2, rounds 1-3) and one third
append with an idempotency key (position 3). "Acknowledged" means the caller's
await returned, which happens only after the COMMIT of the transaction that
stored it (DESIGN.md guarantee 1), so every figure counts durable writes.

Modes:

1. batcher: ``--clients`` concurrent callers of one ``ResultWriter`` (one writer
   task, up to 500 writes per transaction), as one gateway process runs it;
2. batcher with two writer tasks;
3. single-row: the same writes, each in its own transaction (the same statements,
   batch size 1), ``--clients`` callers over a pool of 10 connections;
4. COPY baseline: the same number of rows in one ``COPY`` (no per-submission
   acknowledgement, no quota or idempotency check): the ceiling for the bytes;
5. HTTP (unless ``--no-http``): the same submissions as ``POST /r/<key>/result-data``
   to one real gateway process (``tests/e2e/results_gateway.py``: the app with the
   result routes) from ``--http-clients`` keep-alive connections of a minimal
   HTTP/1.1 client in this process (both on this machine).

Servers: $COHORT_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test)
and, for the HTTP mode, $COHORT_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0).
The benchmark makes its own database ``cohort_test_<hex>`` and drops it at the end;
the gateway's Redis keys are under a fresh prefix, deleted at the end.
Target: at least 2,000 acknowledged submissions/s through the batcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import asyncpg  # noqa: E402

from gateway.tokens import TokenSigner  # noqa: E402
from results_store.migrate import migrate  # noqa: E402
from results_store.results import Quotas, ResultWriter, write_one  # noqa: E402
from tests.results_support import make_lab  # noqa: E402
from tests.service_fixtures import create_database, delete_prefixes, drop_database  # noqa: E402

TARGET = 2000
QUOTAS = Quotas(per_component=5 * 1024 * 1024, per_run=1024 * 1024 * 1024)


def plan(submissions: int, runs: list[str], size: int, tag: str
         ) -> list[tuple[str, int, int, str, bytes, bool, str | None]]:
    """(run, pos, round, component id, data, append, command id) per submission."""
    out = []
    for n in range(submissions):
        run = runs[n % len(runs)]
        kind = (n // len(runs)) % 3
        body = (f'{{"n":{n},"pad":"' + "x" * max(0, size - 24)).encode()[:size - 2] + b'"}'
        if kind == 2:
            out.append((run, 3, 1, "survey", body + b"\n", True, f"{tag}-{n}"))
        else:
            round_ = 1 + (n // (3 * len(runs))) % 3
            out.append((run, 1 + kind, round_ if kind == 1 else 1,
                        ("intro", "game")[kind], body, False, None))
    return out


async def drive(work: list[Any], clients: int, submit: Any) -> dict[str, float]:
    """``clients`` callers take submissions from one list until it is empty."""
    latencies: list[float] = []
    position = 0

    async def client() -> None:
        nonlocal position
        while position < len(work):
            item = work[position]
            position += 1
            start = time.perf_counter()
            answer = await submit(item)
            latencies.append(time.perf_counter() - start)
            assert answer.body["stored"] is True

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"submissions": len(work), "seconds": round(elapsed, 3),
            "per_s": round(len(work) / elapsed),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    server = os.environ.get("COHORT_BENCH_DATABASE_URL",
                            "postgresql://postgres@127.0.0.1:5432/test")
    database = await create_database(server)
    try:
        await migrate(database)
        pool = await asyncpg.create_pool(database, min_size=2, max_size=10)
        try:
            results = await _bench(pool, args)
            if not args.no_http:
                results["http"] = await _http(pool, database, args)
            return results
        finally:
            await pool.close()
    finally:
        await drop_database(server, database)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_gateway(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    gateway = subprocess.Popen([sys.executable, "-m", "tests.e2e.results_gateway", "--port",
                                str(port)], cwd=REPO, env=env)
    for _ in range(300):
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return gateway
        if gateway.poll() is not None:
            raise RuntimeError("the gateway exited")
        time.sleep(0.1)
    raise RuntimeError("the gateway did not get ready")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def _http(pool: asyncpg.Pool, database: str, args: argparse.Namespace) -> dict[str, Any]:
    """Submissions over HTTP to one gateway process."""
    redis_url = os.environ.get("COHORT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"bench{secrets.token_hex(4)}"
    secret = secrets.token_hex(16)
    port = _free_port()
    env = {**os.environ, "COHORT_DATABASE_URL": database, "COHORT_REDIS_URL": redis_url,
           "COHORT_KEY_PREFIX": prefix, "COHORT_SECRET": secret, "COHORT_LOG_LEVEL": "warning",
           "COHORT_PARTITIONS": "8"}
    gateway = _start_gateway(port, env)
    try:
        lab, runs = await _runs(pool, args.runs)
        signer = TokenSigner(secret, 3600)
        keys = {run: signer.issue(run, lab.batch_id, lab.study_id, lab.version) for run in runs}
        work = plan(args.submissions, runs, args.bytes, "http")
        latencies: list[float] = []
        position = 0

        async def client() -> None:
            nonlocal position
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while position < len(work):
                    run, pos, round_, _, data, append, command = work[position]
                    position += 1
                    path = (f"/r/{keys[run]}/result-data{'/append' if append else ''}"
                            f"?pos={pos}&round={round_}")
                    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
                            f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
                            + (f"X-Cohort-Command-Id: {command}\r\n" if command else "")
                            + "\r\n")
                    start = time.perf_counter()
                    writer.write(head.encode() + data)
                    status = await reader.readline()
                    length = 0
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        name, _, value = line.decode().partition(":")
                        if name.lower() == "content-length":
                            length = int(value)
                    body = await reader.readexactly(length)
                    latencies.append(time.perf_counter() - start)
                    if b" 200 " not in status:
                        raise RuntimeError(f"{status!r} {body!r}")
            finally:
                writer.close()

        started = time.perf_counter()
        cpu_before, own_before = _cpu_s(gateway.pid), time.process_time()
        await asyncio.gather(*(client() for _ in range(args.http_clients)))
        elapsed = time.perf_counter() - started
        gateway_cpu = (_cpu_s(gateway.pid) - cpu_before) / elapsed
        client_cpu = (time.process_time() - own_before) / elapsed
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gateway.kill()
        await delete_prefixes(redis_url, [prefix])
    stored = await pool.fetchval(
        "SELECT count(*) FROM component_results c JOIN runs r ON r.id = c.run_id "
        "WHERE r.batch_id = $1", lab.batch_id)
    latencies.sort()
    figures = {"submissions": len(work), "seconds": round(elapsed, 3),
               "per_s": round(len(work) / elapsed),
               "p50_ms": round(statistics.median(latencies) * 1000, 2),
               "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
               "players_stored": stored, "gateway_cpu": round(gateway_cpu, 2),
               "client_cpu": round(client_cpu, 2)}
    print(f"{'HTTP, one gateway':>20}: {figures['per_s']:>7} acknowledged/s  "
          f"({len(work)} in {figures['seconds']} s over {args.http_clients} connections, "
          f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; CPU: gateway "
          f"{figures['gateway_cpu']:.0%}, client {figures['client_cpu']:.0%} of a core)",
          flush=True)
    return figures


async def _runs(pool: asyncpg.Pool, count: int) -> tuple[Any, list[str]]:
    lab = await make_lab(pool, 0)
    runs = [f"{lab.batch_id}-{n}" for n in range(count)]
    await pool.execute(
        "INSERT INTO runs (id, batch_id, study_id, study_version, link_type, worker_id) "
        "SELECT r, $2, $3, $4, 'general_multiple', 'w' || r FROM unnest($1::text[]) AS r",
        runs, lab.batch_id, lab.study_id, lab.version)
    return lab, runs


async def _bench(pool: asyncpg.Pool, args: argparse.Namespace) -> dict[str, Any]:
    settings = {row["name"]: row["setting"] for row in await pool.fetch(
        "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', "
        "'wal_sync_method', 'server_version')")}
    results: dict[str, Any] = {"postgres": settings, "args": vars(args)}

    for name, writers in (("batcher", 1), ("batcher_2_writers", 2)):
        _, runs = await _runs(pool, args.runs)
        writer = ResultWriter(pool, QUOTAS, max_batch=500, writers=writers)

        async def submit(item: Any, writer: ResultWriter = writer) -> Any:
            run, pos, round_, component, data, append, command = item
            return await writer.write(run, pos, round_, component, data, append=append,
                                      command_id=command)

        figures = await drive(plan(args.submissions, runs, args.bytes, name), args.clients,
                              submit)
        await writer.close()
        figures["transactions"] = writer.batches
        figures["writes_per_transaction"] = round(writer.writes / max(1, writer.batches), 1)
        results[name] = figures
        print(f"{name:>20}: {figures['per_s']:>7} acknowledged/s  ({figures['submissions']} "
              f"in {figures['seconds']} s, {writer.batches} transactions, "
              f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms)", flush=True)

    _, runs = await _runs(pool, args.runs)

    async def single(item: Any) -> Any:
        run, pos, round_, component, data, append, command = item
        return await write_one(pool, QUOTAS, run, pos, round_, component, data, append=append,
                               command_id=command)

    figures = await drive(plan(args.single, runs, args.bytes, "single"), args.clients, single)
    results["single_row"] = figures
    print(f"{'single-row':>20}: {figures['per_s']:>7} acknowledged/s  ({figures['submissions']}"
          f" in {figures['seconds']} s, one transaction each over 10 connections, "
          f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms)", flush=True)

    _, runs = await _runs(pool, args.runs)
    rows = [(run, pos, round_, component, data, len(data), "result_data_posted")
            for run, pos, round_, component, data, _, _ in
            {(i[0], i[1], i[2]): i for i in plan(args.submissions, runs, args.bytes, "copy")
             }.values()]
    started = time.perf_counter()
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "component_results", records=rows,
            columns=["run_id", "pos", "round", "component_id", "data", "data_size", "state"])
    elapsed = time.perf_counter() - started
    results["copy"] = {"rows": len(rows), "seconds": round(elapsed, 3),
                       "per_s": round(len(rows) / elapsed)}
    print(f"{'COPY baseline':>20}: {results['copy']['per_s']:>7} rows/s  ({len(rows)} rows "
          f"in {results['copy']['seconds']} s, one COPY, no acknowledgements)", flush=True)

    batcher = results["batcher"]["per_s"]
    results["ratios"] = {
        "batcher_vs_single_row": round(batcher / results["single_row"]["per_s"], 1),
        "batcher_vs_copy": round(batcher / results["copy"]["per_s"], 2),
        "two_writers_vs_one": round(results["batcher_2_writers"]["per_s"] / batcher, 2),
    }
    results["target_met"] = batcher >= TARGET
    print(f"\nbatcher / single-row: {results['ratios']['batcher_vs_single_row']}x   "
          f"batcher / COPY: {results['ratios']['batcher_vs_copy']}   "
          f"2 writers / 1: {results['ratios']['two_writers_vs_one']}")
    print(f"target >= {TARGET} acknowledged/s through the batcher: "
          f"{'met' if results['target_met'] else 'NOT met'} ({batcher}/s)")
    print(f"Postgres {settings.get('server_version')}: synchronous_commit="
          f"{settings.get('synchronous_commit')}, fsync={settings.get('fsync')}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=5_000,
                        help="submissions in the single-row mode (slower)")
    parser.add_argument("--clients", type=int, default=1000, help="concurrent callers")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--bytes", type=int, default=200, help="result data per submission")
    parser.add_argument("--http-clients", type=int, default=200,
                        help="keep-alive connections in the HTTP mode")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP mode")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if results["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
