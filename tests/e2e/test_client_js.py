"""The browser library's own tests (client_js/test, Node's test runner) against a real stack.

Starts two gateways and two session workers, then runs ``node --test client_js/test/``
with ``COHORT_GATEWAY_URLS`` and ``COHORT_ADMIN_TOKEN`` pointing at them. Node's
TAP output is printed (``pytest -s`` shows it live; on failure it is in the report).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.stack import REPO, Stack

pytestmark = pytest.mark.e2e

CLIENT = REPO / "client_js"
MIN_NODE_MAJOR = 20
NODE_TIMEOUT_S = 240


def _node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)", out)
    return int(match.group(1)) if match else None


def _ensure_node_modules() -> None:
    """The tests need the ``ws`` package; ``cohort test`` installs it, this covers plain pytest."""
    if (CLIENT / "node_modules" / "ws" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            "client_js/node_modules is missing and npm is not installed: run `npm ci` in client_js"
        )
    run = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=CLIENT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        pytest.fail(f"`npm ci` in client_js failed:\n{run.stdout}\n{run.stderr}")


def _summary(output: str) -> dict[str, int]:
    """Node's closing TAP counters: tests, pass, fail, cancelled, skipped, todo."""
    return {
        key: int(value)
        for key, value in re.findall(
            r"^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$", output, re.MULTILINE
        )
    }


def test_client_js_against_real_gateways(make_stack: Callable[..., Stack]) -> None:
    major = _node_major()
    if major is None or major < MIN_NODE_MAJOR:
        pytest.skip(f"needs Node.js {MIN_NODE_MAJOR}+ on PATH (found: {major})")
    _ensure_node_modules()
    stack = make_stack(gateways=2, workers=2)

    env = {
        **stack.env,
        "COHORT_GATEWAY_URLS": ",".join(stack.gateway_urls),
        "COHORT_ADMIN_TOKEN": stack.admin_token,
    }
    try:
        run = subprocess.run(
            ["node", "--test", "client_js/test/"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        print(out)
        pytest.fail(f"node --test did not finish within {NODE_TIMEOUT_S}s")
    output = run.stdout + run.stderr
    print(output)

    counts = _summary(run.stdout)
    logs = "\n".join(f"--- {name}.log (tail)\n{stack.log(name)[-3000:]}" for name in stack.procs)
    assert run.returncode == 0, f"node --test failed ({counts}); see the output above.\n{logs}"
    assert counts.get("fail") == 0, counts
    assert counts.get("cancelled") == 0, counts
    # Every gateway test ran: nothing was skipped for want of a gateway.
    assert counts.get("skipped") == 0, counts
    assert counts.get("pass", 0) >= 30, counts
