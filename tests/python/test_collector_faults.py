"""The collector and the recorders around it when things go wrong: a
collector stopped mid-stream, processes killed, hostile input, a collector
that starts late or restarts."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from faults import Collector, on_a_small_disk, reap_leftovers, report_rows  # noqa: F401
from faults import start_streamer as start_program
from perfetto_ui import perfetto_ui  # noqa: F401  (the fixture)

import rtrace

COLLECT = str(Path(sys.executable).parent / "rtrace-collect")

STREAMER = """
import sys, time, rtrace
def tick():
    time.sleep(0.0005)
rec = rtrace.start(session=sys.argv[1])
print("STARTED", flush=True)
if sys.argv[2] == "wait":
    sys.stdin.readline()
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    tick()
rtrace.stop()
print("EVENTS", rec.events, rec.lost, flush=True)
"""


def start_collector(tmp_path: Path, address: str, output: str) -> subprocess.Popen:
    proc = subprocess.Popen([COLLECT, "--listen", address, "-o", output, "--drain", "0.5"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "listening on" in line, line
    return proc


def start_streamer(tmp_path: Path, address: str, session: str, seconds: float,
                   wait: bool = False) -> subprocess.Popen:
    script = tmp_path / "streamer.py"
    script.write_text(STREAMER)
    env = dict(os.environ, RTRACE_COLLECTOR=address, RTRACE_OUTPUT_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, str(script), session, "wait" if wait else "go",
                             str(seconds)], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "STARTED"
    return proc


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def slices(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") in ("B", "E")]


def ended_by_stream(event: dict) -> bool:
    return event["ph"] == "E" and event.get("args", {}).get("ended_by") == "stream end"


def test_sigterm_mid_stream_finishes_a_loadable_file(tmp_path):
    sock = f"unix://{tmp_path}/c.sock"
    collector = start_collector(tmp_path, sock, "out.json")
    streamers = [start_streamer(tmp_path, sock, f"s{i}", 30) for i in range(4)]
    collector.send_signal(signal.SIGTERM)
    _, stderr = collector.communicate(timeout=60)
    assert collector.returncode == 0, stderr
    events = slices(tmp_path / "out.json")
    assert {e["pid"] for e in events} == {p.pid for p in streamers}
    for line in stderr.splitlines():
        if any(f" {p.pid} " in line for p in streamers):
            assert "truncated" in line, stderr
    for p in streamers:
        p.kill()
        p.wait()


def test_killed_process_shows_as_truncated_with_what_it_sent(tmp_path):
    sock = f"unix://{tmp_path}/c.sock"
    collector = start_collector(tmp_path, sock, "out.json")
    victim = start_streamer(tmp_path, sock, "victim", 30)
    survivor = start_streamer(tmp_path, sock, "survivor", 0.5)
    survivor_out, _ = survivor.communicate(timeout=60)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    collector.send_signal(signal.SIGINT)
    _, stderr = collector.communicate(timeout=60)
    rows = {line.split()[1]: line for line in stderr.splitlines()[1:] if len(line.split()) > 2}
    assert "truncated" in rows[str(victim.pid)], stderr
    assert "clean" in rows[str(survivor.pid)], stderr
    sent = int(survivor_out.split()[1])
    events = slices(tmp_path / "out.json")
    assert sum(1 for e in events if e["pid"] == survivor.pid) == sent
    assert sum(1 for e in events if e["pid"] == victim.pid) > 0


def test_garbage_and_huge_frames_close_only_their_own_stream(tmp_path):
    sock_path = tmp_path / "c.sock"
    sock = f"unix://{sock_path}"
    collector = start_collector(tmp_path, sock, "out.json")
    good = start_streamer(tmp_path, sock, "good", 1.0, wait=True)
    before = rss_kb(collector.pid)
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(str(sock_path))
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    huge = socket.socket(socket.AF_UNIX)
    huge.connect(str(sock_path))
    huge.sendall(b"RTRACE\x01\x00" + bytes([0x80, 0x80, 0x80, 0x80, 0x10]))  # 4 GiB frame
    closed = [collector.stderr.readline(), collector.stderr.readline()]
    after = rss_kb(collector.pid)
    assert any("not an rtrace stream" in line for line in closed), closed
    assert any("4294967296" in line and "limit" in line for line in closed), closed
    assert after - before < 16 * 1024, (before, after)
    good.stdin.write("go\n")
    good.stdin.flush()
    good_out, _ = good.communicate(timeout=60)
    collector.send_signal(signal.SIGTERM)
    _, stderr = collector.communicate(timeout=60)
    garbage.close()
    huge.close()
    assert "clean" in stderr, stderr
    sent = int(good_out.split()[1])
    events = slices(tmp_path / "out.json")
    assert len(events) == sent


def test_late_and_restarted_collector_never_harm_the_program(tmp_path):
    sock = f"unix://{tmp_path}/c.sock"
    program = start_streamer(tmp_path, sock, "patient", 6.0, wait=True)
    first = start_collector(tmp_path, sock, "first.json")
    program.stdin.write("go\n")
    program.stdin.flush()
    # Stop the collector while the program streams, then start another
    # once the program has spilled events (it retries the collector every
    # few tenths of a second, so without the wait it may find the next
    # collector before it spilled any).
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        spills = list(tmp_path.glob("rtrace-patient-*.spill.rtrace"))
        if spills and any(True for _ in rtrace.read(spills[0])):
            break
        time.sleep(0.05)
    second = start_collector(tmp_path, sock, "second.json")
    out, err = program.communicate(timeout=120)
    assert program.returncode == 0, err
    assert "spilling to" in err, err
    spill = next(tmp_path.glob("rtrace-patient-*.spill.rtrace"))
    assert str(spill.name) in err
    spilled = sum(1 for _ in rtrace.read(spill))
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=60)
    assert spilled > 0
    written = int(out.split()[1])
    # Ends the collector wrote for calls a stream left open are not events
    # the program recorded: the calls' real returns went on to the spill file
    # or the next collector.
    received = sum(1 for name in ("first.json", "second.json")
                   for e in slices(tmp_path / name) if not ended_by_stream(e))
    assert received + spilled <= written


# -- faults with exact bookkeeping (see faults.py) ----------------------------


def per_thread(events) -> dict[int, list]:
    threads = collections.defaultdict(list)
    for e in events:
        threads[e.tid].append(e)
    return threads


@pytest.mark.parametrize("sink", ["collector", "file"])
def test_a_process_killed_mid_batch_keeps_every_event_it_wrote(tmp_path, sink):
    """SIGKILL while four threads stream (~10^5 calls/s): the stream
    (the collector's timeline, or the stream file) keeps every event the
    process had written — at least as many as it reported just before the
    kill — up to its last whole frame, and says it was truncated."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = Collector(tmp_path, sock, "out.pftrace") if sink == "collector" else None
    stream_file = tmp_path / "victim.rtrace"
    victim = start_program(tmp_path, "victim", threads=4, seconds=120, burst=100, pause=0.0005,
                           progress=True, record={} if collector else {"output": str(stream_file)},
                           env={"RTRACE_COLLECTOR": sock} if collector else {})
    while not victim.progress or victim.progress[-1][1] < 300_000:
        victim.read_progress_until(1.0)
        assert victim.proc.poll() is None, victim.proc.stderr.read()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(timeout=60)
    _, reported, lost = victim.progress[-1]
    if collector:
        rows = [r for r in report_rows(collector.finish()) if r["pid"] == victim.pid]
        assert [r["end"] for r in rows] == ["truncated"], rows
        reader = rtrace.read(collector.output)
    else:
        reader = rtrace.read(stream_file)
    events = [e for e in reader if e.pid == victim.pid]
    if not collector:
        assert reader.truncated
    assert lost == 0
    assert len(events) >= reported, (len(events), reported)
    if collector:
        assert rows[0]["events"] == len(events)
    # Whole frames only: each thread's calls and returns alternate from its
    # first call, in time order (a torn frame would leave garbage or a hole).
    for tid, evs in per_thread(events).items():
        kinds = [e.kind for e in evs]
        assert kinds[0::2] == ["call"] * len(kinds[0::2]), tid
        assert kinds[1::2] == ["return"] * len(kinds[1::2]), tid
        assert all(a.ts_ns <= b.ts_ns for a, b in zip(evs, evs[1:])), tid


def bursts_seen(events) -> dict[int, set[int]]:
    """Per thread, the numbers of the bursts whose counter was delivered."""
    seen = collections.defaultdict(set)
    for e in events:
        if e.kind == "counter":
            seen[e.tid].add(int(e.value))
    return seen


def packet_start_after(data: bytes, offset: int) -> int:
    """Where the first packet at or after ``offset`` of a Perfetto trace
    starts (each is the tag 0x0a and a varint length)."""
    at = 0
    while at < offset:
        assert data[at] == 0x0A, at
        at, length, shift = at + 1, 0, 0
        while True:
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        at += length
    return at


def test_collector_killed_and_restarted_keeps_a_loadable_file_and_streams_carry_on(
        tmp_path, perfetto_ui):  # noqa: F811
    """The collector is SIGKILLed while three programs stream, and started
    again on the same socket with a new file. The first file loads in
    rtrace.read and Perfetto UI (and, cut mid-packet, reads up to the cut:
    Perfetto UI's side of that is in the full-disk test); the programs never
    notice beyond one line on stderr, spill, and reconnect; and what the
    killed collector had not yet written is the only loss — one stretch of
    each thread's bursts, right at the kill."""
    sock = f"unix://{tmp_path}/c.sock"
    first = Collector(tmp_path, sock, "first.pftrace")
    programs = [start_program(tmp_path, f"s{i}", threads=2, seconds=6, burst=50, pause=0.005,
                              marks=True, env={"RTRACE_COLLECTOR": sock}) for i in range(3)]
    time.sleep(2.5)
    kill_ns = time.monotonic_ns()
    first.kill()
    second = Collector(tmp_path, sock, "second.pftrace")
    restart_ns = time.monotonic_ns()
    results = [p.result() for p in programs]
    report = second.finish()

    first_reader = rtrace.read(first.output)
    kept = list(first_reader)
    assert kept and max(e.ts_ns for e in kept) < kill_ns
    # Whole packets to the end, but no stream ended: the file reads as cut
    # short, and says of no process that it ended.
    assert first_reader.truncated
    assert {p["truncated"] for p in first_reader.processes()} == {None}
    cut = tmp_path / "cut.pftrace"
    data = first.output.read_bytes()
    cut.write_bytes(data[: packet_start_after(data, len(data) * 2 // 3) + 2])  # mid-packet
    cut_reader = rtrace.read(cut)
    cut_events = list(cut_reader)
    assert cut_reader.truncated and 0 < len(cut_events) < len(kept)
    assert [(e.ts_ns, e.tid) for e in cut_events] == [
        (e.ts_ns, e.tid) for e in kept[:len(cut_events)]]
    with perfetto_ui.load(first.output) as trace:
        trace.assert_no_errors()
        calls = sum(1 for e in kept if e.kind == "call")
        assert trace.scalar("select count(*) from slice where name = 'work'") == calls
        # The programs' counters (not the collector's clock estimates).
        assert trace.scalar(
            "select count(*) from counter c join counter_track t on c.track_id = t.id "
            "where t.name not like 'rtrace clock%'") == sum(
            1 for e in kept if e.kind == "counter")

    second_reader = rtrace.read(second.output)
    later = list(second_reader)
    assert not second_reader.truncated
    assert {p["truncated"] for p in second_reader.processes()} == {False}
    for r in results:
        pid = r["pid"]
        warnings = [line for line in r["stderr"].splitlines() if line.startswith("rtrace:")]
        assert len(warnings) == 1 and "unreachable; spilling to" in warnings[0], r["stderr"]
        spilled = list(rtrace.read(r["path"]))
        before = [e for e in kept if e.pid == pid]
        after = [e for e in later if e.pid == pid] + spilled
        assert r["lost"] == 0 and r["events"] == r["recorded"], r
        missing = r["events"] - len(before) - len(after)
        assert missing >= 0, (missing, r)
        # Nothing twice, nothing out of place: per thread, the first file
        # holds bursts 0..a, the rest bursts b..end, and a..b is one gap
        # around the kill (what the collector held in memory).
        old, new = bursts_seen(before), bursts_seen(after)
        for tid in new:
            a = max(old.get(tid, {-1}))
            b = min(new[tid])
            assert old.get(tid, set()) == set(range(a + 1)), (pid, tid)
            assert new[tid] == set(range(b, max(new[tid]) + 1)), (pid, tid)
            assert b > a, (pid, tid, a, b)
            gap = [e.ts_ns for e in after if e.tid == tid and e.kind == "counter" and e.value == b]
            assert gap[0] < restart_ns + 2_000_000_000, "spilled or reconnected at once"
        assert [row["end"] for row in report_rows(report) if row["pid"] == pid][-1] == "clean"
    lagged = kill_ns - max(e.ts_ns for e in kept)
    assert lagged < 5_000_000_000, f"the first file lagged {lagged / 1e9:.1f} s behind the kill"


def test_a_full_disk_under_a_stream_file_keeps_every_whole_frame_and_counts_the_rest(tmp_path):
    """The stream file's disk fills up (a 1 MiB tmpfs): the program goes on
    unharmed and says why once; the file reads back up to its last whole
    frame, holding exactly the events the process counts as written, and
    every other event is counted lost."""
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    wrapper = on_a_small_disk(disk, "1m", kept)
    program = start_program(tmp_path, "full", threads=2, seconds=3, burst=50, pause=0.001,
                            record={"output": str(disk / "full.rtrace")}, wrapper=wrapper)
    r = program.result()
    message = f"writing to {disk / 'full.rtrace'} failed: No space left on device"
    assert message in r["error"], r
    assert [line for line in r["stderr"].splitlines() if line.startswith("rtrace:")] == [
        f"rtrace: {r['error']}"], r["stderr"]
    assert r["lost"] > 0 and r["events"] + r["lost"] == r["recorded"], r
    reader = rtrace.read(kept / "full.rtrace")
    events = list(reader)
    assert reader.truncated
    assert len(events) == r["events"], (len(events), r)


def test_a_full_disk_under_the_collectors_output_is_a_clear_error_with_a_readable_prefix(
        tmp_path, perfetto_ui):  # noqa: F811
    """The timeline's disk fills up (a 1 MiB tmpfs): the collector stops at
    once with an error naming the file and the cause; the file reads back
    up to its last whole packet and loads in Perfetto UI; the programs
    spill the rest and finish unharmed."""
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    wrapper = on_a_small_disk(disk, "1m", kept)
    sock = f"unix://{tmp_path}/c.sock"
    collector = subprocess.Popen([*wrapper, COLLECT, "--listen", sock, "-o",
                                  str(disk / "t.pftrace")], cwd=tmp_path, text=True,
                                 stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert "listening on" in collector.stderr.readline()
        programs = [start_program(tmp_path, f"s{i}", threads=2, seconds=4, burst=50,
                                  pause=0.001, env={"RTRACE_COLLECTOR": sock}) for i in range(2)]
        results = [p.result() for p in programs]
        _, stderr = collector.communicate(timeout=60)
    finally:
        if collector.poll() is None:
            os.killpg(collector.pid, signal.SIGKILL)
    assert collector.returncode == 1, stderr
    assert stderr.strip() == (f"rtrace-collect: error: writing {disk / 't.pftrace'}: "
                              "No space left on device (os error 28)"), stderr
    reader = rtrace.read(kept / "t.pftrace")
    events = list(reader)
    # The disk ends the file at a page boundary: inside a packet (then the
    # reader says truncated), or, by chance, between two.
    assert events
    with perfetto_ui.load(kept / "t.pftrace") as trace:
        trace.assert_no_errors()
        assert trace.scalar("select count(*) from slice where name = 'work'") == sum(
            1 for e in events if e.kind == "call")
    for r in results:
        assert r["lost"] == 0 and r["events"] == r["recorded"], r
        assert "unreachable; spilling to" in r["stderr"], r["stderr"]
        spilled = sum(1 for _ in rtrace.read(r["path"]))
        written = sum(1 for e in events if e.pid == r["pid"])
        assert 0 < spilled and written + spilled <= r["events"], (written, spilled, r)


def test_dev_full_as_the_timeline_is_a_clear_error(tmp_path):
    sock = f"unix://{tmp_path}/c.sock"
    collector = Collector(tmp_path, sock, "/dev/full").proc
    program = start_program(tmp_path, "p", threads=1, seconds=0.5,
                            env={"RTRACE_COLLECTOR": sock})
    program.result()
    _, stderr = collector.communicate(timeout=60)
    assert collector.returncode == 1
    assert stderr.strip() == ("rtrace-collect: error: writing /dev/full: "
                              "No space left on device (os error 28)"), stderr


# -- the merge thread's priority ----------------------------------------------


def thread_nice_values(pid: int) -> dict[str, list[int]]:
    """Nice values of the threads of `pid`, by thread name (/proc stat field 19)."""
    values: dict[str, list[int]] = collections.defaultdict(list)
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        values[name].append(int(stat.rsplit(")", 1)[1].split()[16]))
    return dict(values)


def wait_for_nice(pid: int, wanted: dict[str, int], what: str) -> dict[str, list[int]]:
    """Waits (up to 10 s) until each named thread of `pid` has its value."""
    deadline = time.monotonic() + 10
    while True:
        values = thread_nice_values(pid)
        if all(values.get(name) == [nice] for name, nice in wanted.items()):
            return values
        assert time.monotonic() < deadline, f"{what}: {values}"
        time.sleep(0.02)


def start_calm_program(tmp_path: Path, collector_pid: int, session: str, reader: str,
                       seconds: float, env: dict):
    """Starts a program that keeps up (it sleeps between its events) and
    checks that its reader and every other thread of the collector stay at
    nice 0."""
    program = start_program(tmp_path, session, threads=1, seconds=seconds, burst=10,
                            pause=0.001, env=env)
    wait_for_nice(collector_pid, {reader: 0}, f"{session}'s reader")
    time.sleep(0.3)
    values = thread_nice_values(collector_pid)
    assert all(n == [0] * len(n) for n in values.values()), values
    return program


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority needs CAP_SYS_NICE (root here)")
def test_the_threads_that_carry_events_are_raised_only_while_they_fall_behind(tmp_path):
    """The merge (the main thread), each stream's reader and the thread that
    writes the Perfetto file keep their own priority while they keep up, take
    nice -10 once a stream's socket stays full for 5 ms, and give it back
    when no stream is open. Raised for good, a thread woken on a traced
    program's core took it at once; never raised, eight traced processes on
    two cores starved them and the recorders dropped events (README, "The
    collector takes priority only when it falls behind")."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = start_collector(tmp_path, sock, "out.pftrace")
    merge = Path(f"/proc/{collector.pid}/comm").read_text().strip()
    env = {"RTRACE_COLLECTOR": sock}
    start_calm_program(tmp_path, collector.pid, "calm", "stream #0", 1.5, env).result()
    # Falling behind: the collector is stopped while a program traces flat
    # out, and finds the socket full (and the recorder's queue behind it).
    busy = start_program(tmp_path, "busy", threads=1, seconds=4, go=True, env=env)
    collector.send_signal(signal.SIGSTOP)
    try:
        busy.go()
        time.sleep(0.5)
    finally:
        collector.send_signal(signal.SIGCONT)
    values = wait_for_nice(collector.pid, {merge: -10, "stream #1": -10, "output": -10},
                           "raised while behind")
    for name in (merge, "stream #1", "output"):
        values.pop(name)
    assert values and all(n == [0] * len(n) for n in values.values()), values  # accept, signals
    busy.result()
    # No stream open: the merge gives its priority back.
    wait_for_nice(collector.pid, {merge: 0}, "given back with no stream open")
    collector.send_signal(signal.SIGTERM)
    _, stderr = collector.communicate(timeout=60)
    assert "could not raise" not in stderr, stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("taskset"),
                    reason="raising a priority needs CAP_SYS_NICE (root here); taskset")
def test_more_streams_than_cpus_raise_the_threads_that_carry_events_at_once(tmp_path):
    """Streams that keep up, but more of them than the collector has CPUs:
    their programs alone may saturate the machine, so the threads are raised
    without waiting for a backlog, and given back when none is open (raised
    on a backlog alone, 1 of 42 runs of 8 processes tracing flat out on 2
    cores lost events)."""
    sock = f"unix://{tmp_path}/c.sock"
    proc = subprocess.Popen(["taskset", "-c", "0", COLLECT, "--listen", sock, "-o", "out.pftrace",
                             "--drain", "0.5"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert "listening on" in proc.stderr.readline()
    merge = Path(f"/proc/{proc.pid}/comm").read_text().strip()
    env = {"RTRACE_COLLECTOR": sock}
    one = start_calm_program(tmp_path, proc.pid, "one", "stream #0", 3, env)
    two = start_program(tmp_path, "two", threads=1, seconds=1, burst=10, pause=0.001, env=env)
    wait_for_nice(proc.pid, {merge: -10, "stream #0": -10, "stream #1": -10},
                  "two streams on one CPU")
    for program in (one, two):
        program.result()
    wait_for_nice(proc.pid, {merge: 0}, "given back with no stream open")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "could not raise" not in stderr, stderr


# The cargo-built binary: nobody cannot run this venv's interpreter (under /root).
COLLECT_BINARY = Path(__file__).resolve().parents[2] / "target" / "release" / "rtrace-collect"


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists()
                    or not COLLECT_BINARY.exists(),
                    reason="runs target/release/rtrace-collect as nobody with setpriv, from root")
def test_a_collector_without_the_right_to_raise_its_priority_says_so_and_works():
    work = Path(tempfile.mkdtemp(prefix="rtrace-nobody-"))
    try:
        work.chmod(0o777)
        sock = f"unix://{work}/c.sock"
        collector = subprocess.Popen(
            ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", str(COLLECT_BINARY), "--listen", sock,
             "-o", str(work / "out.json")],
            cwd=work, stderr=subprocess.PIPE, text=True)
        assert "listening on" in collector.stderr.readline()
        note = collector.stderr.readline()
        assert "could not raise the priority of the threads that carry events" in note, note
        assert "CAP_SYS_NICE" in note and "--nice 0" in note, note
        streamer = start_streamer(work, sock, "s", 0.3)
        out, _ = streamer.communicate(timeout=60)
        collector.send_signal(signal.SIGTERM)
        _, stderr = collector.communicate(timeout=60)
        assert collector.returncode == 0, stderr
        assert len(slices(work / "out.json")) == int(out.split()[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
