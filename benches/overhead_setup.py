"""What benches/overhead.py prepares before measuring: it probes the
interpreter, installs the peers it compares with (VizTracer) and the real
benchmark programs (pyperformance) into its venv, builds the floor hooks for
it, and finds the collector."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PIP_TIMEOUT_S = 600

SETUP_HINT = (
    "set it up with `scripts/dev-setup` (creates .venv-3.11/.venv-3.12/.venv-3.13 with "
    "rtrace installed, release build), or in that interpreter's venv run "
    "`pip install maturin && maturin develop --release` from the repository root"
)

# Installed from PyPI into the benchmarked venv when missing (pip).
PACKAGES = {"viztracer": "viztracer", "pyperformance": "pyperformance"}

PROBE = r"""
import json, sys
info = {"version": sys.version.split()[0], "version_info": list(sys.version_info[:2]),
        "executable": sys.executable, "in_venv": sys.prefix != sys.base_prefix}
try:
    import rtrace
    info["rtrace"] = getattr(rtrace, "__version__", "?")
    info["native"] = rtrace._native.__file__
except Exception as exc:
    info["rtrace_error"] = f"{type(exc).__name__}: {exc}"
for name in ("viztracer", "pyperformance"):
    try:
        info[name] = __import__(name).__version__
    except Exception:
        info[name] = None
print(json.dumps(info))
"""


def probe(python: str) -> dict:
    try:
        proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(f"overhead.py: cannot run {python!r}: {exc}") from None
    if proc.returncode != 0:
        raise SystemExit(f"overhead.py: {python!r} failed to start:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def require_rtrace(python: str, info: dict) -> None:
    if "rtrace_error" in info:
        raise SystemExit(
            f"overhead.py: rtrace cannot be imported by {python} "
            f"(Python {info['version']}): {info['rtrace_error']}\n  {SETUP_HINT}"
        )


def ensure_package(python: str, info: dict, name: str, allowed: bool) -> tuple[str | None, str]:
    """Returns (the installed version or None, a note for the header)."""
    if info.get(name):
        return info[name], ""
    if not allowed:
        return None, f"{name}: not installed, and installing was not allowed (--no-install)"
    if not info["in_venv"]:
        return None, (
            f"{name}: not installed and {python} is not a venv "
            "(not installing into a system Python)"
        )
    print(f"installing {name} into {info['executable']} ...", file=sys.stderr, flush=True)
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", PACKAGES[name]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        failed = proc.returncode != 0
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if failed else []
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, detail = True, [str(exc)]
    version = None if failed else probe(python)[name]
    if not version:
        return None, f"{name}: `pip install {PACKAGES[name]}` failed: {' '.join(detail)}"
    return version, f"{name}: {version} was installed into this venv by this run (pip)"


def build_floor(python: str, directory: Path) -> tuple[dict | None, str]:
    """Builds the two floor extensions for ``python``: (what was built or
    None, a note for the header)."""
    cmd = [python, str(HERE / "floor.py"), str(directory)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"floor: not built: {exc}"
    if proc.returncode != 0:
        return None, f"floor: not built: {proc.stderr.strip()}"
    return json.loads(proc.stdout), ""


def find_collector(python: str, given: str | None) -> list[str] | None:
    """The rtrace-collect to run: --collect, else the release binary that
    scripts/dev-setup builds, else the venv's console script."""
    if given:
        if not os.access(given, os.X_OK):
            raise SystemExit(f"overhead.py: --collect {given!r} is not an executable file")
        return [given]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    binary = target / "release" / "rtrace-collect"
    if binary.is_file() and os.access(binary, os.X_OK):
        return [str(binary)]
    script = Path(python).parent / "rtrace-collect"
    if script.is_file():
        return [str(script)]
    found = shutil.which("rtrace-collect")
    return [found] if found else None
