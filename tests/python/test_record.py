"""Recording a Python process: calls, threads, nesting, API behaviour."""

from __future__ import annotations

import os
import sys
from collections import Counter

import pytest

import rtrace
from conftest import check_nesting, read_events


def test_fib_calls_and_returns_are_exact_and_nested(run_py, tmp_path):
    run = run_py(
        """
        import rtrace
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        with rtrace.record(session="fib", output="fib.rtrace") as rec:
            fib(20)
        emit({"events": rec.events, "lost": rec.lost, "path": str(rec.path)})
        """
    )
    events, reader = read_events(tmp_path / "fib.rtrace")
    counts = Counter((e.kind, e.name) for e in events)
    assert counts[("call", "fib")] == 21891
    assert counts[("return", "fib")] == 21891
    assert run.result["lost"] == 0
    assert run.result["events"] == len(events)
    assert not reader.truncated
    assert reader.session == "fib"
    check_nesting(events)
    fib_call = next(e for e in events if e.name == "fib")
    assert fib_call.file.endswith("scenario.py") and fib_call.line == 6


def test_eight_threads_are_each_recorded_balanced_and_named(run_py, tmp_path):
    run_py(
        """
        import threading, rtrace
        def leaf(): pass
        def work(n):
            for _ in range(n):
                leaf()
        with rtrace.record(output="t.rtrace"):
            threads = [threading.Thread(target=work, args=(1000 * (i + 1),), name=f"worker-{i}")
                       for i in range(8)]
            for t in threads: t.start()
            for t in threads: t.join()
        """
    )
    events, reader = read_events(tmp_path / "t.rtrace")
    per_thread = check_nesting(events)
    names = reader.thread_names()
    leaf_calls = {names.get(tid): sum(1 for e in evs if e.kind == "call" and e.name == "leaf")
                  for tid, evs in per_thread.items()}
    for i in range(8):
        assert leaf_calls[f"worker-{i}"] == 1000 * (i + 1), leaf_calls
    worker_tids = [tid for tid, name in names.items() if name.startswith("worker-")]
    assert len(set(worker_tids)) == 8


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="3.11's profile hook reaches threads started in C only from the next "
                           "flush tick: these run for less (README, Limits)")
def test_threads_started_one_after_another_each_keep_their_events(run_py, tmp_path):
    # A thread that exits hands its thread control block (whose address is
    # its thread pointer and its pthread_t) to the next one. The hook
    # recognises the thread that recorded last by that pointer: it must not
    # take a new thread for the old one. Native threads running a Python
    # callback, started and joined through ctypes with c_calls=False, so
    # that no other thread records between one's end and the next one's
    # start (the main thread would, and reset the cache).
    run = run_py(
        """
        import ctypes, rtrace
        libc = ctypes.CDLL(None)
        START = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
        libc.pthread_create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p,
                                        START, ctypes.c_void_p]
        libc.pthread_join.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
        def leaf(): pass
        def body(n):
            for _ in range(n):
                leaf()
            return None
        start = START(body)
        handles = []
        with rtrace.record(output="seq.rtrace", c_calls=False):
            for i in range(20):
                handle = ctypes.c_ulong()
                assert libc.pthread_create(ctypes.byref(handle), None, start, 100 * (i + 1)) == 0
                assert libc.pthread_join(handle, None) == 0
                handles.append(handle.value)
        emit(len(set(handles)))
        """
    )
    assert run.result < 20, "no thread control block was reused: the test proves nothing"
    events, _ = read_events(tmp_path / "seq.rtrace")
    per_thread = check_nesting(events)
    leaf_calls = sorted(sum(1 for e in evs if e.kind == "call" and e.name == "leaf")
                        for evs in per_thread.values())
    assert [n for n in leaf_calls if n] == [100 * (i + 1) for i in range(20)], leaf_calls


