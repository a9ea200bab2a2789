"""The ``cohort`` command.

    cohort up [--data-dir .cohort-data] [--gateways 1] [--workers 1] [--port 8000]
    cohort gateway [--port N] [--host H]
    cohort worker
    cohort finalizer
    cohort migrate
    cohort user add USERNAME [--admin] [--password-stdin] [--display-name NAME]
    cohort study import PATH [--owner USERNAME] [--study ID]
    cohort batch create STUDY [--label L] [--max-participants N] [--link-types T,T]
    cohort link create BATCH --type TYPE [--count N] [--labels-file F] [--csv OUT]
    cohort export BATCH [--format jatos|data|metadata-json|metadata-csv|wide-csv|payments] [-o FILE]
    cohort replay BATCH --scope S [--at POS|TIME]
    cohort timeline export BATCH [-o FILE] | cohort timeline stats BATCH
    cohort loadtest SCENARIO --url URL [--token T] [--participants N] [--duration S] [--rate R]
    cohort test [pytest arguments...]

Every subcommand takes ``--log-level``. The service processes read their
settings from ``COHORT_*`` environment variables (services/settings.py); ``up``
fills those in for the processes it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.logs import LEVELS, setup_logging
from services.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
CHILD_STOP_TIMEOUT_S = 10.0
MIN_NODE_MAJOR = 20


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if extra and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "test":
        return cmd_test(args, extra)
    setup_logging(args.log_level or os.environ.get("COHORT_LOG_LEVEL", "info"), args.command)
    return args.handler(args) or 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "--log-level", choices=LEVELS, type=str.lower, help="default: $COHORT_LOG_LEVEL or info"
    )
    parser = argparse.ArgumentParser(
        prog="cohort", description="Cohort: live session service for online experiments."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, handler: Callable[[argparse.Namespace], int | None], text: str) -> Any:
        cmd = sub.add_parser(
            name, parents=[common], help=text, description=text, allow_abbrev=False
        )
        cmd.set_defaults(handler=handler)
        return cmd

    up = add("up", cmd_up, "run everything on this machine (embedded Redis and Postgres if unset)")
    up.add_argument("--data-dir", default=".cohort-data", type=Path, help="default: .cohort-data")
    up.add_argument("--gateways", type=int, default=1, help="gateway processes (default 1)")
    up.add_argument("--workers", type=int, default=1, help="session worker processes (default 1)")
    up.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec",
                    help="the embedded Redis's AOF fsync: everysec (default; a machine crash "
                    "may lose the last second of acknowledged changes) or always (none)")
    up.add_argument("--port", type=int, default=8000, help="first gateway's port (default 8000)")

    gateway = add("gateway", cmd_gateway, "run one gateway process (HTTP and WebSocket)")
    gateway.add_argument("--port", type=int, help="default: $COHORT_PORT or 8000")
    gateway.add_argument("--host", help="default: $COHORT_HOST or 127.0.0.1")

    add("worker", cmd_worker, "run one session worker process")
    add("finalizer", cmd_finalizer, "run the finalizer process")
    add("migrate", cmd_migrate, "apply database migrations to $COHORT_DATABASE_URL")
    _add_catalog_commands(sub, common)
    from services.results_cli import add_results_commands

    add_results_commands(sub, common)
    from services.timeline_cli import add_commands as add_timeline_commands

    add_timeline_commands(sub, common)
    from services.loadtest import add_loadtest_command

    add_loadtest_command(sub, common)
    add(
        "test",
        cmd_test,
        "run the whole test suite (installs the node modules of client_js and "
        "tests/browser_support first); other "
        "arguments go to pytest",
    )
    return parser


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    if args.log_level:
        overrides["log_level"] = args.log_level
    return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})


def _call(run: Callable[[Settings], Any], settings: Settings) -> None:
    """Call a process's ``run(settings)``, whether it is a plain or an async function."""
    result = run(settings)
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(awaitable: Any) -> Any:
    return await awaitable


