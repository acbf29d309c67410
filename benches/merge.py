#!/usr/bin/env python3
"""Collector throughput: offline merge of recorded stream files.

Records PROCESSES Python processes running a call-heavy workload (with
``on_full="block"`` so nothing is dropped) until the stream files hold
``--events`` events in total, then times ``rtrace-collect merge`` on them
(decode, clock mapping, merge, Perfetto encode, write) and prints events per
CPU second (what one core does, whatever else the machine runs) and per
wall second, bytes per event of the streams and of the merged file, and the
merge's peak memory. Medians over ``--repeat`` merges.

    python benches/merge.py --python .venv-3.12/bin/python            # 50 M events
    python benches/merge.py --python .venv-3.12/bin/python --events 5e6 --repeat 1   # quick

``--collect`` may be given more than once (say, the build before a change and
the one after): every collector merges the same recorded files, the runs
interleaved round by round so that a slow spell of a noisy machine hits them
alike. ``--instructions`` also runs each collector once under callgrind
(needs valgrind) and prints the instructions it executes per event, which,
unlike the times, do not depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# fib(22), its calls spread over FUNCTIONS copies of fib (copy k calls copy
# k + 1): with more than 8, most calls are of functions met after the
# first 8, whose event codes take two bytes, as in real programs.
WORKLOAD = """
import sys, rtrace
FUNCTIONS = {functions}
fibs = []
for k in range(FUNCTIONS):
    exec(f"def fib{{k}}(n):\\n"
         f"    f = fibs[{{(k + 1) % FUNCTIONS}}]\\n"
         f"    return n if n < 2 else f(n - 1) + f(n - 2)")
    fibs.append(globals()[f"fib{{k}}"])
target = int(sys.argv[1])
with rtrace.record(session=sys.argv[2], output=sys.argv[3], on_full="block") as rec:
    while rec.events < target:
        fibs[0](22)
print(rec.events, rec.lost)
"""


def record(python: str, directory: Path, processes: int, total: int,
           functions: int = 1) -> list[Path]:
    script = directory / "workload.py"
    script.write_text(WORKLOAD.format(functions=functions))
    per_process = int(total / processes) + 1
    outputs = [directory / f"p{i}.rtrace" for i in range(processes)]
    procs = [subprocess.Popen([python, str(script), str(per_process), f"p{i}", str(out)],
                              stdout=subprocess.PIPE, text=True)
             for i, out in enumerate(outputs)]
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            sys.exit(f"recording failed (exit {p.returncode})")
        events, lost = map(int, out.split())
        if lost:
            sys.exit(f"a recording lost {lost} events; the numbers would be wrong")
    return outputs


# Runs a command and prints its wall time, CPU time (user + system, all its
# threads) and peak RSS (KiB), measured from a fresh parent so that no
# earlier child's peak is counted.
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def merge_once(collect: str, inputs: list[Path], output: Path) -> tuple[float, float, int]:
    command = [collect, "merge", *map(str, inputs), "-o", str(output)]
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def count_events(python: str, paths: list[Path]) -> int:
    code = "import sys, rtrace\nprint(sum(1 for p in sys.argv[1:] for _ in rtrace.read(p)))"
    return int(subprocess.run([python, "-c", code, *map(str, paths)], check=True,
                              capture_output=True, text=True).stdout)


def instructions(collect: str, inputs: list[Path], output: Path) -> int:
    """Instructions the merge executes, counted by callgrind."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               collect, "merge", *map(str, inputs), "-o", str(output)]
    stderr = subprocess.run(command, check=True, capture_output=True, text=True).stderr
    match = re.search(r"Collected : (\d+)", stderr)
    if match is None:
        sys.exit(f"no instruction count in callgrind's output:\n{stderr}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with rtrace")
    parser.add_argument("--collect", action="append",
                        help="the rtrace-collect to time; give it again to compare builds "
                             "(default: $CARGO_TARGET_DIR or target/, release/rtrace-collect)")
    parser.add_argument("--events", type=float, default=50e6, help="events in total (default 50e6)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--functions", type=int, default=1,
                        help="spread the workload's calls over this many functions (default 1: "
                             "one-byte event codes; more than 8: codes of two bytes, as in real "
                             "programs, which a palette per batch brings back to one)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each merge's instructions per event with callgrind")
    args = parser.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    collectors = args.collect or [str(target / "release" / "rtrace-collect")]
    for collect in collectors:
        if not os.path.exists(collect):
            sys.exit(f"{collect} not found: run scripts/dev-setup first")
    with tempfile.TemporaryDirectory(prefix="rtrace-merge-bench-") as tmp:
        directory = Path(tmp)
        print(f"recording {args.events:.3g} events in {args.processes} processes ...", flush=True)
        inputs = record(args.python, directory, args.processes, int(args.events), args.functions)
        events = count_events(args.python, inputs)
        in_bytes = sum(p.stat().st_size for p in inputs)
        output = directory / "merged.pftrace"
        runs: dict[str, list[tuple[float, float, int]]] = {c: [] for c in collectors}
        out_bytes = {}
        for _ in range(args.repeat):
            for collect in collectors:
                runs[collect].append(merge_once(collect, inputs, output))
                out_bytes[collect] = output.stat().st_size
        counted = {c: instructions(c, inputs, output) for c in collectors} if args.instructions else {}
        print()
        print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
        print(f"{events:,} events; medians of {args.repeat}; events/s per CPU second is what one "
              "core does (the wall time includes waiting for the CPU on a busy machine)")
        width = max(len("collector"), *map(len, collectors)) + 1
        print(f"{'collector':<{width}} {'wall s':>8} {'CPU s':>8} {'events/CPU s':>13} {'events/wall s':>14} "
              f"{'stream B/ev':>12} {'pftrace B/ev':>13} {'peak RSS MB':>12}"
              + (f" {'instr/ev':>9}" if counted else ""))
        for collect in collectors:
            seconds = statistics.median(r[0] for r in runs[collect])
            cpu = statistics.median(r[1] for r in runs[collect])
            rss = max(r[2] for r in runs[collect]) / 1024
            print(f"{collect:<{width}} {seconds:>8.2f} {cpu:>8.2f} {events / cpu:>13.3g} "
                  f"{events / seconds:>14.3g} {in_bytes / events:>12.2f} "
                  f"{out_bytes[collect] / events:>13.2f} {rss:>12.0f}"
                  + (f" {counted[collect] / events:>9.1f}" if counted else ""))
        for collect in collectors:
            for i, (wall, cpu_s, rss) in enumerate(runs[collect]):
                print(f"{collect} run {i + 1}: {wall:.2f} s wall, {cpu_s:.2f} s CPU, {rss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
