"""The ``rtrace`` command line.

    rtrace run [--session NAME] [-o FILE] [options] [filters] -- COMMAND [ARGS...]
    rtrace view FILE [--port 9001] [--no-browser]
    rtrace export IN... -o OUT.json|OUT.pftrace
    rtrace dump FILE [--json] [--limit N]
    rtrace stats FILE... [--top N] [--sort self|total|calls|mean] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.parse
import webbrowser
from collections.abc import Iterator
from pathlib import Path

from . import _filters, _native, read
from ._native import Event, StreamError
from ._children import PARENT_VARIABLE, REAPER_VARIABLE, child_environment
from ._recording import _safe_name

_EPILOG = """examples:
  rtrace run -- app.py --port 8000       record app.py and every Python process it starts
  rtrace run -o t.pftrace -- -m mypkg    record `python -m mypkg`
  rtrace run --include 'myapp.*' --min-duration 0.001 -- app.py
                                         only myapp's calls of 1 ms or more
  rtrace run -- ./native_program         a program that links rtrace's C or Rust API
  rtrace view t.pftrace                  open the timeline in Perfetto UI
  rtrace export rtrace-*.rtrace -o t.json   merge stream files into Chrome trace JSON
  rtrace dump rtrace-svc-1234.rtrace --limit 20
  rtrace stats t.pftrace --top 10       calls and time per process and function
"""

PERFETTO_UI = "https://ui.perfetto.dev"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtrace",
        description="Record what cooperating processes execute onto one timeline.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run a program with recording on and merge its processes into one timeline",
        description="Run COMMAND with a collector inside this rtrace process: the program, and "
        "every Python process it starts, stream to it, and the result is one timeline file. "
        "COMMAND is a Python script (app.py ...), -m module ..., or any program. When it exits, "
        "rtrace waits for the processes it left running (on Linux; Ctrl-C stops waiting; "
        "SIGTERM is passed on to them and stops waiting), then finishes the timeline and exits "
        "with COMMAND's status.",
    )
    run.add_argument("--session", help="session name (default: $RTRACE_SESSION or the program name)")
    run.add_argument("-o", "--output",
                     help="timeline file: .pftrace (Perfetto, default) or .json (Chrome trace); "
                          "default ./rtrace-<session>.pftrace")
    run.add_argument("--lines", action="store_true", help="also record line events (slower)")
    run.add_argument("--no-c-calls", action="store_true", help="do not record calls of C functions")
    run.add_argument("--on-full", choices=("drop", "block"), default="drop",
                     help="when a process's writer falls behind: drop and count (default) or block")
    run.add_argument("--no-children", action="store_true",
                     help="record only the program, not the Python processes it starts")
    run.add_argument("--drain", type=float, default=2.0, metavar="SECONDS",
                     help="once rtrace stops waiting (for the program, and for the processes it "
                          "left running), how long recorded processes still streaming may "
                          "deliver (default 2)")
    run.add_argument("--no-wait", action="store_true",
                     help="do not wait for the processes the program leaves running when it "
                          "exits (daemons, children it did not wait for): end the timeline "
                          "after --drain, cutting them short")
    _add_filter_arguments(run)
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    view = commands.add_parser("view", help="open a timeline in Perfetto UI",
                               description="Serve FILE on 127.0.0.1 and open Perfetto UI on it "
                               "(Perfetto's convention for local files); prints the URL.")
    view.add_argument("file")
    view.add_argument("--port", type=_port, default=9001,
                      help="port to serve on (default 9001, the one ui.perfetto.dev's "
                      "content security policy lets it fetch from)")
    view.add_argument("--no-browser", action="store_true", help="only print the URL")

    export = commands.add_parser("export", help="merge stream files, or convert a timeline",
                                 description="Merge .rtrace stream files into one timeline, or "
                                 "convert one merged timeline (.pftrace): Chrome trace JSON for "
                                 "-o x.json, Perfetto for -o x.pftrace.")
    export.add_argument("inputs", nargs="+", metavar="IN")
    export.add_argument("-o", "--output", required=True)
    export.add_argument("--format", choices=("chrome", "perfetto"),
                        help="the output's format, whatever its name (default: from its "
                             "extension, .json: chrome, anything else: perfetto)")

    dump = commands.add_parser("dump", help="print the events of a stream file",
                               description="Print the events of a stream file, one per line.")
    dump.add_argument("file")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")
    dump.add_argument("--limit", type=_count, default=0, metavar="N",
                      help="print at most N events (default 0: all)")

    stats = commands.add_parser(
        "stats", help="calls and time per process and function",
        description="Per process and function: calls, total time (recursive calls counted "
        "once), self time (total minus the calls it made) and mean time per call, in ms. Reads "
        "stream files (.rtrace) and merged timelines (.pftrace). Per process, the self times "
        "add up to the time of the top-level calls.")
    stats.add_argument("files", nargs="+", metavar="FILE")
    stats.add_argument("--top", type=_count, default=20, metavar="N",
                       help="the N first functions of each process (default 20; 0: all)")
    stats.add_argument("--sort", choices=("self", "total", "calls", "mean"), default="self",
                       help="order by (default: self time)")
    stats.add_argument("--json", action="store_true",
                       help="one JSON object per function and line: process (pid), session, "
                            "host, name, module, file, line, calls, total_ns, self_ns, mean_ns")
    return parser


def _count(text: str) -> int:
    """An argparse type: a count, 0 or more."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"takes a count (0: all), not {count}")
    return count


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (e.g. 9001)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range (ports go up to 65535)")
    return port


