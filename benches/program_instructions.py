#!/usr/bin/env python3
"""Instructions the traced thread executes per event, rtrace beside the floor.

benches/overhead.py times each workload under rtrace and under the
stamp+store floor hook (benches/floor_hooks.c), but on this shared machine
single rows move by ±30 % between runs, more than the gap it looks for.
This counts instead, with callgrind, every instruction the thread running
the workload executes (the interpreter, the hook, the buffer hand-over; not
rtrace's writer thread, which runs beside it) per call or return event:

  untraced   the workload alone (no hook)
  floor      the stamp+store floor (reads the TSC, stores 16 bytes)
  rtrace     rtrace.record(output=FILE) with its defaults

for each workload at two sizes, the larger minus the smaller, so that
start-up and teardown cancel out. The counter's rough rate measured at the
first start (`clock::rough_rate`, 50 µs of clock reads: a different number
of rounds each run; quanta's calibration where the TSC is not read
directly) is left out by name. Deterministic otherwise
(PYTHONHASHSEED=0), so it shows where rtrace stands against the floor,
workload by workload, whatever else the machine does. Instructions are not
time: a cache miss or the TSC read costs more than one; wall time is
benches/overhead.py's job.

    python benches/program_instructions.py --python .venv-3.12/bin/python
    python benches/program_instructions.py --python .venv-3.11/bin/python --workloads fib,richards

Needs valgrind; the floor is built for the interpreter by benches/floor.py.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHES = Path(__file__).resolve().parent

# workload: (smaller size, larger size), so that under callgrind (~50x
# slower) each run takes seconds, and the difference is 0.1-1 M events.
SIZES = {
    "fib": (20, 23),
    "methods": (20_000, 60_000),
    "richards": (1, 2),
    "deltablue": (100, 300),
    "raytrace": (8, 16),
}
MODES = ("untraced", "floor", "rtrace")

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[4])
import overhead_workloads
mode, name, size, floor_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
run = overhead_workloads.runner(name)
events = None
if mode == "untraced":
    run(size)
elif mode == "floor":
    from floor import Floor
    mechanism = "monitoring" if sys.version_info >= (3, 12) else "profile"
    floor = Floor("stamp", mechanism, floor_dir).start()
    run(size)
    floor.stop()
    events = floor.events
else:
    import rtrace
    # flush_interval=60: under valgrind a run is ~50x slower, and handing
    # over partly filled buffers on age would make the count depend on
    # the run's speed. buffer_events: valgrind runs one thread at a time,
    # and a writer that falls behind must not make the hook drop events
    # (a cheaper path): the queue holds every event of these runs.
    with rtrace.record(output=sys.argv[6], flush_interval=60, buffer_events=1 << 22) as rec:
        run(size)
    events = rec.events
    if rec.lost:
        sys.exit(f"rtrace lost {rec.lost} events: the count would not be of recording them all")
print(json.dumps({"events": events}))
"""

# Left out of the counts: measuring the counter's rate (a different length
# each run).
NOT_COUNTED = re.compile(r"quanta|[Cc]alibrat|clock_gettime")
LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$")


def traced_thread_instructions(out_prefix: str) -> int:
    """Instructions of the first thread (the one running the workload) in
    a `--separate-threads=yes` callgrind profile, but those left out."""
    profile = out_prefix + "-01"
    if not os.path.exists(profile):
        raise SystemExit(f"no callgrind profile {profile}")
    report = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--tree=none", "--auto=no", "--threshold=100",
         profile],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    total = 0
    for line in report.splitlines():
        found = LINE.match(line)
        if not found or "PROGRAM TOTALS" in line:
            continue
        if not NOT_COUNTED.search(found.group(2)):
            total += int(found.group(1).replace(",", ""))
    return total


def count(python: str, mode: str, workload: str, size: int, tmp: str, floor_dir: str) -> tuple[int, int | None]:
    """(instructions of the traced thread, events recorded or None)."""
    prefix = os.path.join(tmp, f"cg-{mode}-{workload}-{size}")
    cmd = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={prefix}",
        python, "-c", CHILD, mode, workload, str(size), str(BENCHES), floor_dir,
        os.path.join(tmp, "out.rtrace"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("RTRACE_HOOK", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"callgrind run failed ({proc.returncode}): {' '.join(cmd[:8])} ...\n"
                         f"{proc.stderr[-2000:]}")  # fmt: skip
    events = json.loads(proc.stdout.strip().splitlines()[-1])["events"]
    instructions = traced_thread_instructions(prefix)
    for path in glob.glob(prefix + "*"):
        os.unlink(path)
    return instructions, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with rtrace")
    parser.add_argument("--workloads", default=",".join(SIZES),
                        help=f"comma-separated subset of {','.join(SIZES)}")  # fmt: skip
    parser.add_argument("--sizes", metavar="SMALL,LARGE",
                        help="the two sizes of every workload asked for (default: per workload)")  # fmt: skip
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    sizes = dict(SIZES)
    if args.sizes:
        try:
            small, large = (int(v) for v in args.sizes.split(","))
        except ValueError:
            parser.error(f"--sizes takes two integers, SMALL,LARGE (e.g. 16,18), not {args.sizes!r}")
        if not 0 < small < large:
            parser.error(f"--sizes: SMALL must be positive and below LARGE, not {args.sizes!r}")
        sizes = {w: (small, large) for w in SIZES}
    unknown = [w for w in workloads if w not in SIZES]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(SIZES)}")
    for tool in ("valgrind", "callgrind_annotate"):
        if not shutil.which(tool):
            print(f"benches/program_instructions.py needs {tool} (apt-get install valgrind)",
                  file=sys.stderr)  # fmt: skip
            return 2
    version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    hook = "sys.monitoring" if tuple(map(int, version.split(".")[:2])) >= (3, 12) else "profile hook"
    print(f"command: python {' '.join(sys.argv)}")
    print(f"python {version} ({hook}); instructions of the traced thread per call or return event "
          "(larger size minus smaller), callgrind")  # fmt: skip
    print(f"{'workload':<22} {'events':>9} {'untraced':>9} {'floor':>9} {'rtrace':>9} "
          f"{'rtrace - floor':>15} {'rtrace / floor':>15}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rtrace-instr-") as tmp:
        floor_dir = os.path.join(tmp, "floor")
        subprocess.run([args.python, str(BENCHES / "floor.py"), floor_dir], check=True,
                       capture_output=True)  # fmt: skip
        for workload in workloads:
            small, large = sizes[workload]
            per_event = {}
            events = None
            for mode in ("floor", "rtrace", "untraced"):
                i_small, e_small = count(args.python, mode, workload, small, tmp, floor_dir)
                i_large, e_large = count(args.python, mode, workload, large, tmp, floor_dir)
                if mode == "floor":
                    events = e_large - e_small
                elif mode == "rtrace" and e_large - e_small != events:
                    # Per event, both must count the same events.
                    raise SystemExit(f"{workload}: rtrace recorded {e_large - e_small} events, "
                                     f"the floor {events}")  # fmt: skip
                per_event[mode] = (i_large - i_small) / events
            floor, rtrace = per_event["floor"], per_event["rtrace"]
            label = f"{workload}({small}->{large})"
            print(f"{label:<22} {events:>9,} {per_event['untraced']:>9.1f} {floor:>9.1f} "
                  f"{rtrace:>9.1f} {rtrace - floor:>+15.1f} {rtrace / floor:>14.3f}x",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
