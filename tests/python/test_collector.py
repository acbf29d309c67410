"""The collector: many recorded processes streaming to one collector over
Unix sockets and TCP, merged into one chronological timeline."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import rtrace
from conftest import start_holder, wait_for_calls
from faults import Collector, proc_status_kb, reap_leftovers  # noqa: F401  (the fixture)
from rtrace import _native

WORKER = """
import os, sys, threading, rtrace
def leaf(): pass
def work(n):
    for _ in range(n):
        leaf()
calls = int(sys.argv[1])
threads = [threading.Thread(target=work, args=(calls,), name=f"w{i}") for i in range(2)]
with rtrace.record(session=sys.argv[2]) as rec:
    for t in threads: t.start()
    for t in threads: t.join()
print(rec.events, rec.lost, rec.collector, flush=True)
"""


def record_streams(tmp_path: Path, calls: int, *sessions: str) -> list[Path]:
    """Runs WORKER once per session with no collector: each writes a stream
    file in tmp_path. Returns the stream files, sorted."""
    script = tmp_path / "w.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k != "RTRACE_COLLECTOR"}
    env["RTRACE_OUTPUT_DIR"] = str(tmp_path)
    for session in sessions:
        subprocess.run([sys.executable, str(script), str(calls), session], cwd=tmp_path, env=env,
                       check=True, capture_output=True)
    return sorted(tmp_path.glob("rtrace-*.rtrace"))


# The command lines beside this interpreter (rtrace-collect runs the
# collector in-process, through rtrace's extension).
COLLECT = shutil.which("rtrace-collect", path=str(Path(sys.executable).parent))
RTRACE_BIN = str(Path(sys.executable).parent / "rtrace")


def start_workers(tmp_path: Path, address: str, sessions: list[str], calls: int,
                  token: str | None = None):
    script = tmp_path / "worker.py"
    # Written once: rewriting it (truncate, then write) while workers started
    # by an earlier call are still reading it can hand one an empty script,
    # which runs nothing and exits 0.
    if not script.exists():
        script.write_text(WORKER)
    env = dict(os.environ, RTRACE_COLLECTOR=address)
    env.pop("RTRACE_TOKEN", None)
    if token is not None:
        env["RTRACE_TOKEN"] = token
    return [
        subprocess.Popen([sys.executable, str(script), str(calls), s], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in sessions
    ]


def rtrace_run(cwd: Path, output: str, *program: str) -> subprocess.CompletedProcess:
    """`rtrace run -o OUTPUT -- PROGRAM...` with the installed command."""
    rtrace_bin = Path(sys.executable).parent / "rtrace"
    return subprocess.run([str(rtrace_bin), "run", "-o", output, "--", *program], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def chrome_events(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return data["traceEvents"] if isinstance(data, dict) else data


def test_ten_processes_over_unix_and_tcp_merge_into_one_ordered_timeline(tmp_path):
    sock = tmp_path / "c.sock"
    out = tmp_path / "merged.json"
    collector = _native.Collector([f"unix://{sock}", "tcp://127.0.0.1:0"], str(out),
                                  token="t-0123456789")
    collector.start()
    unix, tcp = collector.addresses
    assert unix == f"unix://{sock}" and tcp.startswith("tcp://127.0.0.1:"), collector.addresses
    assert not tcp.endswith(":0"), tcp
    calls = 3000
    procs = start_workers(tmp_path, f"unix://{sock}", [f"unix-{i}" for i in range(5)], calls)
    procs += start_workers(tmp_path, tcp, [f"tcp-{i}" for i in range(5)],
                           calls, token="t-0123456789")
    reported = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0 and len(stdout.split()) == 3, (p.returncode, stdout, stderr)
        events, lost, _ = stdout.split()
        reported[p.pid] = (int(events), int(lost))
    stats = collector.stop()
    assert {s["pid"] for s in stats} == set(reported)
    for s in stats:
        assert (s["events"], s["lost"]) == reported[s["pid"]], s
        assert not s["truncated"] and s["error"] is None and s["late"] == 0, s

    events = chrome_events(out)
    slices = [e for e in events if e.get("ph") in ("B", "E")]
    assert [e["ts"] for e in slices] == sorted(e["ts"] for e in slices), "not chronological"
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    assert sorted(processes[pid].split(" ")[0] for pid in reported) == sorted(
        [f"unix-{i}" for i in range(5)] + [f"tcp-{i}" for i in range(5)])
    leaf_calls = Counter((e["pid"], names.get((e["pid"], e["tid"]))) for e in slices
                         if e["ph"] == "B" and e["name"] == "leaf")
    for pid in reported:
        assert leaf_calls[(pid, "w0")] == calls and leaf_calls[(pid, "w1")] == calls


def test_offline_merge_joins_stream_files(tmp_path):
    inputs = [str(p) for p in record_streams(tmp_path, 500, "a", "b")]
    assert len(inputs) == 2
    stats, skipped = _native.merge(inputs, str(tmp_path / "m.json"))
    assert skipped == []
    assert [s["events"] for s in stats] == [sum(1 for _ in rtrace.read(i)) for i in inputs]
    events = chrome_events(tmp_path / "m.json")
    per_thread = defaultdict(list)
    for e in events:
        if e.get("ph") in ("B", "E"):
            per_thread[(e["pid"], e["tid"])].append(e["ph"])
    for phases in per_thread.values():
        assert phases.count("B") == phases.count("E")


def test_rtrace_run_gives_one_timeline_and_says_where(tmp_path):
    (tmp_path / "app.py").write_text(
        "import subprocess, sys\n"
        "def parent_work(): return sum(range(10))\n"
        "parent_work()\n"
        "subprocess.run([sys.executable, '-c', 'def child_work(): pass\\nchild_work()'], check=True)\n"
        "sys.exit(4)\n"
    )
    proc = rtrace_run(tmp_path, "t.json", "app.py")
    assert proc.returncode == 4, proc.stderr
    assert "timeline:" in proc.stderr and "t.json" in proc.stderr and "rtrace view" in proc.stderr
    events = chrome_events(tmp_path / "t.json")
    calls = {e["name"]: e["pid"] for e in events if e.get("ph") == "B"}
    assert "parent_work" in calls and "child_work" in calls
    assert calls["parent_work"] != calls["child_work"]


def test_the_collector_console_script_rejects_wrong_usage(tmp_path):
    script = Path(sys.executable).parent / "rtrace-collect"
    proc = subprocess.run([str(script)], capture_output=True, text=True)
    assert proc.returncode != 0 and "--listen" in proc.stderr
    proc = subprocess.run([str(script), "--listen", "http://x", "-o", "x.pftrace"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "unix://" in proc.stderr


def test_rtrace_read_iterates_a_merged_perfetto_timeline(tmp_path):
    sock = tmp_path / "c.sock"
    out = tmp_path / "merged.pftrace"
    collector = _native.Collector([f"unix://{sock}"], str(out))
    collector.start()
    procs = start_workers(tmp_path, f"unix://{sock}", ["p0", "p1", "p2"], 400)
    reported = {}
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        reported[p.pid] = int(stdout.split()[0])
    collector.stop()
    reader = rtrace.read(out)
    events = list(reader)
    assert reader.merged and not reader.truncated
    assert Counter(e.pid for e in events) == Counter(reported)
    assert [e.ts_ns for e in events] == sorted(e.ts_ns for e in events)
    assert {p["session"] for p in reader.processes()} == {"p0", "p1", "p2"}
    leaf = [e for e in events if e.name == "leaf" and e.kind == "call"]
    assert len(leaf) == 3 * 2 * 400 and leaf[0].file.endswith("worker.py")
    assert set(reader.thread_names().values()) >= {"w0", "w1"}


def test_a_program_that_records_itself_works_under_rtrace_run(tmp_path):
    (tmp_path / "svc.py").write_text(
        "import rtrace\n"
        "def handle(): pass\n"
        "with rtrace.record(session='svc-a'):\n"
        "    handle()\n"
    )
    proc = rtrace_run(tmp_path, "t.pftrace", "svc.py")
    assert proc.returncode == 0, proc.stderr
    reader = rtrace.read(tmp_path / "t.pftrace")
    handled = [e for e in reader if e.name == "handle" and e.kind == "call"]
    assert len(handled) == 1
    assert "svc-a" in {p["session"] for p in reader.processes()}


@pytest.mark.parametrize("on_full", ["drop", "block"])
def test_a_running_process_events_are_written_at_once_not_a_window_later(tmp_path, on_full):
    """On every flush tick a Python recorder promises that all its events
    before it were sent; the collector writes them at once. With a 60 s
    reorder window, which alone would hold them until the end, the merged
    file grows while the process still runs, and nothing comes late. Also
    with on_full="block": the tick waits for the GIL on a thread of its
    own, so a thread waiting for room while holding the GIL delays it
    but cannot keep the writer from making that room."""
    sock = tmp_path / "c.sock"
    out = tmp_path / "merged.pftrace"
    collector = _native.Collector([f"unix://{sock}"], str(out), window=60.0)
    collector.start()
    calls = 200_000
    proc = start_holder(tmp_path, f"unix://{sock}", calls, on_full)
    try:
        # 400,000 events at ~14 bytes: more than half of them, with room
        # for what the output buffers.
        written = 0
        deadline = time.monotonic() + 30
        while written < 3_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
            written = out.stat().st_size if out.exists() else 0
        assert written >= 3_000_000, f"only {written} bytes written while the process ran"
    finally:
        stdout, stderr = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, stderr
    events, lost = map(int, stdout.split())
    stats = collector.stop()
    assert [(s["events"], s["lost"], s["late"]) for s in stats] == [(events, lost, 0)]
    assert events >= 2 * calls and lost == 0, (events, lost)


def test_a_quiet_process_events_are_in_the_file_within_seconds(tmp_path):
    """A process that records a few calls and then waits (a service between
    requests) finds them in the collector's file on disk a second or so
    later, while it still runs: the collector writes out what it has merged
    every second, however little. Before, 2,000 events (~28 KB) stayed in
    the writer's 256 KB buffer, and the file was empty, until more came or
    the collector finished."""
    sock = tmp_path / "c.sock"
    out = tmp_path / "merged.pftrace"
    collector = _native.Collector([f"unix://{sock}"], str(out))
    collector.start()
    proc = start_holder(tmp_path, f"unix://{sock}", 1000)
    try:
        leaves, took = wait_for_calls(out, "leaf", 1000)
        assert leaves == 1000, f"{leaves} of 1000 calls in the file after {took:.1f} s"
        assert proc.poll() is None, "the process still runs"
    finally:
        stdout, stderr = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, stderr
    collector.stop()
    assert sum(e.name == "leaf" and e.kind == "call" for e in rtrace.read(out)) == 1000


def test_an_offline_merge_names_inputs_it_cannot_read_and_writes_nothing_from_none(tmp_path):
    (good,) = [p.name for p in record_streams(tmp_path, 200, "good")]
    (tmp_path / "foreign.rtrace").write_text("not a stream")
    for command in ([COLLECT, "merge"], [RTRACE_BIN, "export"]):
        # One good input among bad ones: the timeline holds it, each bad one
        # is named with why, and the exit status says something was left out.
        proc = subprocess.run([*command, good, "missing.rtrace", "foreign.rtrace", "-o", "m.json"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert "skipped: cannot open missing.rtrace" in proc.stderr, proc.stderr
        assert "skipped: foreign.rtrace is not an rtrace stream" in proc.stderr, proc.stderr
        assert "2 of 3 inputs could not be read" in proc.stderr, proc.stderr
        assert any(e.get("name") == "leaf" for e in chrome_events(tmp_path / "m.json"))
        # No input readable: an error, and an existing output left as it was.
        (tmp_path / "keep.json").write_text("earlier")
        proc = subprocess.run([*command, "missing.rtrace", "foreign.rtrace", "-o", "keep.json"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, proc.stderr
        assert "no input could be read, so nothing was written" in proc.stderr, proc.stderr
        assert (tmp_path / "keep.json").read_text() == "earlier"


def _run_on_a_slow_pipe(tmp_path: Path, args: list[str], terminal: bool) -> tuple[int, bytes]:
    """Runs `args` (where "FIFO" stands for a named pipe) while the pipe is
    fed the recorded stream in two halves 1.5 s apart, so that the command
    takes longer than a second; stderr is a pseudo-terminal or a pipe.
    Returns the exit status and what came out on stderr."""
    import pty
    import threading

    (stream,) = tmp_path.glob("rtrace-*.rtrace")
    data = stream.read_bytes()
    fifo = tmp_path / "slow.fifo"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(1.5)
            f.write(data[len(data) // 2 :])

    feeder = threading.Thread(target=feed)
    feeder.start()
    if terminal:
        controller, terminal_fd = pty.openpty()
        err = terminal_fd
    else:
        err = subprocess.PIPE
    argv = [fifo.name if a == "FIFO" else a for a in args]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err)
    if terminal:
        os.close(terminal_fd)
        out = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            out += chunk
        os.close(controller)
    else:
        out = proc.communicate(timeout=60)[1]
    feeder.join()
    return proc.wait(timeout=60), out


# ~16 s, and the same on every Python (the progress is the native code's).
@pytest.mark.heavy
def test_long_work_on_files_shows_its_progress_on_a_terminal_only(tmp_path):
    (stream,) = record_streams(tmp_path, 20000, "slow")
    commands = {
        "merging": ([COLLECT, "merge", stream.name, "FIFO", "-o", "m.pftrace"],
                    [RTRACE_BIN, "export", stream.name, "FIFO", "-o", "m.pftrace"]),
        # Reading a pipe (`rtrace stats <(zcat t.rtrace.gz)`) works too.
        "reading": ([COLLECT, "stats", "FIFO"], [COLLECT, "stats", "--functions", "FIFO"],
                    [RTRACE_BIN, "stats", "FIFO"]),
    }
    for doing, argvs in commands.items():
        for argv in argvs:
            status, out = _run_on_a_slow_pipe(tmp_path, argv, terminal=True)
            text = out.decode(errors="replace")
            assert status == 0, (argv, text)
            # Shown in place once the work took a second (a pipe's size is
            # not known ahead: bytes read, no percentage), then erased.
            shown = re.search(rf"\r\x1b\[2K{doing}: [\d.]+ [kMG]?B read, \d+ s", text)
            assert shown, (argv, repr(text))
            last = text.rindex(f"{doing}: ")
            assert "\r\x1b[2K" in text[last:], (argv, repr(text))
            assert "%" not in text[: shown.end()], (argv, repr(text))
            # Not on a pipe (logs, CI): the same command prints no progress.
            status, out = _run_on_a_slow_pipe(tmp_path, argv, terminal=False)
            assert status == 0 and doing.encode() not in out and b"\x1b" not in out, (argv, out)


def test_rtrace_export_reads_pipes_and_tells_a_timeline_among_streams(tmp_path):
    (stream,) = record_streams(tmp_path, 100, "piped")
    # A stream through a pipe is merged; a timeline through a pipe is
    # rewritten (each is opened once: reading ahead to tell which it is
    # would have eaten the pipe's first bytes).
    proc = subprocess.run(["bash", "-c", f'"{RTRACE_BIN}" export <(cat {stream.name}) -o t.pftrace '
                           f'&& "{RTRACE_BIN}" export <(cat t.pftrace) -o t.json'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    leaves = [e for e in chrome_events(tmp_path / "t.json") if e.get("name") == "leaf"]
    assert len(leaves) == 2 * 100, len(leaves)  # each of the 2 threads called leaf() 100 times
    # A timeline among stream files is named for what it is.
    proc = subprocess.run([RTRACE_BIN, "export", "t.pftrace", stream.name, "-o", "u.pftrace"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "skipped: t.pftrace is a merged timeline: merge stream files, or rewrite one " \
           "timeline at a time" in proc.stderr, proc.stderr
    # Only timelines: each is named in the error (not the same reason twice,
    # naming none).
    proc = subprocess.run([RTRACE_BIN, "export", "t.pftrace", "./t.pftrace", "-o", "v.pftrace"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "nothing was written: t.pftrace is a merged timeline" in proc.stderr, proc.stderr
    assert "; ./t.pftrace is a merged timeline" in proc.stderr, proc.stderr


def test_an_output_that_is_also_an_input_is_refused_and_the_input_kept(tmp_path):
    (stream,) = record_streams(tmp_path, 100, "same")
    subprocess.run([RTRACE_BIN, "export", stream.name, "-o", "t.pftrace"], cwd=tmp_path,
                   check=True, capture_output=True)
    os.link(tmp_path / "t.pftrace", tmp_path / "alias.pftrace")
    cases = [
        ([COLLECT, "merge", stream.name, "-o", stream.name], stream.name, stream.name),
        ([RTRACE_BIN, "export", stream.name, "-o", f"./{stream.name}"], f"./{stream.name}",
         stream.name),
        # A timeline rewritten onto itself, under another name (a hard link).
        ([RTRACE_BIN, "export", "t.pftrace", "-o", "alias.pftrace"], "alias.pftrace", "t.pftrace"),
    ]
    for argv, output, input_name in cases:
        before = (tmp_path / input_name).read_bytes()
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, (argv, proc.stderr)
        assert (f"the output {output} is the input {input_name}: writing it would destroy what "
                "is being read; give -o another name") in proc.stderr, (argv, proc.stderr)
        assert (tmp_path / input_name).read_bytes() == before, argv


def test_a_file_that_cannot_be_opened_is_reported_with_its_reason_once(tmp_path):
    for args in (["stats", "--functions", "missing.rtrace"], ["stats", "missing.rtrace"],
                 ["merge", "missing.rtrace", "-o", "m.pftrace"]):
        proc = subprocess.run([COLLECT, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode != 0, proc.stderr
        assert "cannot open missing.rtrace" in proc.stderr, proc.stderr
        assert proc.stderr.count("No such file or directory") == 1, proc.stderr


SCHED_OTHER, SCHED_BATCH = 0, 3

RECORDS_UNTIL_STDIN_CLOSES = """
import sys, rtrace
with rtrace.record(session="policy"):
    print("RECORDING", flush=True)
    sys.stdin.read()