def _add_filter_arguments(run: argparse.ArgumentParser) -> None:
    filters = run.add_argument_group(
        "filters", "what every recorded process leaves out (see rtrace.record); patterns are "
        "globs on a module (myapp.*), a qualified name (Db.get), both (myapp.db.Db.get), or, "
        "with a / or ending in .py, a source file")
    filters.add_argument("--include", action="append", default=[], metavar="PATTERN",
                         help="record only functions matching a pattern (repeatable)")
    filters.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                         help="never record functions matching a pattern (repeatable)")
    filters.add_argument("--exclude-stdlib", action="store_true",
                         help="leave out the standard library and installed packages")
    filters.add_argument("--max-depth", type=int, metavar="N",
                         help="record calls at most N recorded calls deep")
    filters.add_argument("--min-duration", type=float, metavar="SECONDS",
                         help="leave out calls shorter than this (their time stays in the caller)")
    filters.add_argument("--log-args", nargs="?", const="*", metavar="PATTERNS",
                         help="record the reprs of arguments and return values, of every "
                              "recorded function or of those matching comma-separated patterns")
    filters.add_argument("--sample", type=int, metavar="N",
                         help="record one request in N, whole: top-level calls and top-level rtrace.span()s")


def _filter_environment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The RTRACE_* variables that pass the filters to every recorded
    process; checked here first, so a mistake stops before the program runs."""
    log_args = None if args.log_args is None else (
        True if args.log_args == "*" else [p for p in args.log_args.split(",") if p])
    for pattern in [*args.include, *args.exclude]:
        if "," in pattern:
            parser.error(f"run: a pattern cannot contain a comma: {pattern!r}")
    options = dict(include=args.include, exclude=args.exclude,
                   exclude_stdlib=args.exclude_stdlib, max_depth=args.max_depth,
                   min_duration=args.min_duration, log_args=log_args, sample=args.sample)
    try:
        _filters.build(**options, lines=args.lines)
    except (TypeError, ValueError) as error:
        parser.error(f"run: {error}")
    # Unset ones are set empty: a variable of an outer `rtrace run` must not leak in.
    return {key: value or "" for key, value in _filters.to_environment(options).items()}


def _command_for(program: list[str]) -> list[str]:
    """What to execute: Python scripts and -m modules run under this
    interpreter (which has rtrace installed)."""
    if program[0] == "-m" or program[0].endswith(".py"):
        return [sys.executable, *program]
    return program


def _print_table(stats: list[dict]) -> None:
    # A host column once the pids alone could mislead: processes of other
    # hosts, or of containers (two containers' pid 1 are two processes).
    hosts = [s["host"] + (f" (pidns {s['pid_namespace']})" if s["pid_namespace"] else "")
             for s in stats]
    by_host = len(set(hosts)) > 1 or any(s["pid_namespace"] for s in stats)
    rows = [["session", "pid", "ppid", *(["host"] if by_host else []),
             "events", "lost", "late", "bytes", "end"]]
    for s, host in zip(stats, hosts):
        end = f"error: {s['error']}" if s["error"] else "truncated" if s["truncated"] else "clean"
        rows.append([s["session"], s["pid"], s["ppid"], *([host] if by_host else []),
                     s["events"], s["lost"], s["late"], s["bytes"], end])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip(), file=sys.stderr)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        parser.error("run: nothing to run; give a command after --, e.g. `rtrace run -- app.py`")
    if args.output and not args.output.endswith((".pftrace", ".json", ".perfetto-trace")):
        parser.error(f"run: {args.output!r}: rtrace run writes a merged timeline; name it "
                     "*.pftrace (Perfetto) or *.json (Chrome trace)")
    if program[0] == "-m" and len(program) < 2:
        parser.error("run: -m needs a module name, e.g. `rtrace run -- -m http.server`")
    if program[0].endswith(".py") and not os.path.exists(program[0]):
        parser.error(f"run: no such script: {program[0]!r}")
    if not shutil.which(_command_for(program)[0]):
        # Found out before the collector starts (and creates the output).
        where = "no such file" if os.sep in program[0] else "not found on PATH"
        parser.error(f"run: cannot run {program[0]!r}: {where} or not executable; "
                     "a Python script's name ends in .py, a module goes after -m")
    filter_env = _filter_environment(args, parser)
    name = program[1] if program[0] == "-m" else Path(program[0]).stem
    session = args.session or os.environ.get("RTRACE_SESSION") or name
    output = Path(args.output or Path(os.environ.get("RTRACE_OUTPUT_DIR") or ".")
                  / f"rtrace-{_safe_name(session)}.pftrace").resolve()
    # This process hosts the collector (the program is a child): its malloc
    # is tuned as rtrace-collect's is.
    _native.tune_heap_for_collecting()
    with tempfile.TemporaryDirectory(prefix="rtrace-") as tmp:
        address = f"unix://{tmp}/collector.sock"
        collector = _native.Collector([address], str(output), drain=args.drain)
        collector.start()
        env = dict(os.environ)
        env.update(
            child_environment(
                session=session,
                collector=address,
                output_dir=None,
                lines=args.lines,
                c_calls=not args.no_c_calls,
                on_full=args.on_full,
            )
        )
        env.update(filter_env)
        if args.no_children:
            env["RTRACE_FOLLOW_CHILDREN"] = "0"
        # Before the program starts, so that every process it leaves behind
        # is reparented here, however deep it was started.
        wait = not args.no_wait and _become_subreaper()
        # Its processes that start recording once reparented here name the
        # recording process that started them as their parent.
        env.pop(PARENT_VARIABLE, None)  # the program's is rtrace run
        env.pop(REAPER_VARIABLE, None)
        if wait:
            env[REAPER_VARIABLE] = str(os.getpid())
        # From here on Ctrl-C and SIGTERM never cut the timeline short: the
        # steps below take them as they say, and between them (and in the
        # collector's stop, bounded by --drain) they are only noted.
        with _signals_noted((signal.SIGINT, signal.SIGTERM)) as noted:
            code, terminated = _run_child(_command_for(program), env)
            if wait:
                shown = " ".join(program[:2]) if program[0] == "-m" else program[0]
                _wait_for_leftovers(shown, terminated=terminated or signal.SIGTERM in noted)
            stats = collector.stop()
        if wait:
            _reap_exited_children()  # those that ended during the drain: no zombies for init
            _become_subreaper(on=False)
    if not stats:
        print(f"rtrace: no process streamed to the collector: {output} holds no events "
              "(did the program start Python with rtrace installed, or a program that "
              "links rtrace's C or Rust API?)", file=sys.stderr)
        return code
    _print_table(stats)
    print(f"rtrace: timeline: {output}", file=sys.stderr)
    print(f"rtrace: view it:  rtrace view {os.path.relpath(output)}", file=sys.stderr)
    return code


def _run_child(command: list[str], env: dict) -> tuple[int, bool]:
    """Runs the program; Ctrl-C goes to it (it shares our terminal), and
    SIGTERM to rtrace is passed on. Returns its exit status and whether
    rtrace was sent SIGTERM meanwhile."""
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as error:
        print(f"rtrace: cannot run {command[0]!r}: {error}", file=sys.stderr)
        return 127, False
    terminated = False

    def terminate(*_: object) -> None:
        nonlocal terminated
        terminated = True
        child.terminate()

    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, terminate)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return (code if code >= 0 else 128 - code), terminated


_PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


def _become_subreaper(on: bool = True) -> bool:
    """Makes this process the reaper of its orphaned descendants: a process
    the program leaves running (a daemon that double-forked, a child it
    never waited for) becomes rtrace's child when its parent exits, rather
    than init's, so rtrace can wait for it. Whether it could (Linux only).
    Children do not inherit the setting. With ``on`` false, undoes it once
    the run is over (for a program that runs ``cli.main(["run", ...])``
    in its own process and goes on)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(int(on)), ctypes.c_ulong(0),
                          ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):  # no C library to load, or no prctl in it
        return False


