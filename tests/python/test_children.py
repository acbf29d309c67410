"""Child processes follow the recording: fork, spawn, forkserver,
subprocess and os.fork children each stream their own events, with their
parent, into the same timeline."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rtrace
from conftest import RTRACE, check_nesting, read_events, rtrace_cli

FAMILY = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import subprocess
    import sys

    _barrier = None

    def init(barrier):
        global _barrier
        _barrier = barrier

    def leaf(n):
        return n * n

    def work(n):
        if _barrier is not None:
            _barrier.wait()  # each of the two workers holds one task
        total = 0
        for i in range(n):
            total += leaf(i)
        return total

    def main():
        for method in ("fork", "spawn", "forkserver"):
            ctx = mp.get_context(method)
            barrier = ctx.Barrier(2)
            # Leaving the block terminates the workers (SIGTERM) right after
            # their last task: their streams must be complete anyway.
            with ctx.Pool(2, initializer=init, initargs=(barrier,)) as pool:
                assert pool.map(work, [5, 5], chunksize=1) == [30, 30]
        here = os.path.dirname(os.path.abspath(__file__))
        code = f"import sys; sys.path.insert(0, {here!r}); import family; family.work(7)"
        subprocess.run([sys.executable, "-c", code], check=True)
        # By the real path of the interpreter: outside any virtualenv.
        subprocess.run([os.path.realpath(sys.executable), "-c", code], check=True)
        pid = os.fork()
        if pid == 0:
            work(9)
            os._exit(0)
        os.waitpid(pid, 0)

    if __name__ == "__main__":
        main()
    """
)


def calls_per_process(path: Path) -> tuple[dict, dict]:
    events, reader = read_events(path)
    names: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for ev in events:
        if ev.kind == "call":
            names[ev.pid][ev.name] += 1
    processes = {p["pid"]: p for p in reader.processes()}
    return names, processes