def test_hot_path_shortcuts_apply_on_supported_cpythons():
    # The in-place reads of the code objects' extra slot and (3.11) of a
    # frame's code, each checked against the API before use, and the
    # thread-pointer cache: if a CPython layout changed, rtrace stays
    # correct through the API, but slower, and this says so.
    import platform
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("the thread pointer is read on Linux x86-64 and aarch64")
    if sys.implementation.name != "cpython" or hasattr(sys, "gettotalrefcount"):
        pytest.skip("offsets are those of release CPython builds")
    shortcuts = dict(rtrace._native.hot_path_shortcuts())
    expected = {"code_extra_in_place": True, "thread_pointer": True}
    if sys.version_info < (3, 12):
        expected["frame_code_in_place"] = True
    assert shortcuts == expected


def test_thread_running_before_record_is_recorded(run_py, tmp_path):
    run_py(
        """
        import threading, rtrace
        go, done, stop = threading.Event(), threading.Event(), threading.Event()
        def tick(): pass
        def spin():
            while not stop.is_set():
                if go.is_set():
                    for _ in range(100):
                        tick()
                    go.clear()
                    done.set()
        t = threading.Thread(target=spin, name="early")
        t.start()
        with rtrace.record(output="early.rtrace"):
            go.set()
            done.wait(10)
        stop.set()
        t.join()
        """
    )
    events, reader = read_events(tmp_path / "early.rtrace")
    check_nesting(events)
    names = reader.thread_names()
    early = [e for e in events if names.get(e.tid) == "early" and e.name == "tick" and e.kind == "call"]
    assert len(early) >= 100


# On 3.12+ sys.monitoring reaches every thread; the legacy hook (3.11, or
# every tool id taken) reaches threads started outside `threading` by
# adopting them on the flush tick.
HOOKS = ["default", "legacy"] if sys.version_info >= (3, 12) else ["default"]

# A thread that runs Python for 0.3 s, calling `leaf`, started (START)
# after recording began and joined (JOIN); emits its native id and its
# calls.
OUTSIDE_THREADING = """
    import ctypes, _thread, threading, time, rtrace
    def leaf(): pass
    done = threading.Event()
    seen = {}
    def body(_arg=None):
        seen["tid"] = threading.get_native_id()
        calls, end = 0, time.monotonic() + 0.3
        while time.monotonic() < end:
            leaf()
            calls += 1
        seen["calls"] = calls
        done.set()
        return None
    with rtrace.record(output="outside.rtrace") as rec:
        START
        assert done.wait(30)
        JOIN
    emit({"hook": rec.hook, **seen})
"""


@pytest.mark.parametrize("hook", HOOKS)
@pytest.mark.parametrize("start", ["_thread", "pthread"])
def test_a_thread_started_outside_threading_is_recorded(run_py, tmp_path, hook, start):
    # `_thread.start_new_thread`, and a thread made by C code (pthread_create
    # through ctypes) running a Python callback: the legacy hook reaches
    # neither through `threading.setprofile`. Before adoption, 3.11 recorded
    # no event of theirs (README, Limits).
    starts = {
        "_thread": ("_thread.start_new_thread(body, ())", "time.sleep(0.05)"),
        "pthread": (
            "libc = ctypes.CDLL(None)\n"
            "        CB = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)\n"
            "        cb = CB(body)\n"
            "        handle = ctypes.c_ulong()\n"
            "        assert libc.pthread_create(ctypes.byref(handle), None, cb, None) == 0",
            "libc.pthread_join.argtypes = [ctypes.c_ulong, ctypes.c_void_p]\n"
            "        assert libc.pthread_join(handle, None) == 0",
        ),
    }
    code = OUTSIDE_THREADING.replace("START", starts[start][0]).replace("JOIN", starts[start][1])
    run = run_py(code, env={"RTRACE_HOOK": "legacy"} if hook == "legacy" else {})
    assert run.result["hook"].startswith("legacy") == (hook == "legacy" or sys.version_info < (3, 12))
    events, _ = read_events(tmp_path / "outside.rtrace")
    per_thread = check_nesting(events)
    leaf_calls = sum(1 for e in per_thread.get(run.result["tid"], [])
                     if e.kind == "call" and e.name == "leaf")
    # Reached from the first flush tick (20 ms) after it started: most of
    # its 0.3 s of calls are recorded.
    assert leaf_calls > run.result["calls"] // 2, (leaf_calls, run.result["calls"])


