"""The `rtrace` command line, run as a user would (the installed script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import RTRACE, check_nesting, read_events, rtrace_cli


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
    limited = rtrace_cli("dump", "m.pftrace", "--limit", "3", cwd=tmp_path)
    assert len(limited.stdout.splitlines()) == 3


def test_wrong_usage_says_what_to_do(tmp_path):
    proc = rtrace_cli("run", cwd=tmp_path)
    assert proc.returncode == 2 and "give a command after --" in proc.stderr
    proc = rtrace_cli("run", "-o", "x.rtrace", "--", "app.py", cwd=tmp_path)
    assert proc.returncode == 2 and ".pftrace" in proc.stderr
    proc = rtrace_cli("run", "--", "missing.py", cwd=tmp_path)
    assert proc.returncode == 2 and "no such script" in proc.stderr
    proc = rtrace_cli("dump", "missing.rtrace", cwd=tmp_path)
    assert proc.returncode == 1 and "No such file or directory: 'missing.rtrace'" in proc.stderr


def test_export_converts_a_timeline_and_merges_streams_to_chrome_json(tmp_path):
    (tmp_path / "app.py").write_text("def f(): pass\nf()\n")
    assert rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", cwd=tmp_path).returncode == 0
    proc = rtrace_cli("export", "t.pftrace", "-o", "t.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "t.json").read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    assert any(e.get("name") == "f" and e.get("ph") == "B" for e in events)
    proc = rtrace_cli("export", "t.pftrace", "-o", "t.txt", "--format", "chrome", cwd=tmp_path)
    assert proc.returncode == 2 and ".json" in proc.stderr


def test_view_serves_the_file_to_perfetto_ui_and_prints_the_url(tmp_path):
    import socket
    import urllib.request

    trace = tmp_path / "t.pftrace"
    trace.write_bytes(b"\x0a\x00pretend-trace")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([RTRACE, "view", str(trace), "--no-browser", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        url_line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/t.pftrace" in first, first
        assert f"https://ui.perfetto.dev/#!/?url=http://127.0.0.1:{port}/t.pftrace" in url_line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/t.pftrace", timeout=10) as reply:
            assert reply.read() == trace.read_bytes()
            assert reply.headers["Access-Control-Allow-Origin"] == "https://ui.perfetto.dev"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