# ---------------------------------------------------------------------------
# Service processes


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.server import run

    _call(run, _settings(args, port=args.port, host=args.host))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from services.worker import run

    _call(run, _settings(args))
    return 0


def cmd_finalizer(args: argparse.Namespace) -> int:
    from services.finalizer import run

    _call(run, _settings(args))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from results_store.migrate import migrate

    applied = asyncio.run(migrate(_settings(args).database_url))
    print(f"applied {', '.join(applied)}" if applied else "nothing to apply: schema is current")
    return 0


# ---------------------------------------------------------------------------
# Accounts, studies, batches and links (Postgres at $COHORT_DATABASE_URL)


def _add_catalog_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    def group(name: str, text: str) -> Any:
        parser = sub.add_parser(name, help=text, description=text, allow_abbrev=False)
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="command")

    def add(parent: Any, name: str, handler: Callable[[argparse.Namespace], int | None],
            text: str) -> Any:
        cmd = parent.add_parser(name, parents=[common], help=text, description=text,
                                allow_abbrev=False)
        cmd.set_defaults(handler=handler)
        return cmd

    user = add(group("user", "experimenter accounts"), "add", cmd_user_add,
               "create an account and print an API token for it")
    user.add_argument("username")
    user.add_argument("--admin", action="store_true", help="may touch every study")
    user.add_argument("--password-stdin", action="store_true",
                      help="read a password from standard input (else: API tokens only)")
    user.add_argument("--display-name", default="")

    study = add(group("study", "studies"), "import", cmd_study_import,
                "import a study: a folder with study.toml/study.json, a .zip of one, or a "
                "JATOS .jzip (the same uuid again makes a new version)")
    study.add_argument("path", type=Path)
    study.add_argument("--owner", help="username of the account that owns a new study")
    study.add_argument("--study", help="import as a new version of this study id")

    batches = group("batch", "batches")
    batch = add(batches, "create", cmd_batch_create,
                "create a batch of a study and print its id")
    batch.add_argument("study", help="study id")
    batch.add_argument("--label", default="")
    batch.add_argument("--max-participants", type=int, default=None,
                       help="default: the study's batch settings (no limit)")
    batch.add_argument("--link-types", default=None,
                       help="comma-separated allowed link types (default: the study's, or all)")
    batch.add_argument("--inactive", action="store_true", help="create it switched off")
    closing = add(batches, "close", cmd_batch_close,
                  "close a batch for good: nobody enters it again, the log takes no more "
                  "changes, and the finalizer archives it and removes it from Redis")
    closing.add_argument("batch", help="batch id")
    closing.add_argument("--force", action="store_true",
                         help="end runs still active (as failed, reason batch_closed)")

    link = add(group("link", "study links"), "create", cmd_link_create,
               "create study links of a batch and print their URLs (or write a CSV file)")
    link.add_argument("batch", help="batch id")
    link.add_argument("--type", required=True, dest="link_type",
                      help="personal_single, personal_multiple, general_single, "
                      "general_multiple, mturk, mturk_sandbox or preview")
    link.add_argument("--count", type=int, default=None, help="default 1, or one per label")
    link.add_argument("--labels-file", type=Path,
                      help="one participant label per line: one link per label")
    link.add_argument("--label-required", action="store_true",
                      help="the participant must give a label (an oTree room)")
    link.add_argument("--csv", type=Path, help="write code,type,label,url,... to this file")
    link.add_argument("--base-url", help="default: $COHORT_PUBLIC_URL or http://127.0.0.1:8000")