"""


def thread_policies(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of ``pid``: its name and scheduling policy (field 41 of
    /proc/PID/task/TID/stat)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        threads[int(task.name)] = (name, int(fields[38]))
    return threads


def policies_in_place(collecting: dict, traced: dict) -> bool:
    """True once the recorder's writer runs under SCHED_BATCH and the
    collector's ``stream #0`` and ``output`` threads have started."""
    writers = [policy for name, policy in traced.values() if name == "rtrace-writer"]
    names = {name for name, _ in collecting.values()}
    return writers == [SCHED_BATCH] and {"stream #0", "output"} <= names


def test_the_writer_gives_way_and_the_collector_keeps_its_policy(tmp_path):
    """The recorder's writer runs under SCHED_BATCH, so that its wake-ups do
    not preempt the traced thread (without it, they were most of the traced
    thread's ~250 preemptions per fib(30) run); the program's own threads
    keep the policy they had. The collector's merge, stream and output
    threads keep the default policy: under SCHED_BATCH each of their
    wake-ups waited for the running thread's slice to end, and with two
    traced processes filling both cores, 18 of 200 runs lost events (none
    of 200 without it)."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = Collector(tmp_path, sock, "t.pftrace")
    program = subprocess.Popen([sys.executable, "-c", RECORDS_UNTIL_STDIN_CLOSES], cwd=tmp_path,
                               env=dict(os.environ, RTRACE_COLLECTOR=sock),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout.readline().strip() == "RECORDING"
        # The collector accepts the stream as soon as the recorder connects,
        # which is before the writer thread first runs (on a busy machine,
        # some time later; till then it is an unnamed clone of the main
        # thread): poll until every thread is there as expected, or 10 s.
        deadline = time.monotonic() + 10
        while True:
            collecting = thread_policies(collector.pid)
            traced = thread_policies(program.pid)
            if policies_in_place(collecting, traced) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        program.stdin.close()
        program.wait(timeout=30)
        collector.finish()
    assert program.returncode == 0
    assert traced[program.pid][1] == SCHED_OTHER, traced
    writers = [policy for name, policy in traced.values() if name == "rtrace-writer"]
    assert writers == [SCHED_BATCH], traced
    by_name = {name: policy for name, policy in collecting.values()}
    assert collecting[collector.pid][1] == SCHED_OTHER, collecting  # the merge thread
    assert by_name.get("stream #0") == SCHED_OTHER, collecting
    assert by_name.get("output") == SCHED_OTHER, collecting


def test_ctrl_c_finishes_the_console_collector_with_status_0(tmp_path):
    """The pip-installed rtrace-collect runs the collector inside Python:
    Ctrl-C finishes the file and exits 0, with no KeyboardInterrupt
    traceback once the collector returns (Python's own SIGINT handler used
    to leave one pending)."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = Collector(tmp_path, sock, "t.pftrace")
    [worker] = start_workers(tmp_path, sock, ["ctrl-c"], 100)
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    report = collector.finish(sig=signal.SIGINT)  # exit status 0, or it fails here
    assert "Traceback" not in report and "KeyboardInterrupt" not in report, report
    assert "wrote t.pftrace" in report, report
    assert sum(1 for e in rtrace.read(tmp_path / "t.pftrace") if e.name == "leaf" and e.kind == "call") == 200