@pytest.mark.parametrize("hook", HOOKS)
def test_a_thread_with_a_profiler_of_its_own_keeps_it(run_py, tmp_path, hook):
    # A thread started outside `threading` that sets its own profile
    # function: adoption gives rtrace's hook only to threads with none, so
    # the thread's profiler keeps its events across many flush ticks.
    run = run_py(
        """
        import _thread, sys, threading, time, rtrace
        def leaf(): pass
        ready, done = threading.Event(), threading.Event()
        seen = {"mine": 0}
        def mine(frame, event, arg):
            if event == "call" and frame.f_code.co_name == "leaf":
                seen["mine"] += 1
        def body():
            sys.setprofile(mine)
            ready.set()
            time.sleep(0.2)  # ten flush ticks
            seen["before"] = seen["mine"]
            for _ in range(1000):
                leaf()
            sys.setprofile(None)
            done.set()
        with rtrace.record(output="own.rtrace"):
            _thread.start_new_thread(body, ())
            assert ready.wait(30) and done.wait(30)
        emit(seen)
        """,
        env={"RTRACE_HOOK": "legacy"} if hook == "legacy" else {},
    )
    assert run.result["mine"] - run.result["before"] == 1000


def test_generators_coroutines_and_deep_exceptions_nest(run_py, tmp_path):
    run_py(
        """
        import asyncio, rtrace
        def gen(n):
            for i in range(n):
                yield i
        def consume():
            return sum(gen(5)) + sum(x for x in gen(3))
        async def leaf(i):
            await asyncio.sleep(0)
            return i
        async def main():
            return sum(await asyncio.gather(*(leaf(i) for i in range(5))))
        def third(): raise ValueError("deep")
        def second(): third()
        def first(): second()
        def top():
            try:
                first()
            except ValueError:
                return "caught"
        with rtrace.record(output="g.rtrace"):
            consume()
            asyncio.run(main())
            top()
        """
    )
    events, _ = read_events(tmp_path / "g.rtrace")
    check_nesting(events)
    counts = Counter((e.kind, e.name) for e in events)
    # gen(5) is resumed 6 times (5 yields and the final return), gen(3) 4 times.
    assert counts[("call", "gen")] == 10 and counts[("return", "gen")] == 10
    for name in ("first", "second", "third"):
        assert counts[("exception", name)] == 1, counts
    assert counts[("return", "top")] == 1
    assert counts[("call", "leaf")] >= 10  # each coroutine starts and resumes


def test_c_function_calling_back_into_python_nests(run_py, tmp_path):
    run_py(
        """
        import rtrace
        def key(x): return -x
        with rtrace.record(output="c.rtrace"):
            sorted([3, 1, 2], key=key)
            list(map(key, [1, 2]))
        """
    )
    events, _ = read_events(tmp_path / "c.rtrace")
    check_nesting(events)
    names = [(e.kind, e.name) for e in events]
    i = names.index(("c_call", "sorted"))
    j = names.index(("c_return", "sorted"))
    assert names[i + 1:j].count(("call", "key")) == 3


def test_c_calls_false_and_threads_false(run_py, tmp_path):
    run_py(
        """
        import threading, rtrace
        def f(): return len([1])
        with rtrace.record(output="o.rtrace", c_calls=False, threads=False):
            f()
            t = threading.Thread(target=f); t.start(); t.join()
        """
    )
    events, _ = read_events(tmp_path / "o.rtrace")
    assert not [e for e in events if e.kind.startswith("c_")]
    assert len({e.tid for e in events}) == 1
    assert sum(1 for e in events if e.kind == "call" and e.name == "f") == 1


def test_nested_and_concurrent_recordings_are_refused(run_py):
    run = run_py(
        """
        import rtrace
        with rtrace.record(output="a.rtrace"):
            try:
                rtrace.start(output="b.rtrace")
            except rtrace.RecordingError as e:
                emit(str(e))
        """
    )
    assert "already recording" in run.result and "a.rtrace" in run.result


