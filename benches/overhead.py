#!/usr/bin/env python3
"""How much slower call-heavy Python runs under rtrace, next to its peers.

One run prints, side by side, the slowdown of each workload under:

  untraced        the workload alone (the baseline of every ratio)
  imported        ``import rtrace`` done, nothing recording (the disabled path)
  rtrace          ``rtrace.record()`` with its defaults (on_full="drop")
  rtrace-block    ``rtrace.record(on_full="block")``: nothing may be dropped
  rtrace-legacy   3.12+ only: RTRACE_HOOK=legacy forces the PyEval_SetProfile
                  hook instead of sys.monitoring (on_full="drop")
  rtrace-filtered ``record(exclude=["no_such_module.*"])``: every event, through
                  the hook's filtered path (the price of turning a filter on)
  rtrace-nothing  ``record(include=["no_such_module.*"])``: every function is
                  excluded, nothing is written (the floor of a filtered hook)
  cProfile        the standard library's deterministic profiler
  viztracer       VizTracer, when it is installed or installable into the venv

Every measurement runs in a fresh subprocess, so no hook state leaks from one
into the next; the modes are interleaved round by round so that a slow spell
of this noisy machine hits all of them alike. Two times are taken inside the
subprocess: "in-run" around the workload only, and "e2e" from the moment the
tool is started until its output file is closed (for rtrace: until ``with``
exits; for cProfile: after ``dump_stats``; for viztracer: after ``save``).
Medians are quoted, and ratios of medians against the untraced run.

Sizes: each workload makes 2.5-3 M Python calls, ~0.1-0.3 s untraced on the
2-core development machine. Larger sizes would mostly lengthen viztracer's
save (~1 s per million calls even with dump_raw), which already dominates a
default run of ~2.5-3.5 minutes per Python version.

Noise: the parent reads /proc/stat around every measurement and reports how
many CPUs other processes kept busy meanwhile ("contended" runs);
``--retry-busy N`` takes such a measurement again, up to N times.

Usage (from the repository root)::

    python benches/overhead.py                       # the interpreter running it
    python benches/overhead.py --python .venv-3.12/bin/python
    python benches/overhead.py --quick               # a smoke run in seconds
    benches/run                                      # every .venv-3.* found

The interpreter must import rtrace (a release build: ``scripts/dev-setup``,
or ``maturin develop --release`` in that venv).

Files: this one runs the measurements and prints; overhead_child.py is the
measured process; overhead_report.py makes the tables and anomaly notes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from overhead_child import RESULT_MARK, THREADS
from overhead_report import BUSY_CPUS, Cell, dump_json, report

HERE = Path(__file__).resolve()
CHILD = HERE.with_name("overhead_child.py")
REPO = HERE.parent.parent
CHILD_TIMEOUT_S = 600
PIP_TIMEOUT_S = 300
ALL_MODES = (
    "untraced",
    "imported",
    "rtrace",
    "rtrace-block",
    "rtrace-legacy",
    "rtrace-filtered",
    "rtrace-nothing",
    "cProfile",
    "viztracer",
)

SETUP_HINT = (
    "set it up with `scripts/dev-setup` (creates .venv-3.11/.venv-3.12/.venv-3.13 with "
    "rtrace installed, release build), or in that interpreter's venv run "
    "`pip install maturin && maturin develop --release` from the repository root"
)


# ---------------------------------------------------------------------------
# Workloads: what the parent knows of them (they run in overhead_child.py)
# ---------------------------------------------------------------------------


def fib_calls(n: int) -> int:
    """Python calls fib(n) makes, itself included: 2*F(n+1) - 1."""
    a, b = 0, 1
    for _ in range(n + 1):
        a, b = b, a + b
    return 2 * a - 1


@dataclass(frozen=True)
class Workload:
    name: str  # the key of overhead_child.WORKLOADS
    sizes: tuple[int, int]  # (default, --quick)

    def label(self, size: int) -> str:
        if self.name == "fib":
            return f"fib({size})"
        if self.name == "methods":
            return f"methods({size:,}x3)"
        return f"{THREADS} threads x fib({size})"

    def python_calls(self, size: int) -> int:
        """A lower bound on the Python calls the workload makes."""
        if self.name == "fib":
            return fib_calls(size)
        if self.name == "methods":
            return 3 * size + 2
        return THREADS * fib_calls(size)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("fib", (30, 26)),
        Workload("methods", (1_000_000, 200_000)),
        Workload("threads", (27, 24)),
    )
}


# ---------------------------------------------------------------------------
# The parent: probing the interpreter
# ---------------------------------------------------------------------------

PROBE = r"""
import json, sys
info = {"version": sys.version.split()[0], "version_info": list(sys.version_info[:2]),
        "executable": sys.executable, "in_venv": sys.prefix != sys.base_prefix}
