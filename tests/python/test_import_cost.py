"""What `import rtrace` costs a program that never records: rtrace's own
modules, not the standard library modules only recording needs (threading;
before, pathlib, typing, re, functools and warnings too: ~30 ms of imports
together on the development machine, paid again by every spawned child);
and what starting a recording imports: threading alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import rtrace

from conftest import rtrace_cli

# What starting a recording may add to a bare interpreter's modules, beside
# rtrace's own and threading's: two small modules of its own imports.
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
    return set(out)


def test_importing_rtrace_imports_only_its_package_and_native_library():
    # What records (rtrace._recording and the modules it imports) is loaded
    # when a program first asks for it: 2.4-2.6 ms of the 3.8 that a bare
    # import took on the development machine.
    assert new_modules() == {"rtrace", "rtrace._native"}


def test_what_records_is_there_when_asked_for():
    run = subprocess.run(
        [sys.executable, "-c",
         "import sys, rtrace\n"
         "assert 'rtrace._recording' not in sys.modules\n"
         "names = {'Recording', 'RecordingError', 'current', 'record', 'start', 'stop'}\n"
         "assert names <= set(dir(rtrace)), dir(rtrace)\n"
         "assert rtrace.current() is None\n"
         "from rtrace import *\n"
         "from rtrace import _recording\n"
         "assert rtrace._RECORDING_NAMES == set(_recording.__all__)\n"
         "from rtrace._recording import record as recording_record\n"
         "assert record is rtrace.record is recording_record and start is rtrace.start\n"
         "try:\n"
         "    rtrace.no_such_name\n"
         "except AttributeError as error:\n"
         "    print(error)\n"],
        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "module 'rtrace' has no attribute 'no_such_name'"


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



# Starts and stops a recording in a bare interpreter (the default session
# name and file, then a given file), and prints the modules that added
# beyond what `import threading` adds (recording needs threading to name and
# follow threads); then where the default file went.
STARTED_MODULES = (
    "import os, sys\n"
    "before = set(sys.modules)\n"
    "import threading\n"
    "by_threading = set(sys.modules) - before\n"
    "import rtrace\n"
    "after_import = set(sys.modules)\n"
    "rec = rtrace.record().start()\n"
    "rec.stop()\n"
    "rtrace.record(session='s', output='given.rtrace').start().stop()\n"
    "print(' '.join(sorted(set(sys.modules) - after_import - by_threading)))\n"
    "print(rec.path, os.getpid())\n"
)


@pytest.mark.parametrize("hook", ["", "legacy"])
def test_starting_a_recording_imports_only_threading(tmp_path, hook):
    # pathlib (with fnmatch, re, enum, urllib.parse and ipaddress) was ~13 ms
    # of a fresh interpreter's first record(): part of every short program's
    # run, and of every followed child's.
    modules, default = subprocess.run(
        [sys.executable, "-c", STARTED_MODULES],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "RTRACE_HOOK": hook},
        timeout=60,
    ).stdout.splitlines()
    assert {m for m in modules.split() if not m.startswith("rtrace.")} <= ALLOWED, modules
    # The default file is named as it was with pathlib: in the working
    # directory, after the program ("-c") and the pid.
    path, pid = default.split()
    assert path == f"rtrace--c-{pid}.rtrace"
    assert (tmp_path / path).is_file() and (tmp_path / "given.rtrace").is_file()


@pytest.mark.parametrize("started_by", ["record", "hook"])
def test_a_recorded_program_that_asks_for_them_records_no_lookup(tmp_path, started_by):
    # After `rtrace.start` (or the start-up hook of `rtrace run`) brought in
    # what records, `rtrace.current` and `rtrace.stop` are plain attributes:
    # no call of the package's __getattr__, nor of the import machinery,
    # lands among the program's own.
    (tmp_path / "app.py").write_text(
        "import rtrace\n"
        "def work(): pass\n"
        "mine = rtrace.current() is None\n"  # else started by rtrace run's hook
        "if mine:\n"
        "    rtrace.start(session='app', output='app.rtrace')\n"
        "work()\n"
        "assert rtrace.current() is not None\n"
        "work()\n"
        "if mine:\n"
        "    rtrace.stop()\n")
    if started_by == "record":
        subprocess.run([sys.executable, "app.py"], cwd=tmp_path, check=True, timeout=60)
        path = tmp_path / "app.rtrace"
    else:
        proc = rtrace_cli("run", "--no-c-calls", "-o", "app.pftrace", "--", "app.py", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        path = tmp_path / "app.pftrace"
    calls = [e.name for e in rtrace.read(path) if e.kind == "call"]
    assert calls.count("work") == 2 and "__getattr__" not in calls, calls
    assert not any("handle_fromlist" in name for name in calls), calls