def _wait_for_leftovers(program: str, *, terminated: bool) -> None:
    """Waits, once the program has exited (and its Popen has its status),
    for the processes it left running, reaping each as it exits (and the
    orphans that exited earlier), so that their streams end before the
    collector stops. Ctrl-C stops waiting. SIGTERM, now or while the
    program ran, is passed on to them and stops waiting too: rtrace was
    asked to end, so they get the --drain seconds to finish their streams,
    not as long as they like."""
    if not _reap_exited_children():
        return
    if terminated:
        _pass_on_sigterm(program)
        return
    pids = _children_of_this_process()
    print(f"rtrace: waiting for {_counted(pids)} {program} left running{_listed(pids)}; "
          "Ctrl-C stops waiting", file=sys.stderr, flush=True)
    with _signals_noted((signal.SIGINT, signal.SIGTERM)) as noted:
        # Polled, not a blocking os.waitpid(-1, 0): a handler that only
        # notes a signal cannot interrupt that wait (PEP 475 resumes it),
        # and one that raises could do so anywhere, also after the wait.
        while not noted and _reap_exited_children():
            time.sleep(_LEFTOVER_POLL_SECONDS)
    if signal.SIGTERM in noted:
        _pass_on_sigterm(program)
    elif noted and _reap_exited_children():
        pids = _children_of_this_process()
        print(f"rtrace: stopped waiting for {_counted(pids)} still running{_listed(pids)}",
              file=sys.stderr)