def test_start_stop_decorator_and_defaults(run_py, tmp_path):
    (tmp_path / "out").mkdir()
    run = run_py(
        """
        import os, rtrace
        rec = rtrace.start()
        stopped = rtrace.stop()
        def inner(): pass
        @rtrace.record(session="deco")
        def job():
            for _ in range(3):
                inner()
            return 42
        assert job() == 42
        assert job() == 42
        try:
            rtrace.stop()
        except rtrace.RecordingError as e:
            err = str(e)
        emit({"path": str(rec.path), "same": stopped is rec, "err": err, "files": sorted(os.listdir("out"))})
        """,
        env={"RTRACE_SESSION": "from-env", "RTRACE_OUTPUT_DIR": "out"},
    )
    pid_files = run.result["files"]
    assert any(f.startswith("rtrace-from-env-") and f.endswith(".rtrace") for f in pid_files)
    # Each call of the decorated function is recorded, to a file of its
    # own, with what it calls (the decorator's own frames are rtrace's and
    # left out).
    deco = [f for f in pid_files if f.startswith("rtrace-deco-")]
    assert len(deco) == 2
    for name in deco:
        events, _ = read_events(tmp_path / "out" / name)
        check_nesting(events)
        assert [(e.kind, e.name) for e in events if e.kind in ("call", "return")] == [
            ("call", "job"), *[("call", "inner"), ("return", "inner")] * 3, ("return", "job")]
    assert run.result["same"] and "not recording" in run.result["err"]


def test_the_flush_tick_defaults_to_20_ms_as_for_native_programs(tmp_path):
    """A collector holds a stream's events until the promise made on each
    flush tick: 20 ms bounds what it holds (README, Performance), for
    Python as for native programs (tests/native_flush_tick.rs)."""
    rec = rtrace.record(output=str(tmp_path / "unused.rtrace"))
    assert rec.flush_interval == 0.02
    assert not (tmp_path / "unused.rtrace").exists()  # not started


def test_bad_options_are_explained(monkeypatch):
    with pytest.raises(ValueError, match='"drop" or "block"'):
        rtrace.record(on_full="wait")
    with pytest.raises(ValueError, match="buffer_events"):
        rtrace.record(buffer_events=3)
    # A wrong type is a TypeError naming the option, before anything starts.
    for options, name in [({"collector": 5}, "collector"), ({"token": 5}, "token"),
                          ({"threads": "no"}, "threads"), ({"flush_interval": "1"}, "flush_interval"),
                          ({"buffer_events": 1.5}, "buffer_events"), ({"output": 5}, "output"),
                          ({"buffer_events": True}, "buffer_events")]:
        with pytest.raises(TypeError, match=f"^{name} must be "):
            rtrace.record(**options)
    # A collector address is checked whole, as the recorder will read it.
    with pytest.raises(ValueError, match="not host:port"):
        rtrace.record(collector="tcp://collector")
    with pytest.raises(ValueError, match="must start with unix:// or tcp://"):
        rtrace.record(collector="bogus://x")
    # ... but a bad $RTRACE_COLLECTOR is the environment's mistake: the
    # program goes on, recording to a stream file, and is told why.
    monkeypatch.setenv("RTRACE_COLLECTOR", "tcp://collector:99999")
    with pytest.warns(RuntimeWarning, match=r"ignoring \$RTRACE_COLLECTOR: .*out of range"):
        rec = rtrace.record()
    assert rec.collector is None
    with pytest.raises(FileNotFoundError) as missing:
        rtrace.read("/nonexistent/file.rtrace")
    # Python's own form, as open() gives it.
    assert str(missing.value) == "[Errno 2] No such file or directory: '/nonexistent/file.rtrace'"
    assert missing.value.filename == "/nonexistent/file.rtrace"
    assert missing.value.errno == 2