def _with_pool(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    """Run ``await work(pool)`` against $COHORT_DATABASE_URL; clear errors, exit 1."""
    import asyncpg

    from results_store.accounts import AccountError
    from results_store.catalog import CatalogError
    from results_store.studies import StudyImportError

    async def run() -> Any:
        pool = await asyncpg.create_pool(_settings(args).database_url, min_size=1, max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except (AccountError, CatalogError, StudyImportError) as exc:
        raise SystemExit(f"cohort: {exc.code}: {exc.message}") from None
    except asyncpg.UndefinedTableError:
        raise SystemExit("cohort: the database has no schema yet: run `cohort migrate`") from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"cohort: database error: {exc}") from None


def cmd_user_add(args: argparse.Namespace) -> int:
    from results_store import accounts

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")

    async def work(pool: Any) -> str:
        account = await accounts.create_account(pool, args.username, password=password,
                                                display_name=args.display_name,
                                                is_admin=args.admin)
        return (await accounts.issue_token(pool, account.id, "cli")).token

    token = _with_pool(args, work)
    print(token)
    return 0


def cmd_study_import(args: argparse.Namespace) -> int:
    from results_store import accounts, studies

    async def work(pool: Any) -> Any:
        owner = None
        if args.owner:
            owner = await accounts.get_account(pool, args.owner)
            if owner is None:
                raise accounts.AccountError("account_not_found", f"no account {args.owner!r}")
        source = await asyncio.to_thread(studies.read_study, args.path,
                                         studies.ImportLimits.from_settings(_settings(args)))
        stored = await studies.import_study(pool, source, owner, into_study=args.study)
        return stored, not source.definition.uuid

    stored, had_no_uuid = _with_pool(args, work)
    print(f"{'imported' if stored.created else 'updated'} study {stored.study_id} "
          f"({stored.title!r}) version {stored.version}: {stored.file_count} files, "
          f"{stored.total_bytes} bytes ({stored.new_bytes} new)")
    if had_no_uuid and not args.study:
        print(f'hint: add uuid = "{stored.uuid}" to the study description, or import with '
              f"--study {stored.study_id}, so that the next import is version "
              f"{stored.version + 1} of this study")
    return 0


def cmd_batch_create(args: argparse.Namespace) -> int:
    from msgspec import UNSET

    from results_store import catalog

    types = UNSET if args.link_types is None else [
        t.strip() for t in args.link_types.split(",") if t.strip()]
    limit = UNSET if args.max_participants is None else args.max_participants

    async def work(pool: Any) -> Any:
        return await catalog.create_batch(pool, args.study, label=args.label,
                                          active=not args.inactive,
                                          max_total_participants=limit,
                                          allowed_link_types=types)

    batch = _with_pool(args, work)
    print(batch.id)
    return 0


def cmd_batch_close(args: argparse.Namespace) -> int:
    from results_store.closing import CloseRefused, close_batch
    from session_store.commands import CloseBatch, Outcome
    from session_store.connect import open_redis
    from session_store.keys import Keys
    from session_store.request import NoAnswer, request

    settings = _settings(args)

    async def work(pool: Any) -> Any:
        redis = await open_redis(settings.redis_url)
        keys = Keys(settings.key_prefix, settings.partitions)

        async def send(force: bool) -> Outcome:
            return await request(redis, keys, CloseBatch(
                id=f"close-{os.urandom(8).hex()}", batch=args.batch, run="admin", gw="",
                force=force))

        try:
            return await close_batch(pool, args.batch, send, args.force)
        finally:
            await redis.aclose()

    try:
        closed = _with_pool(args, work)
    except CloseRefused as refused:
        raise SystemExit(f"cohort: {refused.code}: {refused.message}") from None
    except NoAnswer as exc:
        raise SystemExit(f"cohort: {exc}") from None
    if closed.already:
        print(f"batch {closed.batch} was closed already ({closed.closed_at:%Y-%m-%d %H:%M:%S %Z})")
    else:
        print(f"closed batch {closed.batch}"
              + (f" at position {closed.pos}" if closed.pos else " (it had no live state)"))
    return 0


def cmd_link_create(args: argparse.Namespace) -> int:
    from results_store import catalog

    labels = None
    if args.labels_file:
        lines = args.labels_file.read_text(encoding="utf-8-sig").splitlines()
        labels = [line.strip() for line in lines if line.strip()]
    base = args.base_url or _settings(args).public_url or "http://127.0.0.1:8000"

    async def work(pool: Any) -> Any:
        return await catalog.create_links(pool, args.batch, args.link_type, count=args.count,
                                          labels=labels, label_required=args.label_required)

    links = _with_pool(args, work)
    if args.csv:
        args.csv.write_text(catalog.links_csv(links, base), encoding="utf-8", newline="")
        print(f"{len(links)} links written to {args.csv}")
    else:
        for link in links:
            print(catalog.link_url(base, link.code))
    return 0


# ---------------------------------------------------------------------------
# cohort up


def _say(text: str) -> None:
    print(f"cohort: {text}", flush=True)


class _Stop(Exception):
    """A signal asked us to stop."""


def cmd_up(args: argparse.Namespace) -> int:
    from results_store.migrate import migrate
    from services.embedded import EmbeddedServer, start_postgres, start_redis

    if args.gateways < 1 or args.workers < 1:
        raise SystemExit("cohort up: --gateways and --workers must be at least 1")
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        first = not stopping
        stopping.append(signum)
        if first:
            raise _Stop  # interrupts whatever startup step is running

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    data_dir = args.data_dir.resolve()
    servers: list[EmbeddedServer] = []
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    status = 0
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = os.environ.get("COHORT_REDIS_URL")
        if not redis_url:
            server = start_redis(data_dir / "redis", persistent=True,
                                 appendfsync=args.appendfsync)
            servers.append(server)
            redis_url = server.url
            _say(f"Redis {server.version} started at {redis_url} (data in {server.data_dir})")
        database_url = os.environ.get("COHORT_DATABASE_URL")
        if not database_url:
            server = start_postgres(data_dir / "postgres")
            servers.append(server)
            database_url = server.url
            _say(f"Postgres {server.version} started at {database_url} (data in {server.data_dir})")
        applied = asyncio.run(migrate(database_url))
        if applied:
            _say(f"migrations applied: {', '.join(applied)}")
        secret, admin_token = _load_secrets(data_dir / "secrets.json")

        env = dict(os.environ)
        env.update(
            COHORT_REDIS_URL=redis_url,
            COHORT_DATABASE_URL=database_url,
            COHORT_SECRET=secret,
            COHORT_ADMIN_TOKEN=admin_token,
            PYTHONUNBUFFERED="1",
        )
        env.setdefault("COHORT_DEMO", "true")
        settings = Settings.from_env(env)
        log_args = ["--log-level", args.log_level] if args.log_level else []
        ports = [args.port + i for i in range(args.gateways)]

        def spawn(name: str, *command: str) -> None:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *command, *log_args],
                env=env,
                stdin=subprocess.DEVNULL,
                process_group=0,  # a Ctrl-C reaches us only; we stop children, then servers
            )
            children.append((name, process))

        for port in ports:
            spawn(f"gateway :{port}", "gateway", "--port", str(port), "--host", settings.host)
        for i in range(1, args.workers + 1):
            spawn(f"worker {i}", "worker")
        spawn("finalizer", "finalizer")

        probe_host = settings.host if settings.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        _wait_ready([f"http://{probe_host}:{port}/readyz" for port in ports], children)
        base = settings.public_url.rstrip("/") or f"http://{probe_host}:{ports[0]}"
        print(
            f"\nCohort is up: {args.gateways} gateway(s), {args.workers} worker(s), a finalizer.\n"
            f"\n  Open {base}/demo in two browser tabs.\n"
            f"  Admin token: {admin_token}\n"
            + "".join(f"  Gateway:     http://{probe_host}:{port}\n" for port in ports)
            + f"\nData in {data_dir}. Press Ctrl-C to stop.\n",
            flush=True,
        )
        while True:
            _check_children(children)
            time.sleep(0.2)
    except _Stop:
        _say(f"got {signal.Signals(stopping[0]).name}, stopping")
    except _ChildDied as died:
        _say(str(died))
        status = 1
    finally:
        # From here on signals only note that we were asked again.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _frame: stopping.append(signum))
        _stop_children(children)
        for server in reversed(servers):
            server.stop()
        if children or servers:
            _say("stopped")
    return status


