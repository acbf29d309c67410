"""The merged timeline in the real Perfetto UI: the UI's own trace
processor must agree with what the processes recorded."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import pid_namespace_command, rtrace_cli, start_holder, wait_for_calls
from perfetto_ui import perfetto_ui  # noqa: F401  (the fixture)

import rtrace
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


def record_program(tmp_path: Path, out: Path,
                   commands: list[list[str]]) -> tuple[list[subprocess.Popen], list[dict]]:
    """Runs the commands at once, all streaming to one collector writing
    ``out`` (each runs PROGRAM, as ``p.py SESSION``, in the end); the
    processes and the collector's stats."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = _native.Collector([sock], str(out))
    collector.start()
    (tmp_path / "p.py").write_text(PROGRAM)
    env = dict(os.environ, RTRACE_COLLECTOR=sock)
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
             for command in commands]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    return procs, collector.stop()


def test_merged_timeline_loads_in_perfetto_ui_with_names_and_counts(tmp_path, perfetto_ui):  # noqa: F811
    out = tmp_path / "timeline.pftrace"
    sessions = ("svc-a", "svc-b")
    procs, stats = record_program(tmp_path, out, [[sys.executable, "p.py", s] for s in sessions])
    assert all(not s["truncated"] for s in stats)

    with perfetto_ui.load(out) as trace:
        trace.assert_no_errors()
        names = {r["pid"]: r["name"] for r in trace.query("select pid, name from process")}
        for p, session in zip(procs, sessions):
            assert names[p.pid].startswith(f"{session} (pid {p.pid})"), names
        leafs = trace.query(
            "select p.pid as pid, t.name as thread, count(*) as n from slice s "
            "join thread_track tt on s.track_id = tt.id join thread t using(utid) "
            "join process p using(upid) where s.name = 'leaf' group by 1, 2"
        )
        got = {(r["pid"], r["thread"]): r["n"] for r in leafs}
        for p in procs:
            assert got[(p.pid, "helper")] == 50 and got[(p.pid, "MainThread")] == 100, got


def test_processes_with_one_pid_in_two_containers_stay_apart_in_perfetto_ui(tmp_path, perfetto_ui):  # noqa: F811
    """Two processes, each pid 1 of a pid namespace of its own (as in two
    containers), on one timeline: Perfetto knows a process by its pid, so
    without stand-in pids it would draw them as one process."""
    contained = pid_namespace_command()
    out = tmp_path / "containers.pftrace"
    boxes = ("box-a", "box-b")
    _, stats = record_program(tmp_path, out,
                              [[*contained, sys.executable, "p.py", box] for box in boxes])
    assert [s["pid"] for s in stats] == [1, 1] and all(not s["truncated"] for s in stats), stats

    # Read back: each its own pid and namespace, neither this one's, and
    # its events told apart by their process.
    reader = rtrace.read(out)
    leafs = collections.Counter(e.process for e in reader if e.kind == "call" and e.name == "leaf")
    assert sorted(leafs.values()) == [150, 150], leafs
    read = reader.processes()
    assert {p["process"] for p in read} == set(leafs), read
    assert sorted(p["session"] for p in read) == list(boxes)
    assert [p["pid"] for p in read] == [1, 1] and [p["ppid"] for p in read] == [0, 0]
    mine = int(os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]"))
    namespaces = {p["pid_namespace"] for p in read}
    assert len(namespaces) == 2 and mine not in namespaces and 0 not in namespaces, read

    with perfetto_ui.load(out) as trace:
        assert_processes_apart(trace, [f"{box} (pid 1)" for box in boxes])
        # Labelled with their namespaces, which tell them apart in the UI.
        labels = trace.query("select a.display_value as label from process join args a "
                             "using(arg_set_id) where a.key like 'chrome.process_label%' "
                             "and a.display_value like 'pidns=%'")
        assert sorted(r["label"] for r in labels) == sorted(f"pidns={n}" for n in namespaces)


def assert_processes_apart(trace, names: list[str]) -> None:
    """The processes named ``names`` (PROGRAM's, sharing a pid) are each a
    process of their own in the UI, with their own threads and calls."""
    trace.assert_no_errors()
    listed = ", ".join(f"'{name}'" for name in names)
    processes = trace.query(f"select upid, pid, name from process where name in ({listed}) "
                            "order by name")
    assert [r["name"] for r in processes] == sorted(names), processes
    assert len({r["upid"] for r in processes}) == len(names), processes
    assert len({r["pid"] for r in processes}) == len(names), processes
    leafs = trace.query(
        "select p.name as process, t.name as thread, count(*) as n from slice s "
        "join thread_track tt on s.track_id = tt.id join thread t using(utid) "
        "join process p using(upid) where s.name = 'leaf' group by 1, 2"
    )
    got = {(r["process"], r["thread"]): r["n"] for r in leafs}
    assert got == {(name, thread): n for name in names
                   for thread, n in (("MainThread", 100), ("helper", 50))}, got


