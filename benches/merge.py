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
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = """
import sys, rtrace
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
target = int(sys.argv[1])
with rtrace.record(session=sys.argv[2], output=sys.argv[3], on_full="block") as rec:
    while rec.events < target:
        fib(22)
print(rec.events, rec.lost)
"""


def record(python: str, directory: Path, processes: int, total: int) -> list[Path]:
    script = directory / "workload.py"
    script.write_text(WORKLOAD)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with rtrace")
    parser.add_argument("--collect", default=str(ROOT / "target/release/rtrace-collect"))
    parser.add_argument("--events", type=float, default=50e6, help="events in total (default 50e6)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(args.collect):
        sys.exit(f"{args.collect} not found: run scripts/dev-setup first")
    with tempfile.TemporaryDirectory(prefix="rtrace-merge-bench-") as tmp:
        directory = Path(tmp)
        print(f"recording {args.events:.3g} events in {args.processes} processes ...", flush=True)
        inputs = record(args.python, directory, args.processes, int(args.events))
        events = count_events(args.python, inputs)
        in_bytes = sum(p.stat().st_size for p in inputs)
        output = directory / "merged.pftrace"
        runs = [merge_once(args.collect, inputs, output) for _ in range(args.repeat)]
        seconds = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        out_bytes = output.stat().st_size
        print()
        print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
        print(f"medians of {args.repeat}; events/s per CPU second is what one core does "
              "(the wall time includes waiting for the CPU on a busy machine)")
        print(f"{'events':>12} {'wall s':>8} {'CPU s':>8} {'events/CPU s':>13} {'events/wall s':>14} "
              f"{'stream B/ev':>12} {'pftrace B/ev':>13} {'peak RSS MB':>12}")
        print(f"{events:>12} {seconds:>8.2f} {cpu:>8.2f} {events / cpu:>13.3g} {events / seconds:>14.3g} "
              f"{in_bytes / events:>12.2f} {out_bytes / events:>13.2f} {max(r[2] for r in runs) / 1024:>12.0f}")
        for i, (wall, cpu_s, rss) in enumerate(runs):
            print(f"run {i + 1}: {wall:.2f} s wall, {cpu_s:.2f} s CPU, {rss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
