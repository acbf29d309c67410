"""What the fault tests share: a program that streams a known number of
events, the collector started as a user would, and the bookkeeping that
checks every event was either delivered or counted as lost.

The program (``STREAMER``) records with ``c_calls=False``; its threads
start before recording and wait at a C-level gate, call ``work()`` in
bursts, and never return (daemon threads parked on a lock), so the only
recorded events are ``work``'s calls and returns (and, with ``marks``, a
counter ``burst`` after each burst whose value numbers the thread's
bursts, so a gap shows exactly): a process records exactly
``2 * iterations (+ bursts)`` events, and ``events + lost`` must equal
that. It prints ``READY`` once recording runs, optionally ``PROGRESS``
lines (time, events written, lost), and at the end one ``RESULT {json}``
line.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import rtrace

BIN = Path(sys.executable).parent
COLLECT = str(BIN / "rtrace-collect")

# Every process started here, so that a failing test leaves none running.
_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def reap_leftovers():
    """Kills what a test started here and left running (import it into a
    test module to use it there)."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

STREAMER = r"""
import json, os, resource, sys, threading, time, _thread
import rtrace

def work():
    pass

opts = json.loads(sys.argv[1])
n_threads, seconds = opts["threads"], opts["seconds"]
burst, pause, marks = opts.get("burst", 100), opts.get("pause", 0.0), opts.get("marks", False)
gate = _thread.allocate_lock(); gate.acquire()
park = _thread.allocate_lock(); park.acquire()
done = [_thread.allocate_lock() for _ in range(n_threads)]
for lock in done:
    lock.acquire()
counts = [0] * n_threads
bursts = [0] * n_threads
gaps = [0.0] * n_threads

def loop(i):
    # Entered before recording starts: only work() is recorded from here.
    gate.acquire(); gate.release()
    n, k, gap = 0, 0, 0.0
    now = time.monotonic()
    deadline = now + seconds
    while now < deadline:
        for _ in range(burst):
            work()
        n += burst
        if marks:
            rtrace.counter("burst", k)
        k += 1
        if pause:
            time.sleep(pause)
        last, now = now, time.monotonic()
        if now - last > gap:
            gap = now - last
    counts[i], bursts[i], gaps[i] = n, k, gap
    done[i].release()
    park.acquire()  # never returns: no thread-exit events

for i in range(n_threads):
    threading.Thread(target=loop, args=(i,), daemon=True, name=f"streamer-{i}").start()
rec = rtrace.start(session=opts["session"], c_calls=False, **opts.get("record", {}))
print("READY", os.getpid(), flush=True)
if opts.get("go"):
    os.read(0, 16)  # a C call, no Python decoder: nothing recorded
wall0, cpu0 = time.monotonic(), time.process_time()
gate.release()
if opts.get("progress"):
    while not done[0].acquire(timeout=0.05):
        print("PROGRESS", time.monotonic_ns(), rec.events, rec.lost, flush=True)
    done[0].release()
for lock in done:
    lock.acquire()
wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
rtrace.stop()
print("RESULT " + json.dumps({
    "pid": os.getpid(), "iterations": sum(counts),
    "recorded": 2 * sum(counts) + (sum(bursts) if marks else 0),
    "events": rec.events, "lost": rec.lost, "error": rec.error, "path": str(rec.path),
    "wall": wall, "cpu": cpu, "max_gap": max(gaps),
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}), flush=True)
"""