_LEFTOVER_POLL_SECONDS = 0.1


def _reap_exited_children() -> bool:
    """Reaps the children that have exited (without blocking); whether any
    is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _pass_on_sigterm(program: str) -> None:
    pids = _children_of_this_process()
    for pid in pids or ():
        try:
            # Safe: a child's pid is not reused before its parent (this
            # thread, alone) reaps it.
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if pids is None:
        print(f"rtrace: terminated; not waiting for the processes {program} left running "
              "(cannot list them to pass SIGTERM on)", file=sys.stderr)
    elif pids:
        print(f"rtrace: terminated; passed SIGTERM on to {_counted(pids)} {program} left "
              f"running{_listed(pids)}; not waiting for them past --drain", file=sys.stderr)


def _children_of_this_process() -> list[int] | None:
    """The pids of this process's children, from /proc: every thread's
    list, as an orphan is given to one thread of its reaper. None where
    /proc does not tell (a kernel without CONFIG_PROC_CHILDREN)."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    try:
        tids = os.listdir(tasks)
    except OSError:
        return None
    pids: set[int] = set()
    readable = False
    for tid in tids:
        try:
            text = (tasks / tid / "children").read_text()
        except OSError:
            continue  # the thread has ended since, or the kernel keeps no such list
        readable = True
        pids.update(int(pid) for pid in text.split())
    return sorted(pids) if readable else None