REUSE = """
set -e
# In a pid namespace of its own, this shell is pid 1 and the first Python pid 2.
"$1" p.py reuse-a
# A pid reused, as it is once pid_max wraps: the next process is pid 2 again.
echo 1 > /proc/sys/kernel/ns_last_pid
"$1" p.py reuse-b
"""


def test_a_reused_pid_is_two_processes_in_perfetto_ui(tmp_path, perfetto_ui):  # noqa: F811
    """Two processes of one host and pid namespace, one after the other,
    with the same pid: told apart by their start times."""
    contained = pid_namespace_command()
    out = tmp_path / "reused.pftrace"
    _, stats = record_program(tmp_path, out, [[*contained, "sh", "-c", REUSE, "sh", sys.executable]])
    assert [s["pid"] for s in stats] == [2, 2] and all(not s["truncated"] for s in stats), stats
    reader = rtrace.read(out)
    assert sum(1 for e in reader if e.kind == "call" and e.name == "leaf") == 300
    read = reader.processes()
    assert [(p["session"], p["pid"]) for p in read] == [("reuse-a", 2), ("reuse-b", 2)], read
    assert read[0]["pid_namespace"] == read[1]["pid_namespace"], read

    with perfetto_ui.load(out) as trace:
        assert_processes_apart(trace, ["reuse-a (pid 2)", "reuse-b (pid 2)"])


def test_a_file_copied_while_the_collector_writes_it_loads_in_perfetto_ui(tmp_path, perfetto_ui):  # noqa: F811
    """The collector's file, copied while a quiet process is still recording
    to it, loads in the UI as it is: the calls so far as whole slices, the
    process named, and no stream end yet."""
    sock = f"unix://{tmp_path}/c.sock"
    out = tmp_path / "live.pftrace"
    collector = _native.Collector([sock], str(out))
    collector.start()
    proc = start_holder(tmp_path, sock, 1000)
    try:
        leaves, took = wait_for_calls(out, "leaf", 1000)
        assert leaves == 1000, f"{leaves} of 1000 calls in the file after {took:.1f} s"
        # A copy that caught a write half done ends in a torn packet: copy
        # again until the file stays as copied (the process is quiet, and
        # the collector writes whole packets).
        snapshot = tmp_path / "snapshot.pftrace"
        for _ in range(10):
            shutil.copyfile(out, snapshot)
            time.sleep(0.3)
            if out.read_bytes() == snapshot.read_bytes():
                break
        reader = rtrace.read(snapshot)
        assert sum(1 for e in reader if e.kind == "call" and e.name == "leaf") == 1000
        # Whole packets, but the stream has not ended: it reads as cut short.
        assert reader.truncated and [p["truncated"] for p in reader.processes()] == [None]
    finally:
        proc.communicate("\n", timeout=60)
    collector.stop()

    with perfetto_ui.load(snapshot) as trace:
        trace.assert_no_errors()
        names = [r["name"] for r in trace.query(f"select name from process where pid = {proc.pid}")]
        assert names and names[0].startswith(f"holder (pid {proc.pid})"), names
        (leaf,) = trace.query("select count(*) as n, min(dur) as shortest from slice "
                              "where name = 'leaf'")
        assert leaf["n"] == 1000 and leaf["shortest"] >= 0, leaf
        (ends,) = trace.query("select count(*) as n from slice where name like 'rtrace: stream%'")
        assert ends["n"] == 0, "the snapshot was taken before the stream ended"