@pytest.mark.skipif(sys.platform != "linux" or "glibc" not in " ".join(platform.libc_ver()),
                    reason="glibc's malloc")
def test_an_idle_collector_gives_its_memory_back(tmp_path):
    """The collector's tuned malloc keeps freed memory for reuse (see
    ``collector/src/heap.rs``), so without more a long-running
    ``rtrace-collect --listen`` held the peak of its busiest moment for good.
    Once no stream is open and nothing waits to be merged for a second,
    it gives its free memory back to the kernel, the buffers it keeps for
    reuse included: all that the burst took, within a quarter of it
    and 3 MB."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = Collector(tmp_path, sock, "t.pftrace")
    before_kb = proc_status_kb(collector.pid, "VmRSS")
    [worker] = start_workers(tmp_path, sock, ["burst"], 1_000_000)
    assert worker.wait(timeout=120) == 0, worker.stderr.read()
    peak_kb = proc_status_kb(collector.pid, "VmHWM")
    # Otherwise there would be nothing to give back, and nothing to check.
    # The peak is the reorder window's and the buffers', not the burst's
    # length: it rose by 10-25 MB here. Before the kept buffers were freed
    # too, ~6 MB of it stayed, whatever the peak.
    assert peak_kb - before_kb >= 4 * 1024, (before_kb, peak_kb)
    given_back_at = before_kb + min((peak_kb - before_kb) // 4, 3 * 1024)
    deadline = time.monotonic() + 10
    while (rss_kb := proc_status_kb(collector.pid, "VmRSS")) > given_back_at:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    report = collector.finish()
    assert rss_kb <= given_back_at, (f"{rss_kb} KiB resident 10 s after the stream ended; "
                                     f"{before_kb} KiB before it, {peak_kb} KiB at its peak")
    # The file is whole: every call of both threads is in it.
    assert "wrote t.pftrace" in report, report
    calls = sum(1 for e in rtrace.read(tmp_path / "t.pftrace") if e.name == "leaf" and e.kind == "call")
    lost = int(worker.stdout.read().split()[1])
    assert 2_000_000 - lost <= calls <= 2_000_000, (calls, lost)