def test_reading_garbage_raises_stream_error(tmp_path):
    bad = tmp_path / "bad.rtrace"
    bad.write_bytes(b"not a trace at all")
    with pytest.raises(rtrace.StreamError, match="not an rtrace stream") as error:
        rtrace.read(bad)
    # Named where users import it from, in tracebacks too.
    assert type(error.value).__module__ == "rtrace" and rtrace.RecordingError.__module__ == "rtrace"
    with pytest.raises(rtrace.StreamError, match="not an rtrace stream"):
        rtrace.read(bytes(bad))  # a path as bytes, as os.fspath accepts
    # An empty file (a collector that has written nothing yet) says so.
    empty = tmp_path / "empty.pftrace"
    empty.write_bytes(b"")
    with pytest.raises(rtrace.StreamError, match="empty.pftrace is empty: nothing has been written"):
        rtrace.read(empty)


def test_profile_round_trip_keeps_recording(run_py, tmp_path):
    run_py(
        """
        import sys, rtrace
        def after(): pass
        with rtrace.record(output="p.rtrace"):
            sys.setprofile(sys.getprofile())
            sys.settrace(sys.gettrace())
            for _ in range(3):
                after()
        """
    )
    events, _ = read_events(tmp_path / "p.rtrace")
    assert sum(1 for e in events if e.kind == "call" and e.name == "after") == 3


def test_block_policy_loses_nothing_and_drop_counts_exactly(run_py, tmp_path):
    run = run_py(
        """
        import rtrace
        def f(): pass
        out = {}
        for policy in ("block", "drop"):
            with rtrace.record(output=f"{policy}.rtrace", on_full=policy, buffer_events=256) as rec:
                for _ in range(200000):
                    f()
            out[policy] = [rec.events, rec.lost]
        emit(out)
        """
    )
    block_events, block_lost = run.result["block"]
    assert block_lost == 0 and block_events >= 400000
    events, reader = read_events(tmp_path / "drop.rtrace")
    drop_events, drop_lost = run.result["drop"]
    assert len(events) == drop_events
    assert reader.lost == drop_lost
    f_events = sum(1 for e in events if e.name == "f")
    assert f_events + drop_lost >= 400000


def test_sys_monitoring_tool_ids_of_others_are_never_evicted(run_py, tmp_path):
    if sys.version_info < (3, 12):
        pytest.skip("sys.monitoring is 3.12+")
    run = run_py(
        """
        import sys, warnings, rtrace
        m = sys.monitoring
        for i in (2, 3, 4, 5):
            m.use_tool_id(i, f"other-{i}")
        def f(): pass
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with rtrace.record(output="m.rtrace") as rec:
                f()
        emit({"hook": rec.hook, "tools": [m.get_tool(i) for i in range(6)],
              "warned": [str(x.message) for x in w]})
        """
    )
    assert run.result["hook"].startswith("legacy")
    assert run.result["tools"][2:] == ["other-2", "other-3", "other-4", "other-5"]
    assert any("falling back" in w for w in run.result["warned"])
    events, _ = read_events(tmp_path / "m.rtrace")
    assert any(e.name == "f" for e in events)


def test_the_writer_keeps_writing_while_the_flush_tick_waits_for_the_gil(run_py):
    # The flush tick hands idle threads' events over, holding the GIL. With
    # a switch interval of 0.2 s, a thread tracing flat out lets go of the
    # GIL up to 0.2 s after the tick asks for it: more events than the
    # queue holds (1 Mi). A writer that waited for the tick lost events at
    # every tick; the tick thread waits instead, and the writer drains.
    r = run_py("""
        import sys, time, rtrace
        sys.setswitchinterval(0.2)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        with rtrace.record(session="busy", output="busy.rtrace") as rec:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                fib(18)
        emit({"events": rec.events, "lost": rec.lost})
    """)
    assert r.result["events"] > 3_000_000, r.result
    assert r.result["lost"] == 0, r.result


def test_the_package_shows_only_its_api():
    """`dir(rtrace)` and completion show the API, not what rtrace imports
    for itself (`os`, and `annotations` from a __future__ import)."""
    public = {name for name in dir(rtrace) if not name.startswith("_")}
    assert public == set(rtrace.__all__), public ^ set(rtrace.__all__)