def test_rtrace_run_records_all_ten_processes_with_their_parents(tmp_path):
    (tmp_path / "family.py").write_text(FAMILY)
    proc = rtrace_cli("run", "--session", "fam", "-o", "fam.pftrace", "--", "family.py",
                      cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "not recording" not in proc.stderr, proc.stderr
    names, processes = calls_per_process(tmp_path / "fam.pftrace")
    assert len(processes) == 10, sorted(processes)
    main = [pid for pid, p in processes.items() if p["ppid"] not in processes]
    assert len(main) == 1, processes
    main_pid = main[0]
    children = [pid for pid in processes if pid != main_pid]
    # Every child is the main program's (fork-server workers are shown as
    # children of the program that started the server).
    assert all(processes[pid]["ppid"] == main_pid for pid in children), processes
    assert all(p["session"] == "fam" for p in processes.values())
    per_child = sorted((names[pid]["work"], names[pid]["leaf"]) for pid in children)
    # 6 pool workers (work(5)), 2 subprocesses (work(7)), 1 fork (work(9)).
    assert per_child == [(1, 5)] * 6 + [(1, 7)] * 2 + [(1, 9)], per_child
    assert names[main_pid]["main"] == 1


RECORD_FAMILY = textwrap.dedent(
    """
    import os, subprocess, sys
    import rtrace

    def child_work():
        return sum(range(10))

    mode = sys.argv[1]
    with rtrace.record(session="svc-a", output=f"out-{mode}/main.rtrace",
                       follow_children=mode == "follow"):
        subprocess.run([sys.executable, "-c", "def hello(): pass\\nhello()"], check=True)
        pid = os.fork()
        if pid == 0:
            child_work()
            # The child leaves the parent's `with` block: must be harmless.
        else:
            os.waitpid(pid, 0)
    if pid == 0:
        os._exit(0)
    assert "RTRACE_AUTOSTART" not in os.environ, "the environment was not restored"
    """
)


@pytest.mark.parametrize("mode", ["follow", "alone"])
def test_record_follows_children_into_stream_files_or_not(tmp_path, mode):
    (tmp_path / "family.py").write_text(RECORD_FAMILY)
    (tmp_path / f"out-{mode}").mkdir()
    proc = subprocess.run([sys.executable, "family.py", mode], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    files = sorted((tmp_path / f"out-{mode}").iterdir())
    if mode == "alone":
        assert [f.name for f in files] == ["main.rtrace"]
        return
    # The main stream, the fork child's (main-<pid>.rtrace) and the
    # subprocess's (rtrace-svc-a-<pid>.rtrace), each complete and nested.
    assert len(files) == 3, files
    calls = {}
    for path in files:
        events, reader = read_events(path)
        assert not reader.truncated, path
        check_nesting(events)
        (process,) = reader.processes()
        calls[path.name] = (process, {ev.name for ev in events if ev.kind == "call"})
    main_pid = calls["main.rtrace"][0]["pid"]
    forked = [c for name, c in calls.items() if name.startswith("main-")]
    spawned = [c for name, c in calls.items() if name.startswith("rtrace-svc-a-")]
    assert len(forked) == 1 and len(spawned) == 1, sorted(calls)
    for process, names in forked + spawned:
        assert process["ppid"] == main_pid and process["session"] == "svc-a"
    assert "child_work" in forked[0][1]
    assert "hello" in spawned[0][1]


def test_rtrace_run_no_children_records_only_the_program(tmp_path):
    (tmp_path / "parent.py").write_text(
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'def hello(): pass\\nhello()'], check=True)\n"
    )
    proc = rtrace_cli("run", "--no-children", "-o", "p.pftrace", "--", "parent.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names, processes = calls_per_process(tmp_path / "p.pftrace")
    assert len(processes) == 1, processes
    proc = rtrace_cli("run", "-o", "q.pftrace", "--", "parent.py", cwd=tmp_path)
    names, processes = calls_per_process(tmp_path / "q.pftrace")
    assert len(processes) == 2, processes
    assert sum(n["hello"] for n in names.values()) == 1


def test_rtrace_run_leaves_its_start_up_out_and_runs_the_programs_sitecustomize(tmp_path):
    """`rtrace run` starts each Python process through a sitecustomize of its
    own. Its own work (finding the sitecustomize it shadows) is not in the
    timeline, and the program's sitecustomize still runs, recorded like
    the program, in the main process and in a child."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("def site_hello():\n    pass\nsite_hello()\n")
    (tmp_path / "app.py").write_text(
        "import subprocess, sys\n"
        "def main():\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
        "main()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([RTRACE, "run", "-o", "t.pftrace", "--", "app.py"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names, processes = calls_per_process(tmp_path / "t.pftrace")
    assert len(processes) == 2, processes
    assert sorted(n["site_hello"] for n in names.values()) == [1, 1], names
    assert sum(n["main"] for n in names.values()) == 1
    events, _ = read_events(tmp_path / "t.pftrace")
    package = str(Path(rtrace.__file__).parent)
    ours = sorted({(ev.name, ev.file) for ev in events if ev.file and ev.file.startswith(package)})
    assert ours == [], ours


def test_the_recorded_parent_is_named_only_for_a_reparented_process(monkeypatch):
    from rtrace import _children

    monkeypatch.setenv("RTRACE_PARENT_PID", "12")
    monkeypatch.setattr(_children.os, "getppid", lambda: 40)
    assert _children.recorded_parent() is None, "its parent is alive: the OS's is right"
    monkeypatch.setattr(_children.os, "getppid", lambda: 1)
    assert _children.recorded_parent() == 12, "reparented to init"
    monkeypatch.setattr(_children.os, "getppid", lambda: 77)
    monkeypatch.setenv("RTRACE_REAPER_PID", "77")
    assert _children.recorded_parent() == 12, "reparented to rtrace run"
    # Garbled variables are ignored, never raised.
    monkeypatch.setenv("RTRACE_REAPER_PID", "junk")
    assert _children.recorded_parent() is None
    monkeypatch.setenv("RTRACE_PARENT_PID", "12x")
    monkeypatch.setattr(_children.os, "getppid", lambda: 1)
    assert _children.recorded_parent() is None
