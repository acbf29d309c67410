#!/usr/bin/env python3
"""How much slower Python runs under rtrace, next to the floor and its peers.

One run prints, side by side, the slowdown of each workload under:

  untraced            the workload alone (the baseline of every ratio)
  imported            ``import rtrace`` done, nothing recording (the disabled path)
  floor-noop          a no-op C hook (benches/floor_hooks.c, built in this run):
                      sys.monitoring callbacks on 3.12+, the C profile hook on 3.11
                      -- what the interpreter costs to call any hook at all
  floor-stamp         the same hook reading the clock (TSC) and storing 16 bytes
                      per event into a preallocated buffer: the recording floor
  rtrace              ``rtrace.record(output=FILE)`` with its defaults
  rtrace-collector    ``rtrace.record(collector=...)`` streaming to a live
                      ``rtrace-collect``; e2e ends when its merged .pftrace is complete
  floor-noop-legacy   3.12+: the floors and rtrace with the C profile hook
  floor-stamp-legacy    (PyEval_SetProfileAllThreads; rtrace: RTRACE_HOOK=legacy)
  rtrace-legacy         instead of sys.monitoring
  cProfile            the standard library's deterministic profiler
  viztracer           VizTracer from PyPI, its buffer sized so that it drops nothing,
                      saving with dump_raw=True (its fastest save)
and, only when asked for with --modes:
  viztracer-json      VizTracer saving the default way (its JSON), which most
                      users do: slow to save (minutes per round on the full sizes)
  rtrace-filtered     ``record(exclude=["no_such_module.*"])``: every event, through
                      the hook's filtered path (the price of turning a filter on)
  rtrace-nothing      ``record(include=["no_such_module.*"])``: every function is
                      excluded, nothing is written (the floor of a filtered hook)
  rtrace-block        ``rtrace.record(on_full="block")``: nothing may be dropped
  floor-stamp-monotonic  the stamp floor reading CLOCK_MONOTONIC instead of the TSC

Workloads: recursive fib, small method calls, 4 threads, 2 spawned processes
(each process runs the tool itself), and richards, deltablue, nbody and
raytrace from the pyperformance suite (imported from the installed package).
VizTracer and pyperformance are pip-installed into the venv when missing.

Every measurement runs in a fresh subprocess, so no hook state leaks from one
into the next; the modes are interleaved round by round so that a slow spell
of this noisy machine hits all of them alike. "in-run" is timed around the
workload only; "e2e" from the moment the tool is started until its output
is complete (rtrace: the stream file closed, or the collector's merged file
finished; cProfile: after dump_stats; viztracer: after save). Medians are
quoted, and ratios of medians against the untraced run.

Noise: the parent reads /proc/stat around every measurement and reports how
many CPUs other processes kept busy meanwhile ("contended" runs). It also
times a fixed loop of its own just before and after each measurement (the
speed probe): a probe 1.25 times slower than the median probe marks a run
on a CPU that ran slow, as a virtual machine's does while its host lends
the core elsewhere, which /proc/stat does not show ("slow" runs; together
"disturbed"). ``--retry-busy N`` takes such a measurement again, up to N
times.

Usage (from the repository root)::

    benches/run                                      # every .venv-3.* found, then one table
    python benches/overhead.py --python .venv-3.12/bin/python
    python benches/overhead.py --quick               # a smoke run: ~2 minutes

The interpreter must import rtrace (a release build: ``scripts/dev-setup``).

Files: this one parses options and prints; overhead_setup.py prepares
(installs, builds the floor); overhead_measure.py runs the measurements;
overhead_child.py is the measured process; overhead_workloads.py holds the
workloads; overhead_report.py makes the tables; floor.py and floor_hooks.c
are the floor hooks.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead_measure import measure_all
from overhead_report import dump_json, report
from overhead_setup import REPO, build_floor, ensure_package, find_collector, probe
from overhead_setup import require_rtrace
from overhead_workloads import WORKLOADS

ALL_MODES = (
    "untraced",
    "imported",
    "floor-noop",
    "floor-stamp",
    "rtrace",
    "rtrace-collector",
    "rtrace-block",
    "floor-noop-legacy",
    "floor-stamp-legacy",
    "rtrace-legacy",
    "floor-stamp-monotonic",
    "rtrace-filtered",
    "rtrace-nothing",
    "cProfile",
    "viztracer",
    "viztracer-json",
)
OPTIONAL_MODES = (
    "rtrace-block", "floor-stamp-monotonic", "rtrace-filtered", "rtrace-nothing", "viztracer-json",
)  # fmt: skip
LEGACY_MODES = ("floor-noop-legacy", "floor-stamp-legacy", "rtrace-legacy")
FLOOR_MODES = tuple(m for m in ALL_MODES if m.startswith("floor"))


def git_revision() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return proc.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_line() -> str:
    try:
        load_1m = os.getloadavg()[0]
    except OSError:
        return f"machine:   {os.cpu_count()} CPUs, {platform.platform()}"
    busy = load_1m > 0.5 * (os.cpu_count() or 1)
    note = " (BUSY: other work competes for the CPUs; expect wide spreads)" if busy else ""
    return (
        f"machine:   {os.cpu_count()} CPUs, {platform.platform()}, "
        f"load average {load_1m:.2f} at start{note}"
    )


METHOD_LINES = [
    "           medians over the rounds; ratio = median / median of untraced; "
    "spread = median absolute deviation / median, of in-run;",
    "           ns/event = in-run time added per event the stamp floor counted "
    "(median - untraced median) / events",
    "           in-run = the workload alone; e2e = tool start .. output complete;",
    "           cpu = process CPU time during in-run (all threads: includes rtrace's writer)",
]


def tool_lines(modes: list[str], setup: dict) -> list[str]:
    lines = [
        "rtrace:    record(session='bench', output=FILE) with defaults "
        "(threads=True, c_calls=True, lines=False, buffer_events=1<<20)",
    ]
    if "rtrace-collector" in modes:
        lines.append(
            f"           rtrace-collector: record(collector=unix://...) to a fresh "
            f"`{shlex.join(setup['collect'])} --listen ...` per run, SIGINT once recording stopped"
        )
    if "rtrace-legacy" in modes:
        lines.append("           rtrace-legacy: RTRACE_HOOK=legacy (PyEval_SetProfile)")
    if setup.get("floor"):
        lines.append(f"floor:     {setup['floor']['commands']['stamp']}")
    if "rtrace-filtered" in modes or "rtrace-nothing" in modes:
        lines.append(
            "           rtrace-filtered = same with exclude=['no_such_module.*'] (all events); "
            "rtrace-nothing = include=['no_such_module.*'] (no events)"
        )
    lines.append(
        "cProfile:  Profile().enable() .. disable(); e2e includes dump_stats(FILE); "
        "'calls' = total calls in its stats"
    )
    if setup.get("viztracer"):
        lines.append(
            f"viztracer: {setup['viztracer']}, VizTracer(tracer_entries=1.25 x calls counted, "
            "verbose=0, dump_raw=True) .. stop(); save(); viztracer-json: the same with "
            "dump_raw=False (its default JSON save)"
        )
    if setup.get("pyperformance"):
        lines.append(
            f"programs:  pyperformance {setup['pyperformance']} (bm_*/run_benchmark.py of the "
            "installed package)"
        )
    lines.append(
        "processes: multiprocessing 'spawn'; every process starts and finishes the tool itself "
        "(VizTracer and cProfile: one file per process, not combined)"
    )
    return lines + setup["notes"]


def header(args, info: dict, modes: list[str], setup: dict) -> str:
    this_cmd = shlex.join([sys.executable, *sys.argv])
    wrapper = os.environ.get("RTRACE_BENCH_COMMAND")
    return "\n".join(
        [
            "=" * 100,
            f"rtrace overhead benchmark — Python {info['version']}",
            "=" * 100,
            f"command:   {wrapper}" if wrapper else f"command:   {this_cmd}",
            *([f"this run:  {this_cmd}"] if wrapper else []),
            f"python:    {info['executable']} (--python {args.python})",
            f"rtrace:    {info['rtrace']} from {info['native']}",
            f"repo:      {REPO} at {git_revision()} (the rtrace measured is the one "
            "--python imports, above)",
            machine_line(),
            f"method:    {args.repeat} rounds; each round runs every workload x mode once, "
            f"modes in a shuffled order (seed {args.seed}), each in a fresh subprocess",
            *METHOD_LINES,
            *tool_lines(modes, setup),
        ]
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\nUsage (from")[0],
        epilog="modes: " + ", ".join(ALL_MODES) + f" (not by default: {', '.join(OPTIONAL_MODES)})",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter to benchmark (default: the one running this script)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds per workload x mode (default 5, 3 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small workloads and 3 rounds: a smoke run"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--modes",
        default=None,
        help="comma-separated modes, or 'all' (default: all but "
        f"{', '.join(OPTIONAL_MODES)}); untraced, the baseline, is always measured",
    )
    parser.add_argument(
        "--no-viztracer", action="store_true", help="do not measure (or install) viztracer"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="never pip-install viztracer or pyperformance (skip what is missing)",
    )
    parser.add_argument(
        "--collect",
        metavar="PATH",
        help="the rtrace-collect to run for rtrace-collector (default: target/release/"
        "rtrace-collect, else the venv's rtrace-collect script)",
    )
    parser.add_argument(
        "--retry-busy",
        type=int,
        default=0,
        metavar="N",
        help="take a measurement again, up to N times, while other processes "
        "kept more than 0.3 CPUs busy during it, or when the speed probe around "
        "it was 1.25x slower than the median probe (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the mode order shuffle")
    parser.add_argument("--json", metavar="PATH", help="also write every raw measurement here")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.retry_busy < 0:
        parser.error("--retry-busy must be >= 0")
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown or not args.workloads:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {','.join(WORKLOADS)}")
    if args.modes == "all":
        args.modes = ",".join(ALL_MODES)
    unknown = set((args.modes or "untraced").split(",")) - set(ALL_MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(ALL_MODES)}")
    return args


def wanted_modes(args) -> list[str]:
    if args.modes:
        return [m for m in ALL_MODES if m in args.modes.split(",") or m == "untraced"]
    return [m for m in ALL_MODES if m not in OPTIONAL_MODES]


def choose_modes(args, info: dict, setup: dict) -> list[str]:
    """The wanted modes this interpreter and set-up can measure; a note for
    each one left out."""
    modes = wanted_modes(args)
    drop = {}
    if tuple(info["version_info"]) < (3, 12):
        # 3.11 has only the profile hook: the plain columns are it.
        reason = "Python 3.11 has only the profile hook (the plain modes use it)"
        drop.update(dict.fromkeys(LEGACY_MODES, reason if args.modes else None))
    if not setup.get("floor"):
        drop.update(dict.fromkeys(FLOOR_MODES, "the floor hooks could not be built"))
    if not setup.get("viztracer"):
        drop["viztracer"] = drop["viztracer-json"] = None  # the install note says why
    if not setup.get("collect"):
        drop["rtrace-collector"] = "no rtrace-collect found (scripts/dev-setup builds it)"
    for mode in modes:
        if mode in drop and drop[mode] and (args.modes or mode not in OPTIONAL_MODES):
            setup["notes"].append(f"{mode}: skipped, {drop[mode]}")
    return [m for m in modes if m not in drop]


def choose_workloads(args, setup: dict) -> list:
    size_index = 1 if args.quick else 0
    chosen = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        if workload.pyperformance and not setup.get("pyperformance"):
            continue
        chosen.append((workload, workload.sizes[size_index]))
    if not chosen:
        raise SystemExit("overhead.py: no workload can run (pyperformance is missing); see above")
    return chosen


def prepare(args, python: str, info: dict, floor_dir: str) -> dict:
    setup: dict = {"notes": [], "events": {}}
    viz_modes = ("viztracer", "viztracer-json")
    viz_wanted = not args.no_viztracer and (
        not args.modes or any(m in args.modes for m in viz_modes)
    )
    if viz_wanted:
        setup["viztracer"], note = ensure_package(python, info, "viztracer", not args.no_install)
        setup["notes"] += [note] if note else []
    if any(WORKLOADS[w].pyperformance for w in args.workloads):
        version, note = ensure_package(python, info, "pyperformance", not args.no_install)
        setup["pyperformance"] = version
        setup["notes"] += [note] if note else []
        if not version:
            setup["notes"].append("pyperformance workloads: skipped (no pyperformance)")
    setup["floor"], note = build_floor(python, Path(floor_dir))
    setup["notes"] += [note] if note else []
    setup["floor_dir"] = setup["floor"]["dir"] if setup["floor"] else None
    setup["collect"] = find_collector(python, args.collect)
    return setup


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Measurements run in a temporary directory: a relative path would not
    # name the interpreter there (a bare name is looked up on PATH).
    python = os.path.abspath(args.python) if os.sep in args.python else args.python
    info = probe(python)
    require_rtrace(python, info)
    with tempfile.TemporaryDirectory(prefix="rtrace-bench-floor-") as floor_dir:
        setup = prepare(args, python, info, floor_dir)
        modes = choose_modes(args, info, setup)
        workloads = choose_workloads(args, setup)
        print(header(args, info, modes, setup), flush=True)
        started = time.perf_counter()
        cells = measure_all(python, modes, workloads, args, setup)
    elapsed = time.perf_counter() - started
    report(cells, modes, workloads, info, setup, elapsed)
    if args.json:
        dump_json(args.json, cells, modes, workloads, info, setup)
    return 1 if any(c.failures for c in cells.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
