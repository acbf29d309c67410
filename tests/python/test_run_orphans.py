"""`rtrace run` waits for the processes its program leaves running (a child
it never waited for, a daemon that double-forked): they are reparented to
it (a child subreaper, Linux), and their streams end in the timeline before
the collector stops. Ctrl-C stops the wait; SIGTERM is passed on to them;
--no-wait keeps them out."""

from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RTRACE, read_events, rtrace_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="child subreapers are Linux's")

LEFTOVER = """
import os, sys, time

def leftover_work(i):
    return i * 2

def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False

def run(program, seconds):
    with open("leftover.pid.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace("leftover.pid.tmp", "leftover.pid")
    # Until rtrace has reaped the program: a collector that does not wait
    # for this process stops now, at most --drain seconds later.
    while not gone(program):
        time.sleep(0.01)
    time.sleep(seconds)
    for i in range(3):
        leftover_work(i)

if __name__ == "__main__":
    run(int(sys.argv[1]), float(sys.argv[2]))
"""

APP = """
import os, subprocess, sys, time

def program_work():
    return 42

def leave_a_child(seconds):
    log = open("leftover.log", "w")
    # Never waited for; its output not on rtrace's pipes, which the test reads to the end.
    subprocess.Popen([sys.executable, "leftover.py", str(os.getpid()), str(seconds)],
                     stdout=log, stderr=log)

def leave_a_daemon(seconds):
    program = os.getpid()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            log = os.open("leftover.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 1)
            os.dup2(log, 2)
            import leftover
            leftover.run(program, seconds)
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)

def leave_a_late_starter():
    # Records only once reparented (its own record(), not at start-up).
    env = dict(os.environ)
    del env["RTRACE_AUTOSTART"]
    log = open("leftover.log", "w")
    subprocess.Popen([sys.executable, "late.py", str(os.getpid())], env=env, stdout=log,
                     stderr=log)

def leave_a_zombie():
    # A grandchild that exits while the program still runs: orphaned, then a
    # zombie of rtrace's (or reaped by whoever else reaps orphans).
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        grandchild = os.fork()
        if grandchild == 0:
            os._exit(0)
        os.write(w, str(grandchild).encode())
        os._exit(0)
    os.waitpid(middle, 0)
    grandchild = int(os.read(r, 32))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{grandchild}/stat") as f:
                state, parent = f.read().rsplit(")", 1)[1].split()[:2]
        except FileNotFoundError:
            print("grandchild: reaped", flush=True)
            return
        if state == "Z":
            whose = "rtrace run" if int(parent) == os.getppid() else parent
            print(f"grandchild: a zombie of {whose}", flush=True)
            return
        time.sleep(0.01)

if __name__ == "__main__":
    program_work()
    how, seconds, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    if how == "child":
        leave_a_child(seconds)
    elif how == "late":
        leave_a_late_starter()
    elif how == "started-child":  # exits once the child runs, its stream open
        leave_a_child(seconds)
        while not os.path.exists("leftover.pid"):
            time.sleep(0.01)
    elif how == "daemon":
        leave_a_daemon(seconds)
    else:
        leave_a_zombie()
    sys.exit(code)
"""

LATE = """
import os, sys, time
import rtrace

def late_work():
    return 1

program = int(sys.argv[1])
while os.getppid() == program:  # until the program has exited
    time.sleep(0.01)
with rtrace.record(session="late"):
    late_work()
print(os.getppid(), flush=True)
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "leftover.py").write_text(LEFTOVER)
    (tmp_path / "late.py").write_text(LATE)
    yield tmp_path
    pid = _leftover_pid(tmp_path, timeout=0)
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGKILL)  # the test's own leftover, by its pid


def _leftover_pid(tmp_path: Path, timeout: float = 60) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int((tmp_path / "leftover.pid").read_text())
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _calls(path: Path) -> tuple[dict[int, collections.Counter], set[int]]:
    """The calls per pid, and the pids of the processes in the timeline."""
    events, reader = read_events(path)
    calls: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for ev in events:
        if ev.kind == "call":
            calls[ev.pid][ev.name] += 1
    return calls, {p["pid"] for p in reader.processes()}


def _stream_end(stderr: str, pid: int) -> str | None:
    """How rtrace's table says the stream of ``pid`` ended (clean, truncated...)."""
    for line in stderr.splitlines():
        columns = line.split()
        if len(columns) >= 8 and columns[1] == str(pid):
            return columns[7]
    return None