try:
    import rtrace
    info["rtrace"] = getattr(rtrace, "__version__", "?")
    info["native"] = rtrace._native.__file__
except Exception as exc:
    info["rtrace_error"] = f"{type(exc).__name__}: {exc}"
try:
    import viztracer
    info["viztracer"] = viztracer.__version__
except Exception:
    info["viztracer"] = None
print(json.dumps(info))
"""


def probe(python: str) -> dict:
    try:
        proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemExit(f"overhead.py: cannot run {python!r}: {exc}") from None
    if proc.returncode != 0:
        raise SystemExit(f"overhead.py: {python!r} failed to start:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def require_rtrace(python: str, info: dict) -> None:
    if "rtrace_error" in info:
        raise SystemExit(
            f"overhead.py: rtrace cannot be imported by {python} "
            f"(Python {info['version']}): {info['rtrace_error']}\n  {SETUP_HINT}"
        )


def ensure_viztracer(python: str, info: dict, allowed: bool) -> tuple[str | None, str]:
    """Returns (viztracer version or None, a note for the header)."""
    if not allowed:
        return None, "viztracer: skipped (--no-viztracer)"
    if info["viztracer"]:
        return info["viztracer"], ""
    if not info["in_venv"]:
        return None, (
            f"viztracer: skipped, not installed and {python} is not a venv "
            "(not installing into a system Python)"
        )
    print(f"installing viztracer into {info['executable']} ...", file=sys.stderr, flush=True)
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "viztracer"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        failed = proc.returncode != 0
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if failed else []
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, detail = True, [str(exc)]
    version = None if failed else probe(python)["viztracer"]
    if not version:
        return None, f"viztracer: skipped, `pip install viztracer` failed: {' '.join(detail)}"
    return version, f"viztracer: {version} was installed into this venv by this run (pip)"


# ---------------------------------------------------------------------------
# The parent: running the measurements
# ---------------------------------------------------------------------------


def child_env(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTRACE_")}
    if mode == "rtrace-legacy":
        env["RTRACE_HOOK"] = "legacy"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def busy_cpu_s() -> float | None:
    """CPU-seconds every CPU of the machine has spent busy since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(python: str, spec: dict) -> tuple[dict | None, str]:
    """Runs one measurement; the result also says how many CPUs other
    processes kept busy meanwhile ("foreign_cpus")."""
    cmd = [python, str(CHILD), json.dumps(spec)]
    busy0, own0, t0 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=child_env(spec["mode"]),
            timeout=CHILD_TIMEOUT_S,
            cwd=spec["cwd"],
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {CHILD_TIMEOUT_S} s: {shlex.join(cmd)}"
    busy1, own1, t1 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK) and proc.returncode == 0:
            result = json.loads(line[len(RESULT_MARK) :])
            if busy0 is not None and busy1 is not None:
                foreign = (busy1 - busy0) - (own1 - own0)
                result["foreign_cpus"] = max(0.0, foreign / (t1 - t0))
            return result, proc.stderr.strip()
    env_prefix = "RTRACE_HOOK=legacy " if spec["mode"] == "rtrace-legacy" else ""
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
    return None, f"exit status {proc.returncode}: {env_prefix}{shlex.join(cmd)}\n{tail}"


def measure_once(python: str, spec: dict, cell: Cell, retry_busy: int) -> None:
    """One measurement into ``cell``; with ``retry_busy``, a run during which
    other processes kept more than BUSY_CPUS busy is taken again (that often)."""
    for attempt in range(retry_busy + 1):
        result, stderr = run_child(python, spec)
        if os.path.exists(spec["out"]):
            os.unlink(spec["out"])
        if result is None:
            cell.failures.append(stderr)
            return
        contended = result.get("foreign_cpus", 0.0) > BUSY_CPUS
        if not contended or attempt == retry_busy:
            cell.runs.append({**result, "stderr": stderr, "retries": attempt})
            return


