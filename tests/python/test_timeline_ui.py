"""The merged timeline in the real Perfetto UI: the UI's own trace
processor must agree with what the processes recorded."""

from __future__ import annotations

import os
import subprocess
import sys

from perfetto_ui import perfetto_ui  # noqa: F401  (the fixture)

from rtrace import _native

PROGRAM = """
import sys, threading, rtrace
def leaf(): pass
def branch(n):
    for _ in range(n):
        leaf()
t = threading.Thread(target=branch, args=(50,), name="helper")
with rtrace.record(session=sys.argv[1]) as rec:
    t.start()
    branch(100)
    t.join()
print(rec.events, flush=True)
"""


def test_merged_timeline_loads_in_perfetto_ui_with_names_and_counts(tmp_path, perfetto_ui):  # noqa: F811
    sock = f"unix://{tmp_path}/c.sock"
    out = tmp_path / "timeline.pftrace"
    collector = _native.Collector([sock], str(out))
    collector.start()
    (tmp_path / "p.py").write_text(PROGRAM)
    env = dict(os.environ, RTRACE_COLLECTOR=sock)
    procs = [subprocess.Popen([sys.executable, "p.py", name], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True) for name in ("svc-a", "svc-b")]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    stats = collector.stop()
    assert all(not s["truncated"] for s in stats)

    with perfetto_ui.load(out) as trace:
        trace.assert_no_errors()
        names = {r["pid"]: r["name"] for r in trace.query("select pid, name from process")}
        for p, session in zip(procs, ("svc-a", "svc-b")):
            assert names[p.pid].startswith(f"{session} (pid {p.pid})"), names
        leafs = trace.query(
            "select p.pid as pid, t.name as thread, count(*) as n from slice s "
            "join thread_track tt on s.track_id = tt.id join thread t using(utid) "
            "join process p using(upid) where s.name = 'leaf' group by 1, 2"
        )
        got = {(r["pid"], r["thread"]): r["n"] for r in leafs}
        for p in procs:
            assert got[(p.pid, "helper")] == 50 and got[(p.pid, "MainThread")] == 100, got


def test_log_args_texts_are_slice_arguments_in_perfetto_ui(tmp_path, perfetto_ui):  # noqa: F811
    (tmp_path / "app.py").write_text(
        "def handle(item, n=2): return {'item': item, 'n': n}\n"
        "for i in range(3): handle(f'tea-{i}')\n"
    )
    from test_cli import rtrace_cli

    run = rtrace_cli("run", "--log-args", "handle", "-o", "a.pftrace", "--", "app.py",
                     cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with perfetto_ui.load(tmp_path / "a.pftrace") as trace:
        trace.assert_no_errors()
        rows = trace.query(
            "select s.ts as ts, a.key as key, a.display_value as value from slice s "
            "join args a using(arg_set_id) where s.name = 'handle' "
            "and a.key in ('debug.args', 'debug.return') order by s.ts, a.key"
        )
    got = [(r["key"], r["value"]) for r in rows]
    assert got == [
        ("debug.args", f"item='tea-{i}', n=2") if k == 0 else
        ("debug.return", f"{{'item': 'tea-{i}', 'n': 2}}")
        for i in range(3) for k in (0, 1)
    ], got