class Background:
    """`rtrace run` of app.py leaving a child that sleeps long, started
    apart, its stderr read as it comes."""

    def __init__(self, tmp_path: Path, *options: str, how: str = "child"):
        self.proc = subprocess.Popen(
            [RTRACE, "run", *options, "-o", "t.pftrace", "--", "app.py", how, "600", "0"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr: list[str] = []

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._lines.put(line)

    def wait_until_it_waits(self, timeout: float = 60) -> str:
        """The line that says rtrace waits for the leftover."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"rtrace run never said it waits: {self.stderr}") from None
            self.stderr.append(line)
            if "waiting for" in line:
                return line

    def finish(self, timeout: float = 60) -> str:
        """Waits (generously) for `rtrace run` to exit; all it wrote on stderr."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        self._reader.join(timeout=timeout)
        while not self._lines.empty():
            self.stderr.append(self._lines.get())
        return "".join(self.stderr)


@pytest.mark.parametrize("how", ["child", "daemon"])
def test_rtrace_run_waits_for_what_the_program_left_running(app, how):
    proc = rtrace_cli("run", "--drain", "0.2", "-o", "t.pftrace", "--", "app.py", how, "0.5", "3",
                      cwd=app)
    assert proc.returncode == 3, proc.stderr  # the program's status
    pid = _leftover_pid(app)
    assert f"rtrace: waiting for 1 process app.py left running (pid {pid}); Ctrl-C stops waiting" \
        in proc.stderr, proc.stderr
    assert proc.stderr.count("waiting for") == 1, proc.stderr
    calls, pids = _calls(app / "t.pftrace")
    assert pid in pids, (pid, pids, proc.stderr)
    assert calls[pid]["leftover_work"] == 3, (calls, proc.stderr)
    assert _stream_end(proc.stderr, pid) == "clean", proc.stderr
    assert sum(c["program_work"] for c in calls.values()) == 1


def test_no_wait_ends_the_timeline_without_them(app):
    proc = rtrace_cli("run", "--no-wait", "--drain", "0.2", "-o", "t.pftrace", "--", "app.py",
                      "child", "0.5", "0", cwd=app)
    assert proc.returncode == 0, proc.stderr
    assert "waiting for" not in proc.stderr, proc.stderr
    pid = _leftover_pid(app)
    calls, _ = _calls(app / "t.pftrace")
    assert calls[pid]["leftover_work"] == 0, (calls, proc.stderr)
    assert sum(c["program_work"] for c in calls.values()) == 1
    assert _wait_gone(pid), "the leftover never ended"


def test_an_orphan_that_exited_while_the_program_ran_is_reaped_not_waited_for(app):
    proc = rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", "zombie", "0", "0", cwd=app)
    assert proc.returncode == 0, proc.stderr
    # Reparented to rtrace run, which reaps it once the program has exited.
    assert proc.stdout == "grandchild: a zombie of rtrace run\n", (proc.stdout, proc.stderr)
    assert "waiting for" not in proc.stderr, proc.stderr


def test_ctrl_c_stops_waiting_and_finishes_the_timeline(app):
    run = Background(app, "--drain", "0.2")
    said = run.wait_until_it_waits()
    pid = _leftover_pid(app)
    assert said.endswith(f"(pid {pid}); Ctrl-C stops waiting\n"), said
    run.proc.send_signal(signal.SIGINT)
    stderr = run.finish()
    assert run.proc.returncode == 0, stderr
    assert f"rtrace: stopped waiting for 1 process still running (pid {pid})" in stderr, stderr
    assert "rtrace: timeline:" in stderr, stderr
    calls, _ = _calls(app / "t.pftrace")
    assert sum(c["program_work"] for c in calls.values()) == 1, (calls, stderr)
    assert calls[pid]["leftover_work"] == 0
    # Ctrl-C only stopped the wait (a terminal sends it to the leftover too).
    assert _alive(pid)


def test_sigterm_while_waiting_is_passed_on_to_them(app):
    run = Background(app, "--drain", "30")
    run.wait_until_it_waits()
    pid = _leftover_pid(app)
    run.proc.send_signal(signal.SIGTERM)
    stderr = run.finish()
    assert run.proc.returncode == 0, stderr
    assert (f"rtrace: terminated; passed SIGTERM on to 1 process app.py left running (pid {pid})"
            in stderr), stderr
    assert _wait_gone(pid), "the leftover did not get SIGTERM"
    # It ended its stream as it died of SIGTERM, within --drain.
    assert _stream_end(stderr, pid) == "clean", stderr
    _, pids = _calls(app / "t.pftrace")
    assert pid in pids, (pids, stderr)


def _has_children(pid: int) -> bool:
    tasks = Path(f"/proc/{pid}/task")
    return any((tasks / tid / "children").read_text().split() for tid in os.listdir(tasks))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_collector_finishes_does_not_cut_the_timeline_short(app, signum):
    """Once the program has exited, rtrace's collector drains the streams
    still open (here a leftover's, for --drain seconds): a Ctrl-C or
    SIGTERM then is noted, not a traceback or a half-written timeline."""
    run = Background(app, "--no-wait", "--drain", "3", how="started-child")
    pid = _leftover_pid(app)
    deadline = time.monotonic() + 60
    while _has_children(run.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the program has exited: rtrace is draining
    time.sleep(0.3)
    run.proc.send_signal(signum)
    stderr = run.finish()
    assert run.proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "rtrace: timeline:" in stderr, stderr
    # The leftover still streams (it sleeps): cut short at the drain's end.
    assert _stream_end(stderr, pid) == "truncated", stderr
    calls, pids = _calls(app / "t.pftrace")
    assert pid in pids and sum(c["program_work"] for c in calls.values()) == 1, (calls, stderr)


def test_a_process_that_records_once_its_parent_exited_names_that_parent(app):
    """Reparented to rtrace run before it started recording, a process
    still names the recording process that started it as its parent."""
    proc = rtrace_cli("run", "--drain", "0.2", "-o", "t.pftrace", "--", "app.py", "late", "0", "0",
                      cwd=app)
    assert proc.returncode == 0, proc.stderr
    _, reader = read_events(app / "t.pftrace")
    processes = {p["session"]: p for p in reader.processes()}
    assert set(processes) == {"app", "late"}, processes
    # Its parent when it recorded was rtrace run, not the program.
    os_parent = int((app / "leftover.log").read_text())
    assert os_parent != processes["app"]["pid"], (os_parent, processes)
    assert processes["late"]["ppid"] == processes["app"]["pid"], processes


def test_a_program_that_runs_rtrace_run_in_its_own_process_is_no_reaper_afterwards(tmp_path):
    """`rtrace run` makes its process the reaper of the program's orphans
    while it runs; called as `cli.main(["run", ...])` inside a program that
    goes on, it gives that back, or the program would inherit every orphan
    of its later children."""
    (tmp_path / "app.py").write_text("def f(): pass\nf()\n")
    (tmp_path / "host.py").write_text(
        "import ctypes, sys\n"
        "from rtrace import cli\n"
        "def reaper():\n"
        "    flag = ctypes.c_int(-1)\n"
        "    assert ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0) == 0\n"  # PR_GET_CHILD_SUBREAPER
        "    return flag.value\n"
        "before = reaper()\n"
        "code = cli.main(['run', '-o', 't.pftrace', '--', 'app.py'])\n"
        "print('reaper', before, reaper(), 'code', code)\n")
    proc = subprocess.run([sys.executable, "host.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "reaper 0 0 code 0" in proc.stdout, (proc.stdout, proc.stderr)
    assert any(e.name == "f" for e in read_events(tmp_path / "t.pftrace")[0])
