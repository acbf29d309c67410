"""Helpers for rtrace's Python tests.

Recording installs process-wide hooks, so every test that records runs its
scenario in a fresh interpreter (``run_py``) and inspects the stream file it
leaves behind from the test process, which never records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

import rtrace


RTRACE = shutil.which("rtrace", path=str(Path(sys.executable).parent)) or "rtrace"


def rtrace_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the installed ``rtrace`` command as a user would."""
    return subprocess.run([RTRACE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, result):
        self.proc = proc
        self.result = result
        self.stdout = proc.stdout
        self.stderr = proc.stderr


@pytest.fixture
def run_py(tmp_path: Path):
    """Runs ``code`` in a new interpreter with cwd ``tmp_path``.

    The code may call ``emit(obj)`` to hand a JSON result back; the run must
    exit 0 unless ``check=False``.
    """

    def run(code: str, *, check: bool = True, env: dict | None = None, timeout: float = 120,
            args: list[str] | None = None) -> Run:
        script = tmp_path / "scenario.py"
        prelude = (
            "import json as _json, sys as _sys\n"
            "def emit(obj):\n"
            "    print('RESULT:' + _json.dumps(obj), flush=True)\n"
        )
        script.write_text(prelude + textwrap.dedent(code))
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, *(args or []), str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"scenario exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT:"):
                result = json.loads(line[len("RESULT:"):])
        return Run(proc, result)

    return run


HOLDER = """
import sys, rtrace
def leaf(): pass
with rtrace.record(session="holder", on_full=sys.argv[2]) as rec:
    for _ in range(int(sys.argv[1])):
        leaf()
    print("recorded", flush=True)
    sys.stdin.readline()
print(rec.events, rec.lost, flush=True)
"""


def start_holder(tmp_path: Path, collector: str, calls: int,
                 on_full: str = "drop") -> subprocess.Popen:
    """Starts a process that records ``calls`` calls of ``leaf`` to the
    collector at ``collector`` and then keeps recording, idle, until a line
    comes on its stdin; returns once it has made the calls. It then prints
    its events and lost counts (``proc.communicate("\\n")``)."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = dict(os.environ, RTRACE_COLLECTOR=collector)
    proc = subprocess.Popen([sys.executable, str(script), str(calls), on_full], cwd=tmp_path,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "recorded\n", proc.communicate("\n", timeout=60)
    return proc


def wait_for_calls(path: Path, name: str, want: int, timeout: float = 15) -> tuple[int, float]:
    """Reads ``path``, as a user would while a collector still writes it,
    every 0.1 s until it holds ``want`` calls of ``name`` or ``timeout``
    seconds pass. Returns the calls last seen and the seconds waited."""
    seen, started = 0, time.monotonic()
    while seen < want and time.monotonic() < started + timeout:
        time.sleep(0.1)
        try:
            seen = sum(e.name == name and e.kind == "call" for e in rtrace.read(path))
        except (rtrace.StreamError, FileNotFoundError):
            pass  # nothing written yet, or read while a write was half done
    return seen, time.monotonic() - started


def read_events(path) -> tuple[list, rtrace.Reader]:
    reader = rtrace.read(path)
    events = list(reader)
    return events, reader


def check_nesting(events) -> dict[int, list]:
    """Asserts per-thread non-decreasing timestamps and that every close
    event closes the innermost open call of the same function; returns the
    events per thread."""
    per_thread: dict[int, list] = defaultdict(list)
    for ev in events:
        per_thread[ev.tid].append(ev)
    for tid, evs in per_thread.items():
        stack: list = []
        last = 0
        for ev in evs:
            assert ev.ts_ns >= last, f"thread {tid}: time goes back at {ev!r}"
            last = ev.ts_ns
            if ev.kind in ("call", "c_call", "span_begin"):
                stack.append(ev)
            elif ev.kind in ("return", "exception", "c_return", "span_end"):
                assert stack, f"thread {tid}: {ev!r} closes nothing"
                opened = stack.pop()
                assert opened.name == ev.name, f"thread {tid}: {ev!r} closes {opened!r}"
                assert (opened.kind == "c_call") == (ev.kind == "c_return"), f"{ev!r} vs {opened!r}"
                assert (opened.kind == "span_begin") == (ev.kind == "span_end"), f"{ev!r} vs {opened!r}"
        assert not stack, f"thread {tid}: calls never closed: {stack[-3:]!r}"
    return per_thread


def pid_namespace_command() -> tuple[str, ...]:
    """A command prefix that runs the command as pid 1 of a pid namespace
    of its own, as in a container (skips the test where none can be made)."""
    from faults import skip_unless_ci

    contained = ("unshare", "--pid", "--fork", "--mount-proc")
    probe = subprocess.run([*contained, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip_unless_ci(f"needs root to make pid namespaces: {probe.stderr.strip()}")
    return contained
