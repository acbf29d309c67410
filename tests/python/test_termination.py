"""A recorded process asked to terminate (SIGTERM's default action) still
dies of SIGTERM, but first writes what it recorded and ends its stream,
even when its threads are blocked; a program's own SIGTERM handler is left
alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from conftest import read_events

BLOCKED = """
import sys, threading, time
import rtrace

def before_blocking():
    return 1

def worker():
    before_blocking()
    time.sleep(60)

rtrace.start(output="t.rtrace")
threading.Thread(target=worker, daemon=True).start()
before_blocking()
{handler}
print("ready", flush=True)
time.sleep(60)
"""


def start(tmp_path, handler: str = "") -> subprocess.Popen:
    (tmp_path / "blocked.py").write_text(BLOCKED.format(handler=handler))
    proc = subprocess.Popen([sys.executable, "blocked.py"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    time.sleep(0.3)  # both threads are blocked in sleep() by now
    return proc


def test_sigterm_ends_the_stream_and_still_kills(tmp_path):
    proc = start(tmp_path)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert time.monotonic() - began < 1.5
    events, reader = read_events(tmp_path / "t.rtrace")
    assert not reader.truncated
    calls = [e for e in events if e.kind == "call" and e.name == "before_blocking"]
    assert len({e.tid for e in calls}) == 2, calls


def test_a_programs_own_sigterm_handler_is_kept(tmp_path):
    handler = ("import signal, os\n"
               "signal.signal(signal.SIGTERM, lambda *a: (print('handled', flush=True), "
               "rtrace.stop(), os._exit(7)))")
    proc = start(tmp_path, handler)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    assert proc.stdout.read() == "handled\n"
    events, reader = read_events(tmp_path / "t.rtrace")
    assert not reader.truncated


BUSY = """
import sys, rtrace
sys.setswitchinterval(0.2)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
rtrace.start(output="t.rtrace")
print("ready", flush=True)
while True:
    fib(18)
"""


def test_sigterm_while_tracing_flat_out_loses_nothing_before_the_end(tmp_path):
    # The last tick, which hands idle threads' events over, waits for the
    # GIL: with a 0.2 s switch interval the busy thread keeps it that long,
    # recording more than the queue holds. A writer that waited for the
    # tick lost events just before the end; it now goes on writing.
    (tmp_path / "busy.py").write_text(BUSY)
    proc = subprocess.Popen([sys.executable, "busy.py"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    events, reader = read_events(tmp_path / "t.rtrace")
    assert not reader.truncated
    assert len(events) > 1_000_000 and reader.lost == 0, (len(events), reader.lost)
