"""The recorder around the traced program's life: other tools' hooks,
fork, kill, and interpreter exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

import rtrace
from conftest import check_nesting, read_events, rtrace_cli


def test_settrace_round_trip_mid_frame_keeps_every_line(run_py, tmp_path):
    run_py(
        """
        import sys, rtrace

        def roundtrip():
            a = 1
            sys.settrace(sys.gettrace())
            b = 2
            c = 3
            return a + b + c

        def caller():
            x = roundtrip()
            y = x + 1
            return y

        with rtrace.record(output="l.rtrace", lines=True):
            r = caller()
            after_1 = r
            after_2 = r + 1
        """
    )
    events, _ = read_events(tmp_path / "l.rtrace")
    check_nesting(events)
    lines = {(e.name, e.line) for e in events if e.kind == "line"}
    source = (tmp_path / "scenario.py").read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i + 1 for i, s in enumerate(source) if s.strip() == text)

    expected = {
        ("roundtrip", line_of("a = 1")),
        ("roundtrip", line_of("b = 2")),
        ("roundtrip", line_of("c = 3")),
        ("roundtrip", line_of("return a + b + c")),
        ("caller", line_of("y = x + 1")),
        ("caller", line_of("return y")),
        ("<module>", line_of("after_1 = r")),
        ("<module>", line_of("after_2 = r + 1")),
    }
    assert expected <= lines, sorted(expected - lines)


def test_coverage_run_still_measures_a_recorded_script(run_py, tmp_path):
    pytest.importorskip("coverage")
    script = tmp_path / "covered.py"
    script.write_text(
        "import rtrace\n"
        "def used(x):\n"
        "    if x:\n"
        "        return 1\n"
        "    return 2\n"
        "with rtrace.record(output='cov.rtrace'):\n"
        "    used(True)\n"
        "    used(False)\n"
    )
    env = dict(os.environ)
    subprocess.run([sys.executable, "-m", "coverage", "run", str(script)], cwd=tmp_path,
                   check=True, env=env, capture_output=True, timeout=120)
    report = subprocess.run([sys.executable, "-m", "coverage", "report", "--include", str(script)],
                            cwd=tmp_path, check=True, env=env, capture_output=True, text=True)
    total = report.stdout.strip().splitlines()[-1].split()
    assert total[-1] == "100%", report.stdout
    events, _ = read_events(tmp_path / "cov.rtrace")
    assert sum(1 for e in events if e.kind == "call" and e.name == "used") == 2


def test_pdb_works_while_recording(tmp_path):
    script = tmp_path / "debugged.py"
    script.write_text(
        "import rtrace\n"
        "def f():\n"
        "    x = 41\n"
        "    breakpoint()\n"
        "    y = x + 1\n"
        "    return y\n"
        "with rtrace.record(output='d.rtrace'):\n"
        "    print('result', f())\n"
    )
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, input="p x\nn\np y\nc\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "41" in proc.stdout and "42" in proc.stdout and "result 42" in proc.stdout, proc.stdout
    events, _ = read_events(tmp_path / "d.rtrace")
    assert any(e.kind == "call" and e.name == "f" for e in events)


def test_sigkill_leaves_a_readable_truncated_stream(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(
        "import sys, time, rtrace\n"
        "def step(): pass\n"
        "rtrace.start(output='k.rtrace')\n"
        "t0 = time.monotonic(); said = False\n"
        "while True:\n"
        "    step()\n"
        # Ten flush ticks in: several frames are in the file, and the
        # stream stays small enough to read back quickly (a second of
        # this loop is ~13 M events, ~25 s to read into Python).
        "    if not said and time.monotonic() - t0 > 0.2:\n"
        "        print('RUNNING', flush=True); said = True\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "RUNNING"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    events, reader = read_events(tmp_path / "k.rtrace")
    assert reader.truncated
    steps = sum(1 for e in events if e.kind == "call" and e.name == "step")
    assert steps > 1000, steps
    per_thread = defaultdict(list)
    for e in events:
        per_thread[e.tid].append(e.ts_ns)
    assert all(ts == sorted(ts) for ts in per_thread.values())


def test_a_timeline_says_which_process_was_cut_short(tmp_path):
    # Under `rtrace run`, a child that SIGKILLs itself (after a flush tick
    # has sent its call): the merged timeline reads as truncated, and its
    # processes say which one was.
    (tmp_path / "app.py").write_text(
        "import subprocess, sys\n"
        "def f(): pass\n"
        "f()\n"
        "subprocess.run([sys.executable, '-c', 'import os, signal, time\\n"
        "def g(): pass\\ng()\\ntime.sleep(0.3)\\nos.kill(os.getpid(), signal.SIGKILL)'])\n")
    proc = rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    reader = rtrace.read(tmp_path / "t.pftrace")
    assert all(p["truncated"] is None for p in reader.processes())  # no end read yet
    events = list(reader)
    assert any(e.name == "g" for e in events)
    ends = sorted(p["truncated"] for p in reader.processes())
    assert ends == [False, True], reader.processes()
    assert reader.truncated
    # A stream file says the same of its one process.
    subprocess.run([sys.executable, "-c", "import rtrace\ndef f(): pass\n"
                    "with rtrace.record(output='s.rtrace'): f()"], cwd=tmp_path, check=True)
    stream = rtrace.read(tmp_path / "s.rtrace")
    list(stream)
    assert [p["truncated"] for p in stream.processes()] == [False] and not stream.truncated


def test_fork_child_is_unharmed_and_parent_stream_is_clean(run_py, tmp_path):
    run = run_py(
        """
        import os, warnings, rtrace
        def work(): pass
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with rtrace.record(output="f.rtrace"):
                work()
                pid = os.fork()
                if pid == 0:
                    work()
                    os._exit(7)
                _, status = os.waitpid(pid, 0)
                work()
        emit({"status": os.waitstatus_to_exitcode(status),
              "warnings": [str(w.message) for w in caught]})
        """
    )
    assert run.result["status"] == 7
    assert not [w for w in run.result["warnings"] if "fork" in w], run.result["warnings"]
    events, reader = read_events(tmp_path / "f.rtrace")
    assert not reader.truncated
    check_nesting(events)
    assert sum(1 for e in events if e.kind == "call" and e.name == "work") == 2


def test_multiprocessing_fork_pool_works_under_recording(run_py, tmp_path):
    run = run_py(
        """
        import multiprocessing as mp, rtrace
        def square(x): return x * x
        if __name__ == "__main__":
            with rtrace.record(output="mp.rtrace"):
                with mp.get_context("fork").Pool(2) as pool:
                    result = pool.map(square, range(20))
            emit(sum(result))
        """
    )
    assert run.result == sum(x * x for x in range(20))
    events, reader = read_events(tmp_path / "mp.rtrace")
    assert not reader.truncated
    assert {e.pid for e in events} == {reader.pid}


def test_exit_without_stop_finishes_the_stream(run_py, tmp_path):
    run_py(
        """
        import threading, rtrace
        def busy():
            while True:
                len("x")
        rtrace.start(output="x.rtrace")
        threading.Thread(target=busy, daemon=True, name="daemon").start()
        def last(): pass
        last()
        """
    )
    events, reader = read_events(tmp_path / "x.rtrace")
    assert not reader.truncated
    assert any(e.name == "last" for e in events)
    check_nesting(events)
