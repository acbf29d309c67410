"""Access control seen from both ends, with the real binaries and real
sockets: recorders send the token from ``RTRACE_TOKEN`` (or ``token=``);
a refused recorder says why once and spills everything to its local file;
names that come from input reach no file path and no terminal unescaped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import rtrace

BIN = Path(sys.executable).parent
TOKEN = "tok-5f1c2a9e7d"

PROGRAM = """
import sys, rtrace
def leaf(): pass
with rtrace.record(session=sys.argv[1], **eval(sys.argv[2])) as rec:
    for _ in range(2000):
        leaf()
print("EVENTS", rec.events, rec.path, flush=True)
"""


def start_collector(tmp_path: Path, address: str, *args: str, env: dict | None = None):
    """Starts rtrace-collect on ``address``; returns it and the address it
    announced (for ``tcp://127.0.0.1:0``, the port the system chose)."""
    full_env = {k: v for k, v in os.environ.items() if k != "RTRACE_TOKEN"}
    full_env.update(env or {})
    proc = subprocess.Popen([str(BIN / "rtrace-collect"), "--listen", address, "-o", "out.json",
                             "--drain", "0.5", *args], cwd=tmp_path, env=full_env,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "listening on" in line, line
    announced = line.split("listening on ", 1)[1].split(";", 1)[0]
    if address.endswith(":0"):
        assert not announced.endswith(":0"), line
    return proc, announced


def run_program(tmp_path: Path, address: str, session: str, options: str = "{}",
                token: str | None = None) -> tuple[int, str, str]:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if k != "RTRACE_TOKEN"}
    env.update(RTRACE_COLLECTOR=address, RTRACE_OUTPUT_DIR=str(tmp_path))
    if token is not None:
        env["RTRACE_TOKEN"] = token
    proc = subprocess.run([sys.executable, str(script), session, options], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _, events, path = proc.stdout.split()
    return int(events), path, proc.stderr


def finish(collector: subprocess.Popen) -> str:
    collector.terminate()
    _, stderr = collector.communicate(timeout=60)
    assert collector.returncode == 0, stderr
    return stderr


def test_the_right_token_streams_and_a_wrong_or_missing_one_spills_with_one_warning(tmp_path):
    collector, address = start_collector(tmp_path, "tcp://127.0.0.1:0",
                                         env={"RTRACE_TOKEN": TOKEN})

    good_events, _, good_err = run_program(tmp_path, address, "good", token=TOKEN)
    assert "rtrace:" not in good_err, good_err
    kw_events, _, _ = run_program(tmp_path, address, "keyword", options=f"dict(token={TOKEN!r})")

    bad_events, bad_path, bad_err = run_program(tmp_path, address, "bad", token="guessed")
    warnings = [line for line in bad_err.splitlines() if line.startswith("rtrace:")]
    assert len(warnings) == 1, bad_err
    assert "refused this stream: wrong token" in warnings[0], warnings
    assert f"spilling to {bad_path}" in warnings[0], warnings
    assert sum(1 for _ in rtrace.read(bad_path)) == bad_events
    assert TOKEN not in Path(bad_path).read_bytes().decode("latin-1")

    _, none_path, none_err = run_program(tmp_path, address, "anonymous")
    assert "refused this stream: no token" in none_err, none_err

    report = finish(collector)
    assert "(session \"bad\"" in report and "wrong token" in report, report
    assert "(session \"anonymous\"" in report and "no token" in report, report
    assert TOKEN not in report and "guessed" not in report, report
    rows = {line.split()[0]: line for line in report.splitlines() if line.split()}
    assert " clean" in rows["good"] and str(good_events) in rows["good"], report
    assert " clean" in rows["keyword"] and str(kw_events) in rows["keyword"], report
    assert "bad" not in rows and "anonymous" not in rows, report


def test_tcp_without_a_token_is_refused_at_start_unless_insecure_on_loopback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RTRACE_TOKEN"}
    # Both refused before anything is bound.
    plain = subprocess.run([str(BIN / "rtrace-collect"), "--listen", "tcp://0.0.0.0:0",
                            "-o", "o.json"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert plain.returncode != 0 and "needs a token" in plain.stderr, plain.stderr
    wide = subprocess.run([str(BIN / "rtrace-collect"), "--listen", "tcp://0.0.0.0:0",
                           "-o", "o.json", "--insecure-no-auth"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert wide.returncode != 0 and "loopback addresses only" in wide.stderr, wide.stderr
    collector, address = start_collector(tmp_path, "tcp://127.0.0.1:0", "--insecure-no-auth")
    events, _, err = run_program(tmp_path, address, "loopback")
    assert "rtrace:" not in err, err
    report = finish(collector)
    assert any(line.startswith("loopback ") and " clean" in line for line in report.splitlines())


def test_session_names_reach_no_path_and_no_terminal_unescaped(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sock = f"unix://{tmp_path}/c.sock"
    collector, _ = start_collector(tmp_path, sock)
    # The spill/stream file name comes from the session: it stays in its
    # directory, whatever the session says.
    script = tmp_path / "p.py"
    script.write_text("import rtrace\n"
                      "with rtrace.record(session='../../evil\\x1b[2J', output=None) as rec:\n"
                      "    sum(range(10))\n"
                      "print(rec.path)\n")
    env = dict(os.environ, RTRACE_OUTPUT_DIR=str(out_dir))
    env.pop("RTRACE_COLLECTOR", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.parent == out_dir and path.exists(), path
    assert "/" not in path.name and "\x1b" not in path.name and ".." not in path.name

    _, _, err = run_program(tmp_path, sock, "evil\x1b]0;pwned\x07\u202ename")
    report = finish(collector)
    assert "\x1b" not in report and "\x07" not in report and "\u202e" not in report, repr(report)
    assert "evil\\u{1b}]0;pwned\\u{7}\\u{202e}name" in report, report


def test_stats_of_a_stream_file_print_its_names_escaped(tmp_path):
    # A stream file read directly (not through a collector) by `rtrace
    # stats` and `rtrace-collect stats`: its names reach the terminal
    # escaped, as the collector's report and `rtrace dump` show them.
    script = tmp_path / "p.py"
    script.write_text(
        "import rtrace\n"
        "def f(): pass\n"
        "f.__code__ = f.__code__.replace(co_qualname='ev\\x1b[31mil', co_filename='/tmp/\\x1b[32mf.py')\n"
        "with rtrace.record(session='s\\x1b]0;pwned\\x07', output='fn.rtrace'):\n"
        "    f()\n")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, timeout=60)
    for command in ([str(BIN / "rtrace"), "stats", "fn.rtrace"],
                    [str(BIN / "rtrace-collect"), "stats", "fn.rtrace"],
                    [str(BIN / "rtrace-collect"), "stats", "--functions", "fn.rtrace"]):
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        shown = proc.stdout + proc.stderr
        assert "\x1b" not in shown and "\x07" not in shown, (command, repr(shown))
        assert "s\\u{1b}]0;pwned\\u{7}" in shown, (command, shown)
        if "--functions" in command or command[1] == "stats" and "rtrace-collect" not in command[0]:
            assert "ev\\u{1b}[31mil" in shown and "/tmp/\\u{1b}[32mf.py" in shown, (command, shown)


def test_rtrace_run_keeps_working_with_a_token_in_the_environment(tmp_path):
    script = tmp_path / "app.py"
    script.write_text("def f(): pass\nfor _ in range(100): f()\n")
    env = dict(os.environ, RTRACE_TOKEN=TOKEN)
    proc = subprocess.run([str(BIN / "rtrace"), "run", "--session", "../../x\x1b", "--", "app.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr, repr(proc.stderr)
    assert (tmp_path / "rtrace-x.pftrace").exists(), proc.stderr
    assert " clean" in proc.stderr, proc.stderr