def _load_secrets(path: Path) -> tuple[str, str]:
    """The HMAC secret and admin token, generated once per data dir; the env wins."""
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    if not stored.get("secret") or not stored.get("admin_token"):
        stored = {
            "secret": stored.get("secret") or secrets.token_hex(32),
            "admin_token": stored.get("admin_token") or secrets.token_urlsafe(24),
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(stored, out, indent=2)
        tmp.replace(path)
    return (
        os.environ.get("COHORT_SECRET") or stored["secret"],
        os.environ.get("COHORT_ADMIN_TOKEN") or stored["admin_token"],
    )


class _ChildDied(Exception):
    pass


def _check_children(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for name, process in children:
        code = process.poll()
        if code is not None:
            raise _ChildDied(
                f"{name} (pid {process.pid}) exited with status {code}; stopping everything"
            )


def _wait_ready(urls: list[str], children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(urls)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while pending:
        _check_children(children)
        try:
            with direct.open(pending[0], timeout=1) as response:
                if response.status == 200:
                    pending.pop(0)
                    continue
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise _ChildDied(f"{pending[0]} did not answer 200 within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _stop_children(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _name, process in children:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    for name, process in children:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} (pid {process.pid}) did not stop in {CHILD_STOP_TIMEOUT_S:.0f} s: killed")
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------
# cohort test


def cmd_test(args: argparse.Namespace, pytest_args: list[str]) -> int:
    if not (REPO_ROOT / "pyproject.toml").exists() or not (REPO_ROOT / "tests").is_dir():
        raise SystemExit("cohort test runs from a checkout of the repository (no tests/ here)")
    _ensure_node_modules(REPO_ROOT / "client_js")
    # The console's browser test drives the machine's Chromium with playwright-core.
    _ensure_node_modules(REPO_ROOT / "tests" / "browser_support")
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    if not any("bench" in arg for arg in pytest_args):
        pytest_args = ["--ignore=tests/bench", *pytest_args]
    if args.log_level:
        pytest_args.append(f"--log-level={args.log_level.upper()}")
    os.chdir(REPO_ROOT)
    sys.stdout.flush()
    # Become pytest: its exit code and its Ctrl-C handling are ours.
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *pytest_args])
    return 1  # not reached


def _ensure_node_modules(client_dir: Path) -> None:
    """``npm ci`` when node_modules is missing or older than the lock file.

    Without a lock file, ``npm install`` when node_modules is missing.
    """
    if not (client_dir / "package.json").exists():
        return
    _require_node()
    lock = client_dir / "package-lock.json"
    modules = client_dir / "node_modules"
    installed = modules / ".package-lock.json"  # npm rewrites it on every install
    if lock.exists():
        stamp = installed if installed.exists() else modules
        if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
            return
        command = ["npm", "ci", "--no-audit", "--no-fund"]
    elif modules.exists():
        return
    else:
        command = ["npm", "install", "--no-audit", "--no-fund"]
    _say(f"installing {client_dir.relative_to(REPO_ROOT)} node modules "
         f"({' '.join(command[:2])})...")
    if subprocess.run(command, cwd=client_dir).returncode != 0:
        raise SystemExit(f"cohort test: `{' '.join(command)}` in {client_dir} failed")


def _require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"cohort test: {' and '.join(missing)} not found on PATH. The client_js tests "
            f"need Node.js {MIN_NODE_MAJOR}+ with npm: install it from https://nodejs.org "
            "(or your package manager, e.g. apt install nodejs npm) and run again."
        )
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return
    if major < MIN_NODE_MAJOR:
        raise SystemExit(
            f"cohort test: Node.js {version} is too old; the client_js tests need "
            f"Node.js {MIN_NODE_MAJOR}+ (https://nodejs.org)."
        )


if __name__ == "__main__":
    sys.exit(main())
