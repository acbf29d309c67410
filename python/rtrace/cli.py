"""The ``rtrace`` command line: record a Python program, inspect a stream.

    rtrace run [--session NAME] [-o FILE] [--lines] [--no-c-calls] -- script.py [ARGS...]
    rtrace run [...] -- -m package.module [ARGS...]
    rtrace dump FILE [--json] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys

from . import read, record

_EPILOG = """examples:
  rtrace run -- app.py --port 8000        record app.py into ./rtrace-app-<pid>.rtrace
  rtrace run -o out.rtrace -- -m mypkg    record `python -m mypkg`
  rtrace dump out.rtrace --limit 20       print the first 20 events
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtrace",
        description="Record what Python processes execute, with nanosecond timestamps.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run a Python script or module with recording on",
        description="Run a Python script (or -m module) in this interpreter with recording "
        "on, writing a stream file. Everything after -- is the program and its arguments.",
    )
    run.add_argument("--session", help="session name (default: $RTRACE_SESSION or the program name)")
    run.add_argument("-o", "--output", help="stream file (default: ./rtrace-<session>-<pid>.rtrace)")
    run.add_argument("--lines", action="store_true", help="also record line events (slower)")
    run.add_argument("--no-c-calls", action="store_true", help="do not record calls of C functions")
    run.add_argument("--on-full", choices=("drop", "block"), default="drop",
                     help="when the writer falls behind: drop and count events (default) or block")
    run.add_argument("program", nargs=argparse.REMAINDER,
                     help="-- script.py [ARGS...]  or  -- -m module [ARGS...]")

    dump = commands.add_parser("dump", help="print the events of a stream file",
                               description="Print the events of a stream file, one per line.")
    dump.add_argument("file")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")
    dump.add_argument("--limit", type=int, default=0, help="print at most N events")
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        parser.error("run: nothing to run; give a script or -m module after --, "
                     "e.g. `rtrace run -- app.py`")
    if program[0] == "-m":
        if len(program) < 2:
            parser.error("run: -m needs a module name, e.g. `rtrace run -- -m http.server`")
        target, is_module, argv = program[1], True, program[1:]
    else:
        target, is_module, argv = program[0], False, program
        if not os.path.exists(target):
            parser.error(f"run: no such script: {target!r}")
    sys.argv = argv
    # As `python script.py` / `python -m module` would: the script's folder
    # or the current directory replaces rtrace's own entry point folder.
    sys.path[0] = os.getcwd() if is_module else os.path.dirname(os.path.abspath(target))
    recording = record(
        args.session or os.environ.get("RTRACE_SESSION") or os.path.splitext(os.path.basename(target))[0],
        output=args.output,
        lines=args.lines,
        c_calls=not args.no_c_calls,
        on_full=args.on_full,
    )
    code = 0
    with recording:
        try:
            if is_module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    print(f"rtrace: recorded {recording.events} events ({recording.lost} lost) to {recording.path}",
          file=sys.stderr)
    return code


def _dump(args: argparse.Namespace) -> int:
    reader = read(args.file)
    for n, ev in enumerate(reader):
        if args.limit and n >= args.limit:
            break
        if args.json:
            print(json.dumps({"ts_ns": ev.ts_ns, "pid": ev.pid, "tid": ev.tid, "kind": ev.kind,
                              "name": ev.name, "module": ev.module, "file": ev.file, "line": ev.line}))
        else:
            print(f"{ev.ts_ns:>16} {ev.pid:>7} {ev.tid:>7} {ev.kind:<9} {ev.name}  {ev.file}:{ev.line}")
    if reader.truncated:
        print(f"rtrace: {args.file} is truncated (the recording process did not finish it)",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args, parser)
        return _dump(args)
    except BrokenPipeError:
        return 0
    except (OSError, ValueError) as error:
        print(f"rtrace: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
