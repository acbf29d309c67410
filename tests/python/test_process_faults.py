"""Faults inside a recorded process: fork from a thread while another
records, recording started and stopped a thousand times, and the
interpreter shutting down while daemon threads still call functions. Each
checks the streams left behind, not merely that nothing crashed."""

from __future__ import annotations

import collections
import json
import os

import pytest
from conftest import check_nesting, read_events

import rtrace


def test_fork_from_a_thread_while_another_thread_records(run_py, tmp_path):
    """A thread forks twenty times while another thread calls functions
    without pause: no deadlock; each child records its own complete stream
    (only what it did, on its one thread); the parent's stream is complete,
    well nested and holds none of the children's calls."""
    run = run_py(
        """
        import os, threading, rtrace
        def work(): pass
        def child_work(): pass
        stop = threading.Event()
        out = {}
        def busy():
            n = 0
            while not stop.is_set():
                for _ in range(100):
                    work()
                n += 100
            out["work"] = n
        def forker():
            children = []
            for _ in range(20):
                pid = os.fork()
                if pid == 0:
                    for _ in range(1000):
                        child_work()
                    os._exit(0)
                children.append(pid)
            out["status"] = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children]
            out["children"] = children
        with rtrace.record(output="parent.rtrace") as rec:
            threads = [threading.Thread(target=busy), threading.Thread(target=forker)]
            for t in threads:
                t.start()
            threads[1].join()
            stop.set()
            threads[0].join()
        out.update(pid=os.getpid(), events=rec.events, lost=rec.lost)
        emit(out)
        """,
        timeout=120,
    )
    out = run.result
    assert out["status"] == [0] * 20, out
    events, reader = read_events(tmp_path / "parent.rtrace")
    assert not reader.truncated and out["lost"] == 0
    assert len(events) == out["events"]
    check_nesting(events)
    calls = collections.Counter(e.name for e in events if e.kind == "call")
    assert calls["work"] == out["work"] and calls["child_work"] == 0, calls
    assert {e.pid for e in events} == {out["pid"]}
    for child in out["children"]:
        events, reader = read_events(tmp_path / f"parent-{child}.rtrace")
        assert not reader.truncated, child
        assert (reader.pid, reader.ppid) == (child, out["pid"])
        check_nesting(events)
        calls = collections.Counter(e.name for e in events if e.kind == "call")
        assert calls == {"child_work": 1000}, (child, calls)
        assert {e.tid for e in events} == {child}, "only the forking thread lives on"


def test_recording_started_and_stopped_1000_times_leaks_nothing(run_py, tmp_path):
    """3,000 recordings in one process, each with a short-lived thread:
    once warm (the first 2,000: 3.13's allocator grows until about then),
    no thread, file descriptor or measurable memory is left behind by the
    last 1,000, and every stream file is complete."""
    run = run_py(
        """
        import gc, os, threading, time, rtrace
        def work(): pass
        def rss_kb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        def threads():
            # A joined thread can still be listed while the kernel finishes
            # its exit (join returns when its Python state is gone): one
            # that stays for 2 s was left behind.
            deadline = time.monotonic() + 2
            while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            return len(os.listdir("/proc/self/task"))
        def state():
            gc.collect()
            return dict(threads=threads(),
                        fds=len(os.listdir("/proc/self/fd")), rss_kb=rss_kb())
        from pathlib import Path
        os.mkdir("s")
        # Made first: CPython 3.12's pathlib interns every path component
        # for good, which would show as growth of ~120 bytes per new name;
        # and each path's text, which a Path keeps once asked for it (as
        # record() does, through os.fspath): ~64 bytes per path.
        paths = [Path(f"s/{i}.rtrace") for i in range(3000)]
        assert all(p.parts and str(p) for p in paths)
        marks = {}
        for i, path in enumerate(paths):
            if i == 2000:
                marks["before"] = state()
            with rtrace.record(output=path) as rec:
                t = threading.Thread(target=work)
                t.start()
                for _ in range(10):
                    work()
                t.join()
            assert rec.lost == 0 and rec.error is None, rec
        marks["after"] = state()
        emit(marks)
        """,
        timeout=300,
    )
    before, after = run.result["before"], run.result["after"]
    assert after["threads"] == before["threads"] == 1, run.result
    assert after["fds"] == before["fds"], run.result
    # rtrace once leaked ~500 bytes per recording on 3.12+ (~500 KiB here).
    assert after["rss_kb"] - before["rss_kb"] < 256, run.result
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 3000
    for path in files:
        events, reader = read_events(path)
        assert not reader.truncated and reader.lost == 0, path
        calls = collections.Counter(e.name for e in events if e.kind == "call" and e.name == "work")
        assert calls["work"] == 11, (path, calls)
        check_nesting(events)


SHUTDOWN = """
import atexit, json, os, sys, threading, time

def report():
    # Registered before rtrace's own exit handler, so it runs after it
    # (atexit is LIFO): the recording's counters are final by then.
    result = dict(events=rec.events, lost=rec.lost, error=rec.error)
    print("RESULT " + json.dumps(result), flush=True)

atexit.register(report)
import rtrace

def work():
    pass

def spin():
    n = 0
    while True:
        work()
        n += 1
        if n % 50 == 0:
            time.sleep(0.002)

def deep(k):
    if k:
        return deep(k - 1)
    spin()

rec = rtrace.start(session="shutdown", **json.loads(sys.argv[1]))
for i in range(8):
    threading.Thread(target=deep if i % 2 else spin, args=(40,) if i % 2 else (),
                     daemon=True).start()
time.sleep(0.3)
"""


@pytest.mark.parametrize("sink", ["file", "collector"])
def test_interpreter_shutdown_with_daemon_threads_still_calling_functions(tmp_path, sink):
    """The main thread ends while eight daemon threads (some deep in
    recursion) keep calling functions: the process exits 0 at once, and the
    stream is ended (not truncated), complete and well nested — the calls
    still open are closed at the stop."""
    import subprocess
    import sys

    from rtrace import _native

    (tmp_path / "shutdown.py").write_text(SHUTDOWN)
    collector = None
    if sink == "collector":
        sock = f"unix://{tmp_path}/c.sock"
        collector = _native.Collector([sock], str(tmp_path / "t.pftrace"))
        collector.start()
        options = {"collector": sock}
    else:
        options = {"output": "d.rtrace"}
    for attempt in range(3):
        proc = subprocess.run([sys.executable, "shutdown.py", json.dumps(options)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr
        result = json.loads(proc.stdout.split("RESULT ", 1)[1])
        assert result["lost"] == 0 and result["error"] is None, result
        if sink == "file":
            events, reader = read_events(tmp_path / "d.rtrace")
            assert not reader.truncated
            assert len(events) == result["events"] > 0
            check_nesting(events)
    if collector is not None:
        stats = collector.stop()
        assert len(stats) == 3 and all(not s["truncated"] and s["lost"] == 0 for s in stats)
        events, _ = read_events(tmp_path / "t.pftrace")
        assert len(events) == sum(s["events"] for s in stats)
        check_nesting(events)
