"""The collector and the recorders around it when things go wrong: a
collector stopped mid-stream, processes killed, hostile input, a collector
that starts late or restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

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
    # Stop the collector while the program streams, then start another.
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
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
    received = len(slices(tmp_path / "first.json")) + len(slices(tmp_path / "second.json"))
    assert received + spilled <= written