def measure_all(
    python: str, modes: list[str], workloads: list[tuple[Workload, int]], args: argparse.Namespace
) -> dict[tuple[str, str], Cell]:
    cells = {(w.name, m): Cell() for w, _ in workloads for m in modes}
    order = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="rtrace-bench-") as tmp:
        for round_no in range(1, args.repeat + 1):
            started = time.perf_counter()
            for workload, size in workloads:
                for mode in order.sample(modes, len(modes)):
                    spec = {
                        "workload": workload.name,
                        "size": size,
                        "mode": mode,
                        "out": os.path.join(tmp, f"{workload.name}-{mode}.out"),
                        "cwd": tmp,
                        "viztracer_entries": int(workload.python_calls(size) * 1.25) + 100_000,
                    }
                    measure_once(python, spec, cells[(workload.name, mode)], args.retry_busy)
            print(
                f"  round {round_no}/{args.repeat} done in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return cells


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


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
    "           ns/call = in-run time added per Python call of the workload "
    "(median - untraced median) / calls",
    "           in-run = the workload alone; e2e = tool start .. output file closed;",
    "           cpu = process CPU time during in-run (all threads: includes rtrace's writer)",
]


def tool_lines(modes: list[str], viz_version: str | None, viz_note: str) -> list[str]:
    lines = [
        "rtrace:    record(session='bench', output=FILE) with defaults "
        "(threads=True, c_calls=True, lines=False, buffer_events=1<<20)",
    ]
    if "rtrace-legacy" in modes:
        lines.append(
            "           rtrace-legacy = same with RTRACE_HOOK=legacy "
            "(PyEval_SetProfile instead of sys.monitoring)"
        )
    if "rtrace-filtered" in modes or "rtrace-nothing" in modes:
        lines.append(
            "           rtrace-filtered = same with exclude=['no_such_module.*'] (all events); "
            "rtrace-nothing = include=['no_such_module.*'] (no events)"
        )
    lines.append(
        "cProfile:  Profile().enable() .. disable(); e2e includes dump_stats(FILE); "
        "'calls' = total calls in its stats"
    )
    if viz_version:
        lines.append(
            f"viztracer: {viz_version}, VizTracer(tracer_entries=1.25x calls, verbose=0, "
            "dump_raw=True) .. stop(); save(); e2e includes save"
        )
        lines.append(
            "           (dump_raw=True is its fastest save; the default save parses "
            "every event in Python, ~10 s per million calls here)"
        )
    return lines + ([viz_note] if viz_note else [])


def header(args, info: dict, modes: list[str], viz_version: str | None, viz_note: str) -> str:
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
            *tool_lines(modes, viz_version, viz_note),
        ]
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        "--quick", action="store_true", help="smaller workloads and 3 rounds: a smoke run"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--modes",
        default=None,
        help=f"comma-separated subset of {','.join(ALL_MODES)} "
        "(untraced, the baseline, is always measured)",
    )
    parser.add_argument(
        "--no-viztracer", action="store_true", help="do not measure (or install) viztracer"
    )
    parser.add_argument(
        "--retry-busy",
        type=int,
        default=0,
        metavar="N",
        help="take a measurement again, up to N times, while other processes "
        f"kept more than {BUSY_CPUS} CPUs busy during it (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the mode order shuffle")
    parser.add_argument("--json", metavar="PATH", help="also write every raw measurement here")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {sorted(WORKLOADS)}")
    unknown = set((args.modes or "untraced").split(",")) - set(ALL_MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(ALL_MODES)}")
    return args


def choose_modes(args, info: dict, viz_version: str | None) -> list[str]:
    wanted = set(args.modes.split(",")) if args.modes else set(ALL_MODES)
    if tuple(info["version_info"]) < (3, 12):
        wanted.discard("rtrace-legacy")  # legacy is the only hook there: the rtrace column
    if not viz_version:
        wanted.discard("viztracer")
    return [m for m in ALL_MODES if m in wanted or m == "untraced"]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    python = args.python
    info = probe(python)
    require_rtrace(python, info)
    viz_wanted = not args.no_viztracer and (not args.modes or "viztracer" in args.modes)
    viz_version, viz_note = ensure_viztracer(python, info, viz_wanted)
    modes = choose_modes(args, info, viz_version)
    size_index = 1 if args.quick else 0
    workloads = [(WORKLOADS[n], WORKLOADS[n].sizes[size_index]) for n in args.workloads.split(",")]

    print(header(args, info, modes, viz_version, viz_note), flush=True)
    started = time.perf_counter()
    cells = measure_all(python, modes, workloads, args)
    elapsed = time.perf_counter() - started
    report(cells, modes, workloads, info, elapsed)
    if args.json:
        dump_json(args.json, cells, info)
    return 1 if any(c.failures for c in cells.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
