"""The `rtrace` command line, run as a user would (the installed script)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rtrace

from conftest import RTRACE, check_nesting, pid_namespace_command, read_events, rtrace_cli


def test_run_records_a_script_with_its_arguments_and_exit_code(tmp_path):
    (tmp_path / "app.py").write_text(
        "import sys\n"
        "def step(n): return n\n"
        "for i in range(10): step(i)\n"
        "print('argv', sys.argv[1:])\n"
        "sys.exit(3)\n"
    )
    proc = rtrace_cli("run", "--session", "app", "-o", "app.pftrace", "--", "app.py", "x", "--y",
                      cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "argv ['x', '--y']" in proc.stdout
    assert "app.pftrace" in proc.stderr and "clean" in proc.stderr
    events, reader = read_events(tmp_path / "app.pftrace")
    assert reader.session == "app" and reader.merged
    assert sum(1 for e in events if e.kind == "call" and e.name == "step") == 10
    check_nesting(events)


def test_runs_table_and_dump_tell_two_containers_pid_1_apart(tmp_path):
    """Under one `rtrace run`, two processes that are each pid 1 of a pid
    namespace of their own (two containers): the end-of-run table names
    each one's namespace beside its host, which it leaves out when every
    process is of this host's own pid space; `rtrace dump` prints the
    second one's pid with its process number."""
    contained = " ".join(pid_namespace_command())
    (tmp_path / "app.py").write_text(
        "import subprocess, sys\n"
        "def f(): pass\n"
        "f()\n"
        "subprocess.run([sys.executable, '-c', 'def g(): pass\\ng()'])\n")
    proc = rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    header = next(line for line in proc.stderr.splitlines() if line.startswith("session"))
    assert header.split()[:4] == ["session", "pid", "ppid", "events"], proc.stderr

    (tmp_path / "boxes.sh").write_text(
        f"{contained} {sys.executable} app.py & {contained} {sys.executable} app.py & wait\n")
    proc = rtrace_cli("run", "--session", "app", "-o", "c.pftrace", "--", "sh", "boxes.sh",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    header = next(line for line in lines if line.startswith("session"))
    assert header.split()[:5] == ["session", "pid", "ppid", "host", "events"], proc.stderr
    namespaces = {int(n) for n in re.findall(r"^app +1 +0 +\S+ \(pidns (\d+)\)", proc.stderr, re.M)}
    mine = int(os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]"))
    assert len(namespaces) == 2 and mine not in namespaces, proc.stderr
    # Their children are in the same namespaces, children of pid 1.
    children = re.findall(r"^app +\d+ +1 +\S+ \(pidns (\d+)\)", proc.stderr, re.M)
    assert {int(n) for n in children} == namespaces, proc.stderr

    # rtrace dump: the first process met with pid 1 prints as 1, the other
    # as 1#N, N its number in processes() (`process` in --json).
    reader = rtrace.read(tmp_path / "c.pftrace")
    assert sum(1 for _ in reader) > 0
    ones = [p["process"] for p in reader.processes() if p["pid"] == 1]
    dump = rtrace_cli("dump", "c.pftrace", cwd=tmp_path)
    assert dump.returncode == 0, dump.stderr
    shown = {line.split()[1] for line in dump.stdout.splitlines() if " call      f  " in line}
    assert len(ones) == 2 and len(shown) == 2 and "1" in shown, (ones, shown)
    (other,) = shown - {"1"}
    assert other in {f"1#{p}" for p in ones}, (ones, shown)


def test_run_module_and_dump_json(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("def hello(): return 1\nhello()\n")
    proc = rtrace_cli("run", "-o", "m.pftrace", "--", "-m", "mypkg", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dump = rtrace_cli("dump", "m.pftrace", "--json", cwd=tmp_path)
    records = [json.loads(line) for line in dump.stdout.splitlines()]
    assert any(r["name"] == "hello" and r["kind"] == "call" for r in records)
    assert {r["process"] for r in records} == {0}, "one process"
    limited = rtrace_cli("dump", "m.pftrace", "--limit", "3", cwd=tmp_path)
    assert len(limited.stdout.splitlines()) == 3


def test_wrong_usage_says_what_to_do(tmp_path):
    proc = rtrace_cli(cwd=tmp_path)
    assert proc.returncode == 2 and "give a command: run, view, export, dump or stats" in proc.stderr
    proc = rtrace_cli("run", cwd=tmp_path)
    assert proc.returncode == 2 and "give a command after --" in proc.stderr
    proc = rtrace_cli("run", "-o", "x.rtrace", "--", "app.py", cwd=tmp_path)
    assert proc.returncode == 2 and ".pftrace" in proc.stderr
    proc = rtrace_cli("run", "--", "missing.py", cwd=tmp_path)
    assert proc.returncode == 2 and "no such script" in proc.stderr
    proc = rtrace_cli("run", "--", "no-such-program", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot run 'no-such-program': not found on PATH" in proc.stderr
    assert not list(tmp_path.glob("*.pftrace")), "the collector started (and made its file)"
    # A program that runs but records nothing (not Python) is told apart
    # from a recording.
    proc = rtrace_cli("run", "-o", "none.pftrace", "--", "true", cwd=tmp_path)
    assert proc.returncode == 0 and "no process streamed to the collector" in proc.stderr
    assert "view it" not in proc.stderr
    proc = rtrace_cli("dump", "missing.rtrace", cwd=tmp_path)
    assert proc.returncode == 1 and "No such file or directory: 'missing.rtrace'" in proc.stderr
    proc = rtrace_cli("dump", "missing.rtrace", "--limit", "-1", cwd=tmp_path)
    assert proc.returncode == 2 and "--limit: takes a count (0: all), not -1" in proc.stderr


def test_export_converts_a_timeline_and_merges_streams_to_chrome_json(tmp_path):
    (tmp_path / "app.py").write_text("def f(): pass\nf()\n")
    assert rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", cwd=tmp_path).returncode == 0
    proc = rtrace_cli("export", "t.pftrace", "-o", "t.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "t.json").read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    assert any(e.get("name") == "f" and e.get("ph") == "B" for e in events)
    # --format chooses the format whatever the output's name: a timeline
    # rewritten, and stream files merged.
    proc = rtrace_cli("export", "t.pftrace", "-o", "t.txt", "--format", "chrome", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "t.txt").read_text() == (tmp_path / "t.json").read_text()
    subprocess.run([sys.executable, "-c", "import rtrace\n"
                    "with rtrace.record(session='s', output='s.rtrace'):\n    sum(range(3))"],
                   cwd=tmp_path, check=True, timeout=60)
    proc = rtrace_cli("export", "s.rtrace", "-o", "s.trace", "--format", "chrome", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "s.trace").read_text())
    proc = rtrace_cli("export", "s.rtrace", "-o", "s.json", "--format", "perfetto", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "s.json", "rb") as timeline:
        assert timeline.read(1) == b"\x0a"  # a Perfetto packet, not JSON


def _view_and_fetch(path: Path, cwd: Path) -> tuple[bytes, str]:
    """Runs `rtrace view PATH --no-browser --port 0`, fetches what it
    serves as Perfetto UI would, and returns those bytes and its stderr."""
    import re
    import urllib.request

    proc = subprocess.Popen([RTRACE, "view", str(path), "--no-browser", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        lines = []
        while not lines or "rtrace: open " not in lines[-1]:
            line = proc.stderr.readline()
            assert line, f"rtrace view ended early: {lines}"
            lines.append(line)
        served = re.search(r"at (http://127\.0\.0\.1:(\d+)/\S+)", lines[-2])
        assert served and served.group(2) != "0", lines  # the port chosen, not 0
        assert f"https://ui.perfetto.dev/#!/?url={served.group(1)}" in lines[-1]
        with urllib.request.urlopen(served.group(1), timeout=10) as reply:
            assert reply.headers["Access-Control-Allow-Origin"] == "https://ui.perfetto.dev"
            data = reply.read()
        assert proc.wait(timeout=30) == 0
        return data, "".join(lines) + proc.stderr.read()
    finally:
        proc.kill()


def test_view_serves_the_file_to_perfetto_ui_and_prints_the_url(tmp_path):
    (tmp_path / "app.py").write_text("def f(): pass\nf()\n")
    assert rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", cwd=tmp_path).returncode == 0
    assert rtrace_cli("export", "t.pftrace", "-o", "t.json", cwd=tmp_path).returncode == 0
    for name in ("t.pftrace", "t.json"):  # Perfetto UI reads Chrome JSON too
        data, _ = _view_and_fetch(tmp_path / name, tmp_path)
        assert data == (tmp_path / name).read_bytes()
    # A stream file is merged first: Perfetto UI reads only timelines.
    subprocess.run([sys.executable, "-c", "import rtrace\ndef f(): pass\n"
                    "with rtrace.record(output='s.rtrace'): f()\n"], cwd=tmp_path, check=True)
    data, stderr = _view_and_fetch(tmp_path / "s.rtrace", tmp_path)
    assert "s.rtrace is a stream file; merging it" in stderr
    (tmp_path / "served.pftrace").write_bytes(data)
    events, reader = read_events(tmp_path / "served.pftrace")
    assert reader.merged and any(e.name == "f" for e in events)
    # What Perfetto UI could not open is refused, saying why.
    trace = tmp_path / "e.pftrace"
    trace.write_bytes(b"")
    empty = rtrace_cli("view", str(trace), "--no-browser", cwd=tmp_path)
    assert empty.returncode == 1 and "e.pftrace is empty: nothing has been written" in empty.stderr
    trace.write_bytes(b"garbage, not a trace")
    garbage = rtrace_cli("view", str(trace), "--no-browser", cwd=tmp_path)
    assert garbage.returncode == 1 and "is not an rtrace stream" in garbage.stderr
    folder = rtrace_cli("view", str(tmp_path), "--no-browser", cwd=tmp_path)
    assert folder.returncode == 1 and "is a directory" in folder.stderr
    port = rtrace_cli("view", "t.pftrace", "--port", "70000", cwd=tmp_path)
    assert port.returncode == 2 and "70000 is out of range" in port.stderr


# Runs one of rtrace's own collector hosts in a fresh interpreter, asking
# glibc (mallinfo2) whether a large block is mapped apart (glibc's default:
# above its threshold, 128 KiB at first, raised to the largest mapped block
# freed) or taken from the heap (rtrace-collect's tuning: a fixed 32 MiB
# threshold; see collector/src/heap.rs): 1 MiB before, 24 MiB after.
TUNED_BY = """
import ctypes, sys
libc = ctypes.CDLL(None)
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def mapped_apart(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after - before
untuned = mapped_apart(1 << 20)
host = sys.argv[1]
if host == "rtrace-collect":
    from rtrace import _native
    _native.collect_main(["rtrace-collect", "merge", "--help"])
else:
    from rtrace import cli
    cli.main(sys.argv[1:])
print("mapped apart:", untuned, mapped_apart(24 << 20))
"""


@pytest.mark.skipif(sys.platform != "linux" or "glibc" not in " ".join(platform.libc_ver()),
                    reason="tunes glibc's malloc")
def test_the_processes_that_collect_tune_their_heap_as_rtrace_collect_does(tmp_path):
    (tmp_path / "app.py").write_text("def f(): pass\nf()\n")
    (tmp_path / "probe.py").write_text(TUNED_BY)
    hosts = {
        "rtrace-collect": ["rtrace-collect"],
        "rtrace run": ["run", "-o", "t.pftrace", "--", "app.py"],
        "rtrace export": ["export", "t.pftrace", "-o", "t.json"],
    }
    for host, args in hosts.items():
        proc = subprocess.run([sys.executable, "probe.py", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (host, proc.stderr)
        # Mapped apart before (the probe works), from the heap after.
        assert proc.stdout.splitlines()[-1] == "mapped apart: 1 0", (host, proc.stdout)
    # An embedded collector leaves its program's malloc as it is.
    embedded = TUNED_BY.replace('host = sys.argv[1]', 'host = "embedded"').replace(
        "    from rtrace import cli\n    cli.main(sys.argv[1:])",
        "    from rtrace import _native\n"
        "    c = _native.Collector([f'unix://{sys.argv[1]}/c.sock'], sys.argv[1] + '/e.pftrace')\n"
        "    c.start(); c.stop()")
    (tmp_path / "embedded.py").write_text(embedded)
    proc = subprocess.run([sys.executable, "embedded.py", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "mapped apart: 1 1", proc.stdout