def _counted(pids: list[int] | None) -> str:
    """'1 process', '2 processes', or 'the processes' where they could not
    be listed."""
    if not pids:
        return "the processes"
    return "1 process" if len(pids) == 1 else f"{len(pids)} processes"


def _listed(pids: list[int] | None, at_most: int = 10) -> str:
    """' (pids 12 34)', or nothing where they could not be listed."""
    if not pids:
        return ""
    shown = " ".join(map(str, pids[:at_most]))
    if len(pids) > at_most:
        shown += f" and {len(pids) - at_most} more"
    return f" (pid {shown})" if len(pids) == 1 else f" (pids {shown})"


@contextlib.contextmanager
def _signals_noted(signums: tuple[signal.Signals, ...]) -> Iterator[set[int]]:
    """Within the block, the given signals are noted in the set it gives,
    instead of handled as before."""
    noted: set[int] = set()
    previous = {signum: signal.signal(signum, lambda signum, _frame: noted.add(signum))
                for signum in signums}
    try:
        yield noted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _view(args: argparse.Namespace) -> int:
    path = Path(args.file).resolve()
    if path.is_dir():
        print(f"rtrace: error: {args.file} is a directory; give a timeline file", file=sys.stderr)
        return 1
    if not path.is_file():
        print(f"rtrace: error: no such file: {args.file}", file=sys.stderr)
        return 1
    # Perfetto UI would show only that it could not parse a file that is
    # empty or not rtrace's: say why here, as `rtrace.read` does.
    try:
        merged = read(str(path)).merged
    except StreamError as error:
        if not _looks_like_json(path):
            print(f"rtrace: error: {error}", file=sys.stderr)
            return 1
        merged = True  # Chrome trace JSON (`rtrace export -o t.json`): Perfetto UI reads it
    with tempfile.TemporaryDirectory(prefix="rtrace-view-") as scratch:
        if not merged:
            # A stream file: Perfetto UI reads only the merged timeline.
            timeline = Path(scratch) / (path.stem + ".pftrace")
            print(f"rtrace: {args.file} is a stream file; merging it for Perfetto UI "
                  f"(rtrace export {args.file} -o T.pftrace keeps the timeline)", file=sys.stderr)
            _native.export([str(path)], str(timeline), progress=False)
            path = timeline
        return _serve_to_perfetto_ui(path, args)


def _looks_like_json(path: Path) -> bool:
    """Whether ``path`` starts as a JSON array or object does."""
    with open(path, "rb") as file:
        return file.read(64).lstrip()[:1] in (b"[", b"{")


