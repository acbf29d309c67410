"""User events from Python: spans (block and decorator), instants,
counters, thread names and flows, with their arguments, in stream files,
merged Perfetto timelines and Chrome JSON; and the flow arrows of a
10,000-round-trip ping-pong between two processes."""

from __future__ import annotations

import json
import textwrap

import pytest

import rtrace
from conftest import check_nesting, read_events, rtrace_cli

MARKS = """
    import threading
    import rtrace

    @rtrace.span("decorated", kind="function")
    def work(x):
        return x * 2

    class Service:
        @rtrace.span  # named after the function: "Service.handle"
        def handle(self, y):
            return y + 1

    def main():
        rtrace.name_thread("main-loop")
        with rtrace.span("request", user=42, ok=True, ratio=0.5, path="/items/7", obj=[1, 2]):
            rtrace.instant("cache miss", key="k1")
            for depth in (3, 5.5):
                rtrace.counter("queue_depth", depth)
            token = rtrace.flow_out()
            rtrace.flow_in(token, name="loopback")
            work(2)
            Service().handle(3)
        return token

    if __name__ == "__main__":
        main()
"""


def user_events(events):
    return [e for e in events if e.kind in
            ("span_begin", "span_end", "instant", "counter", "flow_out", "flow_in")]


def check_marks(events):
    check_nesting(events)
    got = [(e.kind, e.name) for e in user_events(events)]
    assert got == [
        ("span_begin", "request"),
        ("instant", "cache miss"),
        ("counter", "queue_depth"),
        ("counter", "queue_depth"),
        ("flow_out", "send"),
        ("flow_in", "loopback"),
        ("span_begin", "decorated"),
        ("span_end", "decorated"),
        ("span_begin", "Service.handle"),
        ("span_end", "Service.handle"),
        ("span_end", "request"),
    ], got
    marks = user_events(events)
    assert marks[0].args == {"user": 42, "ok": True, "ratio": 0.5, "path": "/items/7",
                             "obj": "[1, 2]"}
    assert marks[1].args == {"key": "k1"}
    assert [marks[2].value, marks[3].value] == [3.0, 5.5]
    assert marks[4].flow_id == marks[5].flow_id != 0
    assert marks[6].args == {"kind": "function"}
    # The decorated functions run inside their spans.
    calls = [e.name for e in events if e.kind == "call"]
    assert "work" in calls and "Service.handle" in calls
    # rtrace's own entry points are not recorded as calls.
    natives = {e.name for e in events if e.kind == "c_call"}
    assert not natives & {"span", "instant", "counter", "flow_out", "flow_in", "name_thread",
                          "Span.__exit__", "Span.__enter__"}, natives


def test_user_events_in_stream_file(run_py, tmp_path):
    run_py(MARKS.replace('if __name__ == "__main__":\n        main()',
                         'with rtrace.record(output="m.rtrace"):\n        main()'))
    events, _ = read_events(tmp_path / "m.rtrace")
    check_marks(events)


