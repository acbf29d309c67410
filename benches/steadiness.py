#!/usr/bin/env python3
"""Is this machine steady enough to benchmark on?

Runs untraced fib, each time in a fresh process as benches/overhead.py
does, with that harness's speed probe (a fixed loop, timed in this process)
just before and after each run, and prints:

- how far the runs spread (fastest, median, slowest): every ratio that
  benches/overhead.py prints is a ratio of such medians;
- how far the probes spread;
- Spearman's rank correlation between each run's slower probe and the run:
  how well a probe around a run tells a run slowed by the machine, which is
  what ``overhead.py --retry-busy`` relies on (1: perfectly; 0: not at all).

    python benches/steadiness.py --python .venv-3.12/bin/python
    python benches/steadiness.py --python .venv-3.12/bin/python --runs 80 --size 28

Where the runs spread by more than a few percent, so will the rows of
benches/overhead.py. On the project's 2-core VM the slowest run took 1.9-2.7
times the fastest, and the probe caught only some of the slow ones (README,
Performance).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from overhead_measure import speed_probe
from overhead_report import SLOW_PROBE

BENCHES = Path(__file__).resolve().parent
CHILD = f"""
import sys, time
sys.path.insert(0, {str(BENCHES)!r})
from overhead_workloads import fib
t = time.perf_counter()
fib(int(sys.argv[1]))
print(time.perf_counter() - t)
"""


def run_once(python: str, size: int) -> tuple[float, float]:
    """(the slower probe around the run, the run's seconds)."""
    before = speed_probe()
    proc = subprocess.run([python, "-c", CHILD, str(size)], capture_output=True, text=True)
    after = speed_probe()
    if proc.returncode != 0:
        sys.exit(f"steadiness.py: {python} failed:\n{proc.stderr[-2000:]}")
    return max(before, after), float(proc.stdout)


def ranks(values: list[float]) -> list[int]:
    order = sorted(range(len(values)), key=values.__getitem__)
    result = [0] * len(values)
    for rank, index in enumerate(order):
        result[index] = rank
    return result


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties ranked by order)."""
    n = len(xs)
    d2 = sum((a - b) ** 2 for a, b in zip(ranks(xs), ranks(ys)))
    return 1 - 6 * d2 / (n * (n * n - 1))


def spread(label: str, values: list[float]) -> str:
    ms = sorted(v * 1e3 for v in values)
    return (f"{label}: fastest {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
            f"slowest {ms[-1]:.1f} ms ({ms[-1] / ms[0]:.2f}x the fastest)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="How steady this machine is: the spread of untraced runs, and how well "
        "benches/overhead.py's speed probe tells the slowed ones.",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter to run fib with")
    parser.add_argument("--runs", type=int, default=40, help="runs, each a fresh process (40)")
    parser.add_argument("--size", type=int, default=27, help="fib(SIZE) per run (27)")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error(f"--runs must be at least 3, not {args.runs}")
    if not 1 <= args.size <= 40:
        parser.error(f"--size must be between 1 and 40, not {args.size}")

    pairs = [run_once(args.python, args.size) for _ in range(args.runs)]
    probes, runs = [p for p, _ in pairs], [r for _, r in pairs]
    median_probe = statistics.median(probes)
    slow = [r for p, r in pairs if p > SLOW_PROBE * median_probe]
    kept = [r for p, r in pairs if p <= SLOW_PROBE * median_probe]
    print(f"{args.runs} runs of untraced fib({args.size}) with {args.python}, "
          f"each in a fresh process")  # fmt: skip
    print(spread("runs", runs))
    print(spread("speed probes", probes))
    print(f"probe-run rank correlation (Spearman): {spearman(probes, runs):.2f}")
    if slow:
        runs_had = "1 run had" if len(slow) == 1 else f"{len(slow)} runs had"
        print(f"{runs_had} a probe over {SLOW_PROBE}x the median probe "
              f"(what --retry-busy takes again): median {statistics.median(slow) * 1e3:.1f} ms, "
              f"against {statistics.median(kept) * 1e3:.1f} ms for the others")  # fmt: skip
    else:
        print(f"no run had a probe over {SLOW_PROBE}x the median probe")


if __name__ == "__main__":
    main()