@dataclass
class Streamer:
    """A running STREAMER process."""

    proc: subprocess.Popen
    session: str
    progress: list[tuple[int, int, int]] = field(default_factory=list)
    early: str = ""

    @property
    def pid(self) -> int:
        """The program's pid (the wrapper's, if it runs under one; the
        result's ``pid`` is always the program's)."""
        return self.proc.pid

    def ready(self) -> None:
        """Waits until the program records."""
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), f"{self.session}: {line!r} {self.proc.stderr.read()}"

    def go(self) -> None:
        """Lets a program started with ``go=True`` stream."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 120) -> dict:
        """Waits for the program's RESULT line."""
        out, err = self.proc.communicate(timeout=timeout)
        out = self.early + out
        assert self.proc.returncode == 0, f"{self.session} exited {self.proc.returncode}:\n{err}"
        for line in out.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                result["stderr"] = err
                return result
        raise AssertionError(f"{self.session} gave no result:\n{out}\n{err}")

    def read_progress_until(self, deadline_s: float) -> None:
        """Reads PROGRESS lines (monotonic ns, events, lost) for a while."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line.startswith("PROGRESS"):
                self.early += line
                break
            _, ts, events, lost = line.split()
            self.progress.append((int(ts), int(events), int(lost)))


def start_streamer(cwd: Path, session: str, *, threads: int = 1, seconds: float = 1.0,
                   burst: int = 100, pause: float = 0.0, marks: bool = False,
                   progress: bool = False, go: bool = False, record: dict | None = None,
                   env: dict | None = None, wrapper: list[str] | None = None,
                   wait: bool = True) -> Streamer:
    """Starts STREAMER (under ``wrapper``, a command prefix, if given) and,
    unless ``wait`` is false, waits until it records (see ``Streamer.ready``).
    With ``go``, its threads start streaming only at ``Streamer.go()``."""
    script = cwd / "streamer.py"
    if not script.exists():
        script.write_text(STREAMER)
    opts = dict(session=session, threads=threads, seconds=seconds, burst=burst, pause=pause,
                marks=marks, progress=progress, go=go, record=record or {})
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RTRACE_")}
    full_env.update(RTRACE_OUTPUT_DIR=str(cwd), **(env or {}))
    proc = subprocess.Popen([*(wrapper or []), sys.executable, str(script), json.dumps(opts)],
                            cwd=cwd, env=full_env,
                            stdin=subprocess.PIPE if go else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _started.append(proc)
    streamer = Streamer(proc, session)
    if wait:
        streamer.ready()
    return streamer


class Collector:
    """``rtrace-collect --listen`` as a user starts it."""

    def __init__(self, cwd: Path, address: str, output: str | Path, *args: str):
        env = {k: v for k, v in os.environ.items() if k != "RTRACE_TOKEN"}
        self.output = cwd / output
        self.proc = subprocess.Popen([COLLECT, "--listen", address, "-o", str(output),
                                      "--drain", "1", *args], cwd=cwd, env=env,
                                     stderr=subprocess.PIPE, text=True)
        _started.append(self.proc)
        line = self.proc.stderr.readline()
        assert "listening on" in line, line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 120, sig: int | None = None) -> str:
        """Stops it with ``sig`` (default SIGTERM; SIGINT is what Ctrl-C
        sends); returns its report (the rest of stderr)."""
        self.signal(signal.SIGTERM if sig is None else sig)
        _, stderr = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, stderr
        return stderr

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


def report_rows(report: str) -> list[dict]:
    """The collector's per-stream table, one dict per row."""
    lines = [line for line in report.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["session", "pid"])
    # Columns are left-aligned, two spaces apart; names and cells may hold
    # single spaces ("clock offset", "0 (same host, ...)").
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", lines[header])]
    rows = []
    for line in lines[header + 1:]:
        cells = {}
        for i, (name, start) in enumerate(columns):
            end = columns[i + 1][1] if i + 1 < len(columns) else len(line)
            cells[name] = line[start:end].strip()
        if not cells.get("pid", "").isdigit() or not cells.get("end"):
            break
        rows.append(dict(session=cells["session"], pid=int(cells["pid"]),
                         events=int(cells["events"]), lost=int(cells["lost"]), end=cells["end"]))
    return rows


def events_per_pid(path: Path) -> collections.Counter:
    """Events per process in a timeline or stream file, by reading it."""
    return collections.Counter(e.pid for e in rtrace.read(path))


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` value in KiB (VmRSS, VmHWM), 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def assert_accounted(result: dict, delivered: int) -> None:
    """Every event the process recorded was delivered or counted lost:
    ``delivered`` (read back from the files) equals what the process says
    it wrote, and written + lost equals what it recorded."""
    who = f"pid {result['pid']}"
    assert result["events"] + result["lost"] == result["recorded"], (who, result)
    assert delivered == result["events"], (who, delivered, result)


SMALL_DISK = (
    'size=$1 dir=$2 keep=$3; shift 3\n'
    'mount -t tmpfs -o size="$size" tmpfs "$dir" || exit 97\n'
    '"$@"; status=$?\n'
    'cp -a "$dir/." "$keep/"\n'
    'exit $status\n'
)


def skip_unless_ci(reason: str) -> None:
    """Skips the test, saying why — except on CI (``CI=true``, run as
    root), where what it lacks must be there: it fails instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: required there)", pytrace=False)
    pytest.skip(reason)


def on_a_small_disk(directory: Path, size: str, keep: Path) -> list[str]:
    """A command prefix: runs the command with a fresh tmpfs of ``size``
    mounted on ``directory`` in a mount namespace of its own (so the mount
    dies with the command and nothing else sees it), then copies what the
    command left there to ``keep``. Skips the test, saying why, where no
    such namespace can be made (root can; CI runs as root)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    prefix = ["unshare", *user, "--mount", "--propagation", "private"]
    if shutil.which("unshare") is None:
        skip_unless_ci("needs unshare(1) to mount a small tmpfs in a mount namespace")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip_unless_ci("needs root or unprivileged user namespaces to mount a small tmpfs "
                       f"in a mount namespace: {probe.stderr.strip()}")
    directory.mkdir(exist_ok=True)
    keep.mkdir(exist_ok=True)
    return [*prefix, "sh", "-c", SMALL_DISK, "sh", size, str(directory), str(keep)]