def _serve_to_perfetto_ui(path: Path, args: argparse.Namespace) -> int:
    """Serves ``path`` once, as Perfetto's own `open_trace_in_ui` does, to
    the Perfetto UI page it opens on it."""
    served = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if urllib.parse.unquote(self.path.lstrip("/")) != path.name:
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Access-Control-Allow-Origin", PERFETTO_UI)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            served.set()

        def log_message(self, *_: object) -> None:
            pass

    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as error:
        print(f"rtrace: error: cannot serve on 127.0.0.1:{args.port}: {error}; try --port",
              file=sys.stderr)
        return 1
    port = server.server_address[1]  # the one chosen, for --port 0
    file_url = f"http://127.0.0.1:{port}/{urllib.parse.quote(path.name)}"
    url = f"{PERFETTO_UI}/#!/?url={file_url}"
    print(f"rtrace: serving {path} at {file_url}\nrtrace: open {url}", file=sys.stderr)
    if not args.no_browser and not webbrowser.open(url):
        print("rtrace: no browser could be opened; open the URL above yourself", file=sys.stderr)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        served.wait()
        print("rtrace: Perfetto UI has loaded the trace", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


def _export(args: argparse.Namespace) -> int:
    # One merged timeline is rewritten; stream files are merged. Each input
    # is opened once, in Rust, so that pipes work.
    _native.tune_heap_for_collecting()
    merged = _native.export(args.inputs, args.output, progress=True, format=args.format)
    skipped = []
    if merged is not None:
        stats, skipped = merged
        for _, why in skipped:  # why names the input
            print(f"rtrace: skipped: {why}", file=sys.stderr)
        _print_table(stats)
    print(f"rtrace: wrote {args.output}", file=sys.stderr)
    if skipped:
        print(f"rtrace: {len(skipped)} of {len(args.inputs)} inputs could not be read and are "
              "not in it (see above)", file=sys.stderr)
        return 1
    return 0


def _printable(text: str) -> str:
    """Text from a stream with control and bidi characters escaped, so a
    crafted name cannot drive the terminal (as the collector does)."""
    return "".join(
        f"\\u{{{ord(c):x}}}" if unicodedata.category(c) == "Cc" or c in _BIDI else c
        for c in text
    )


_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _dump(args: argparse.Namespace) -> int:
    reader = read(args.file)
    # A pid stands for the first process met with it; another with the
    # same pid (a second container's pid 1, a reused pid) prints as
    # pid#process, its number in `processes()` (and `process` in --json).
    first_of_pid: dict[int, int] = {}

    def shown_pid(ev: Event) -> str:
        first = first_of_pid.setdefault(ev.pid, ev.process)
        return str(ev.pid) if first == ev.process else f"{ev.pid}#{ev.process}"

    for n, ev in enumerate(reader):
        if args.limit and n >= args.limit:
            break
        extra = {key: value for key, value in
                 (("args", ev.args), ("value", ev.value), ("flow_id", ev.flow_id))
                 if value is not None}
        if args.json:
            record = {"ts_ns": ev.ts_ns, "pid": ev.pid, "process": ev.process, "tid": ev.tid,
                      "kind": ev.kind, "name": ev.name, "module": ev.module, "file": ev.file,
                      "line": ev.line, **extra}
            if ev.args_repr is not None:
                record["args_repr"] = ev.args_repr
            if ev.return_repr is not None:
                record["return_repr"] = ev.return_repr
            print(json.dumps(record))
        elif ev.kind in ("call", "return", "exception", "c_call", "c_return", "line"):
            logged = (f"({ev.args_repr})" if ev.args_repr is not None else
                      f" -> {ev.return_repr}" if ev.return_repr is not None else "")
            print(f"{ev.ts_ns:>16} {shown_pid(ev):>7} {ev.tid:>7} {ev.kind:<9} "
                  f"{_printable(ev.name + logged)}  {_printable(ev.file)}:{ev.line}")
        else:
            details = " ".join(f"{k}={v:016x}" if k == "flow_id" else f"{k}={v!r}"
                               for k, v in extra.items())
            print(f"{ev.ts_ns:>16} {shown_pid(ev):>7} {ev.tid:>7} {ev.kind:<9} "
                  f"{_printable(ev.name)}  {_printable(details)}")
    if reader.truncated:
        print(f"rtrace: {args.file} is truncated (the recording process did not finish it)",
              file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    report = _native.profile_report(args.files, top=args.top, sort=args.sort, json=args.json,
                                    progress=True)
    sys.stdout.write(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.error("give a command: run, view, export, dump or stats "
                     "(e.g. `rtrace run -- app.py`; `rtrace -h` for more)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args, parser)
        if args.command == "view":
            return _view(args)
        if args.command == "export":
            return _export(args)
        if args.command == "stats":
            return _stats(args)
        return _dump(args)
    except BrokenPipeError:
        return 0
    except (OSError, ValueError, RuntimeError) as error:
        print(f"rtrace: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