def test_user_events_in_merged_timeline_and_chrome_json(tmp_path):
    (tmp_path / "marks.py").write_text(textwrap.dedent(MARKS))
    proc = rtrace_cli("run", "-o", "m.pftrace", "--", "marks.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events, reader = read_events(tmp_path / "m.pftrace")
    check_marks(events)
    proc = rtrace_cli("export", "m.pftrace", "-o", "m.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    chrome = json.loads((tmp_path / "m.json").read_text())
    user = [e for e in chrome if e.get("cat") == "user"]
    assert [e["ph"] for e in user[:8]] == ["B", "i", "C", "C", "i", "s", "i", "f"]
    assert user[0]["args"]["path"] == "/items/7"
    assert user[5]["id"] == user[7]["id"]
    names = [e for e in chrome if e.get("name") == "thread_name"]
    assert any(e["args"]["name"] == "main-loop" for e in names), names


def test_a_span_without_a_name_is_explained():
    with pytest.raises(TypeError, match=r"rtrace.span takes a name \(a str\), not int"):
        rtrace.span(5)
    with pytest.raises(TypeError, match="not function"):
        rtrace.span(lambda: None, user=1)  # arguments need a name


def test_cheap_and_harmless_when_not_recording(run_py):
    run = run_py("""
        import rtrace
        token = rtrace.flow_out()
        rtrace.flow_in(token)
        rtrace.instant("x", a=1)
        rtrace.counter("c", 1)
        with rtrace.span("s"):
            pass
        emit(token)
    """)
    token = run.result
    parts = token.split("-")
    assert [len(p) for p in parts] == [2, 32, 16, 2] and parts[0] == "00", token


def test_bad_arguments_are_clear_errors(run_py):
    run = run_py("""
        import rtrace
        errors = []
        for bad in (lambda: rtrace.flow_in("nope"), lambda: rtrace.flow_in(42),
                    lambda: rtrace.counter("c", "x"), lambda: rtrace.span("s")(3)):
            try:
                with rtrace.record(output="e.rtrace"):
                    bad()
            except (TypeError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
        emit(errors)
    """)
    errors = run.result
    assert len(errors) == 4, errors
    assert "is not a flow token" in errors[0] and "traceparent" in errors[0]
    assert errors[1].startswith("TypeError") and "flow_out" in errors[1]
    assert "must be an int or float" in errors[2]
    assert "decorates a callable" in errors[3]


def test_quick_entry_points_still_check_their_calls_and_record_their_arguments(run_py, tmp_path):
    """instant and counter return at once when nothing records and the call
    is well formed; a call that is not is still an error, and recording
    still takes every argument."""
    run = run_py("""
        import rtrace
        errors = []
        import decimal
        for bad in (lambda: rtrace.instant(), lambda: rtrace.instant(3),
                    lambda: rtrace.counter("c"), lambda: rtrace.counter(1, 2),
                    lambda: rtrace.counter("c", 1, 2), lambda: rtrace.counter("c", "x")):
            try:
                bad()
            except TypeError as e:
                errors.append(str(e))
        # Not a float or an int, but a number: the full implementation takes it.
        rtrace.counter("c", decimal.Decimal("2.5"))
        with rtrace.record(output="q.rtrace"):
            rtrace.instant("hit", key="k", n=2)
            rtrace.counter("depth", 3.5)
            rtrace.counter("exact", decimal.Decimal("1.25"))
        emit(errors)
    """)
    # A wrong call raises whether or not anything records: a program must
    # not fail only when it is recorded (a counter's value was checked only
    # while recording).
    assert len(run.result) == 6, run.result
    assert "rtrace.instant takes a name (a str) first, not int" in run.result[1], run.result
    assert "rtrace.counter takes a name (a str) first, not int" in run.result[3], run.result
    assert 'counter "c": value must be an int or float, not str' in run.result[5], run.result
    got = {(e.kind, e.name): e for e in rtrace.read(tmp_path / "q.rtrace") if e.kind in (
        "instant", "counter")}
    assert got[("instant", "hit")].args == {"key": "k", "n": 2}
    assert got[("counter", "depth")].value == 3.5
    assert got[("counter", "exact")].value == 1.25
    names = {e.name for e in rtrace.read(tmp_path / "q.rtrace") if e.kind == "c_call"}
    assert not names & {"instant", "counter"}, names  # rtrace's own calls stay out


PING_PONG = """
    import subprocess, sys
    import rtrace

    ROUNDS = 10_000

    def pong():
        for line in sys.stdin:
            rtrace.flow_in(line.strip(), name="ping received")
            print(rtrace.flow_out(name="pong sent"), flush=True)

    def ping():
        child = subprocess.Popen([sys.executable, __file__, "pong"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, bufsize=1)
        for _ in range(ROUNDS):
            child.stdin.write(rtrace.flow_out(name="ping sent") + "\\n")
            child.stdin.flush()
            rtrace.flow_in(child.stdout.readline().strip(), name="pong received")
        child.stdin.close()
        child.wait()

    if __name__ == "__main__":
        pong() if sys.argv[1:] == ["pong"] else ping()
"""


def test_ping_pong_flows_connect_and_never_arrive_before_they_leave(tmp_path):
    (tmp_path / "pingpong.py").write_text(textwrap.dedent(PING_PONG))
    proc = rtrace_cli("run", "--no-c-calls", "-o", "pp.pftrace", "--", "pingpong.py",
                      cwd=tmp_path, timeout=280)
    assert proc.returncode == 0, proc.stderr
    sent, received = {}, {}
    pids = set()
    for ev in rtrace.read(tmp_path / "pp.pftrace"):
        if ev.kind == "flow_out":
            sent[ev.flow_id] = ev
        elif ev.kind == "flow_in":
            received[ev.flow_id] = ev
    assert len(sent) == len(received) == 20_000
    assert sent.keys() == received.keys()
    violations = [f for f, ev in received.items() if ev.ts_ns < sent[f].ts_ns]
    assert violations == []
    for flow, ev in received.items():
        assert ev.pid != sent[flow].pid
        pids.add(ev.pid)
    assert len(pids) == 2
