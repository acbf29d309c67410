"""What `import rtrace` costs a program that never records: rtrace's own
modules, not the standard library modules only recording needs (pathlib,
typing, re, functools, threading, warnings: ~30 ms of imports together on
the development machine, paid again by every spawned child)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# What importing rtrace may add to a bare interpreter's modules, besides
# rtrace's own: two small modules of its own imports.
ALLOWED = {"__future__", "atexit"}

NEW_MODULES = (
    "import sys\n"
    "before = set(sys.modules)\n"
    "import rtrace\n"
    "print(' '.join(sorted(set(sys.modules) - before)))\n"
)


def new_modules(env: dict[str, str] | None = None) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", NEW_MODULES],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    ).stdout.split()
    return {m for m in out if m != "rtrace" and not m.startswith("rtrace.")}


def test_importing_rtrace_imports_only_its_own_modules():
    assert new_modules() <= ALLOWED


@pytest.mark.parametrize("hook", ["", "legacy"])
def test_recording_after_a_bare_import_still_follows_new_threads(run_py, hook):
    # threading is imported by record(), not by `import rtrace`: a thread
    # started afterwards (the legacy hook installs itself through
    # threading.setprofile) is recorded all the same.
    run = run_py(
        """
        import sys
        import rtrace
        assert "threading" not in sys.modules
        def work():
            return sum(range(10))
        with rtrace.record(session="bare", output="bare.rtrace") as rec:
            import threading
            t = threading.Thread(target=work, name="late")
            t.start()
            t.join()
        names = {e.name for e in rtrace.read("bare.rtrace") if e.kind == "call"}
        tids = {e.tid for e in rtrace.read("bare.rtrace") if e.name == "work"}
        emit({"work": "work" in names, "tids": len(tids), "lost": rec.lost})
        """,
        env={"RTRACE_HOOK": hook},
    )
    assert run.result == {"work": True, "tids": 1, "lost": 0}
