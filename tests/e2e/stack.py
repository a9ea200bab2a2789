"""A real Cohort stack in child processes: N gateways and M session workers.

Used by the end-to-end tests and the benchmarks. Each stack has its own Redis
key prefix, so stacks never see each other's keys.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "e2e-admin-token"
SECRET = "e2e-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(
        self,
        redis_url: str,
        database_url: str,
        key_prefix: str,
        gateways: int = 2,
        workers: int = 2,
        log_dir: Path | None = None,
        **settings: Any,
    ) -> None:
        self.env = {
            **os.environ,
            "COHORT_REDIS_URL": redis_url,
            "COHORT_DATABASE_URL": database_url,
            "COHORT_KEY_PREFIX": key_prefix,
            "COHORT_SECRET": SECRET,
            "COHORT_ADMIN_TOKEN": ADMIN_TOKEN,
            "COHORT_PARTITIONS": "8",
            "COHORT_LEASE_MS": "1000",
            "COHORT_LOG_LEVEL": "warning",
            **{f"COHORT_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.admin_token = ADMIN_TOKEN
        self.log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"cohort-{key_prefix}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.gateway_urls: list[str] = []
        self._want_gateways = gateways
        self._want_workers = workers

    # -- processes -------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def start_worker(self, index: int) -> None:
        self._spawn(f"worker{index}", "worker")

    def start_gateway(self, index: int) -> str:
        port = free_port()
        self._spawn(f"gateway{index}", "gateway", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        self._wait_ready(url, f"gateway{index}")
        return url

    def _wait_ready(self, url: str, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name)[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready after {timeout}s: {self.log(name)[-2000:]}")

    def migrate(self) -> None:
        subprocess.run([sys.executable, "-m", "services.cli", "migrate"], cwd=REPO, env=self.env,
                       check=True, capture_output=True)

    def start(self) -> Stack:
        self.migrate()
        for i in range(self._want_workers):
            self.start_worker(i)
        self.gateway_urls = [self.start_gateway(i) for i in range(self._want_gateways)]
        return self

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- admin API -------------------------------------------------------------

    def _admin(self, gateway: int = 0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway_urls[gateway],
            headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30,
        )

    async def create_batch(self, batch_id: str, label: str = "", **groups: Any) -> dict[str, Any]:
        """Open a bare batch; ``groups`` are limits: max_active_members, max_total_members."""
        async with self._admin() as client:
            response = await client.post(
                "/api/batches", json={"id": batch_id, "label": label, "groups": groups})
            response.raise_for_status()
            return response.json()

    async def participant(self, batch_id: str, gateway: int = 0) -> dict[str, Any]:
        async with self._admin(gateway) as client:
            response = await client.post(f"/api/batches/{batch_id}/participants")
            response.raise_for_status()
            return response.json()
