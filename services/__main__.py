"""``python3 -m services <command>``: run ``cohort`` from a fresh checkout.

Standard library only, and plain enough syntax to report an old Python clearly.
Outside the repository's ``.venv`` it creates ``.venv`` if needed, installs the
project with its test extras whenever pyproject.toml changed since the last
install (a hash in ``.venv/.cohort-installed``), then replaces itself with
``.venv/bin/cohort <command>``. Inside ``.venv`` it runs the command directly.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MIN_PYTHON = (3, 11)
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".cohort-installed"


def say(text):
    print("cohort: " + text, file=sys.stderr, flush=True)


def fail(text):
    say(text)
    sys.exit(1)


def wanted_stamp():
    """Changes when pyproject.toml changes (or the checkout moves: editable installs pin paths)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(str(ROOT).encode())
    return digest.hexdigest()


def inside_venv():
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def venv_python():
    return BIN / ("python.exe" if os.name == "nt" else "python")


def cohort_script():
    return BIN / ("cohort.exe" if os.name == "nt" else "cohort")


def ensure_venv():
    if venv_python().exists():
        return
    version = ".".join(str(part) for part in sys.version_info[:3])
    say(f"creating .venv with Python {version} ({sys.executable})...")
    result = subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)])
    if result.returncode != 0 or not venv_python().exists():
        shutil.rmtree(VENV, ignore_errors=True)
        fail(
            "could not create .venv. On Debian or Ubuntu install the venv module "
            "(apt install python3-venv, or python{}.{}-venv) and run again.".format(
                *sys.version_info[:2]
            )
        )


def ensure_installed():
    wanted = wanted_stamp()
    if cohort_script().exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if STAMP.exists():
        say("pyproject.toml changed: updating dependencies in .venv...")
    else:
        say("installing dependencies into .venv (first run only)...")
    log_path = VENV / "cohort-install.log"
    command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    with open(str(log_path), "w") as log:
        result = subprocess.run(
            [*command, "-e", ".[test]"], cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()
        print("\n".join(lines[-30:]), file=sys.stderr)
        fail(
            f"installing dependencies failed (pip exit status {result.returncode}); the end "
            f"of {log_path} is above. Fix the cause, then run the command again."
        )
    STAMP.write_text(wanted + "\n")
    say("dependencies installed.")


class InstallLock:
    """One bootstrap at a time per checkout (two terminals on a first run)."""

    def __enter__(self):
        self.handle = None
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return self
        key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"cohort-bootstrap-{key}.lock")
        self.handle = open(path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()


def main():
    if sys.version_info < MIN_PYTHON:
        fail(
            "Cohort needs Python {}.{} or newer; this is Python {} ({}). ".format(
                *MIN_PYTHON, sys.version.split()[0], sys.executable
            )
            + "Run it with a newer python3, e.g. python3.11 -m services ..."
        )
    args = sys.argv[1:]
    with InstallLock():
        ensure_venv()
        ensure_installed()
    if inside_venv():
        from services.cli import main as cohort

        sys.exit(cohort(args))
    script = str(cohort_script())
    if os.name == "nt":
        sys.exit(subprocess.call([script, *args]))
    os.execv(script, [script, *args])


if __name__ == "__main__":
    main()