def test_services_example_shows_arrows_between_svc_a_and_svc_b(tmp_path, perfetto_ui):  # noqa: F811
    """The README's main job: the example's timeline in Perfetto UI, with
    flow arrows from svc-a's requests to svc-b and back, and to the pool."""
    example = Path(__file__).resolve().parents[2] / "examples" / "services" / "main.py"
    out = tmp_path / "services.pftrace"
    proc = rtrace_cli("run", "--session", "services", "-o", str(out), "--", str(example),
                      cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "6 orders invoiced" in proc.stdout

    with perfetto_ui.load(out) as trace:
        trace.assert_no_errors()
        sessions = trace.query(
            "select p.pid as pid, p.name as name, p.parent_upid is not null as has_parent "
            "from process p where p.name like 'svc-%' or p.name like 'services%'"
        )
        names = sorted(r["name"].split(" (")[0] for r in sessions)
        assert names == ["services", "svc-a", "svc-a", "svc-a", "svc-b"], sessions
        assert all(r["has_parent"] for r in sessions if not r["name"].startswith("services"))
        flows = trace.query(
            "select so.name as out_name, si.name as in_name, "
            "substr(po.name, 1, 5) as out_proc, substr(pi.name, 1, 5) as in_proc, "
            "so.ts as out_ts, si.ts as in_ts "
            "from flow f join slice so on f.slice_out = so.id join slice si on f.slice_in = si.id "
            "join thread_track tto on so.track_id = tto.id join thread tho using(utid) "
            "join process po on tho.upid = po.upid "
            "join thread_track tti on si.track_id = tti.id join thread thi on tti.utid = thi.utid "
            "join process pi on thi.upid = pi.upid"
        )
        kinds = collections.Counter((r["out_proc"], r["in_proc"], r["out_name"]) for r in flows)
        assert kinds == {
            ("svc-a", "svc-b", "request sent"): 15,
            ("svc-b", "svc-a", "response sent"): 15,
            ("svc-a", "svc-a", "task sent"): 6,
        }, kinds
        assert all(r["in_ts"] >= r["out_ts"] for r in flows)
        spans = trace.scalar("select count(*) from slice where name = 'price lookup'")
        assert spans == 15
        # User arguments show in the details pane (Perfetto's args table).
        items = trace.query(
            "select a.int_value as item from slice s join args a using(arg_set_id) "
            "where s.name = 'price lookup' and a.key = 'debug.item' order by 1"
        )
        assert [r["item"] for r in items] == list(range(1, 16)), items
        counters = trace.query(
            "select max(c.value) as top from counter c join process_counter_track t "
            "on c.track_id = t.id where t.name = 'orders priced'"
        )
        assert counters[0]["top"] == 6, counters


def test_log_args_texts_are_slice_arguments_in_perfetto_ui(tmp_path, perfetto_ui):  # noqa: F811
    (tmp_path / "app.py").write_text(
        "def handle(item, n=2): return {'item': item, 'n': n}\n"
        "for i in range(3): handle(f'tea-{i}')\n"
    )
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


HOT_PROGRAM = """
import sys, rtrace
def leaf(i):
    return len(str(i))
def boom(n):
    if n == 0:
        raise ValueError(n)
    boom(n - 1)
def safe():
    try:
        boom(3)
    except ValueError:
        pass
with rtrace.record(session=sys.argv[1], lines=True) as rec:
    for i in range(300):
        leaf(i)
        safe()
print(rec.events, rec.lost, flush=True)
"""


def test_every_kind_of_hand_written_packet_loads_in_perfetto_ui(tmp_path, perfetto_ui):  # noqa: F811
    """The collector writes the packets of calls, returns, C calls,
    exceptions and lines by hand once their names are interned (see
    src/export/perfetto/thread/hot.rs), on the streams' reader threads: the
    UI must read the same slices, arguments and line instants as rtrace's
    own reader does."""
    sock = f"unix://{tmp_path}/c.sock"
    out = tmp_path / "hot.pftrace"
    collector = _native.Collector([sock], str(out))
    collector.start()
    (tmp_path / "p.py").write_text(HOT_PROGRAM)
    env = dict(os.environ, RTRACE_COLLECTOR=sock)
    proc = subprocess.run([sys.executable, "p.py", "hot"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events, lost = map(int, proc.stdout.split())
    assert lost == 0
    stats = collector.stop()
    assert [s["events"] for s in stats] == [events]

    import rtrace

    read = collections.Counter((e.kind, e.name) for e in rtrace.read(out))
    assert read[("call", "leaf")] == read[("return", "leaf")] == 300
    assert read[("exception", "boom")] == 1200
    assert read[("c_call", "len")] == 300
    assert read[("line", "leaf")] >= 300
    with perfetto_ui.load(out) as trace:
        trace.assert_no_errors()

        def slices(name: str, instants: bool = False) -> int:
            op = "=" if instants else ">"
            return trace.scalar(f"select count(*) from slice where name = '{name}' and dur {op} 0")

        assert slices("leaf") == 300
        assert slices("boom") == 1200
        len_calls = trace.scalar("select count(*) from slice where name = 'len'")
        assert len_calls == read[("c_call", "len")]
        assert slices("leaf", instants=True) == read[("line", "leaf")]
        raised = trace.scalar(
            "select count(*) from slice s join args a using(arg_set_id) "
            "where s.name = 'boom' and a.key = 'debug.exception'"
        )
        assert raised == 1200
        lines = trace.scalar(
            "select count(*) from slice s join args a using(arg_set_id) "
            "where s.name = 'leaf' and s.dur = 0 and a.key = 'debug.line'"
        )
        assert lines == read[("line", "leaf")]
