"""rtrace at several flush ticks, by paired chunks in this interpreter.

Run it with the interpreter to measure, e.g.::

    .venv-3.13/bin/python benches/flush_ticks.py --workload threads --size 27 --rounds 10

Every round runs one chunk of the workload untraced, under the stamp+store
floor hook, and under rtrace writing a stream file with each of the given
flush ticks (``--ticks``, seconds), in a shuffled order. Per mode it prints
the median chunk time, the median of the rounds' ratios to the floor's
chunk, and how many chunks lost events (with the most lost in one). A tick
longer than a chunk never fires within it: the difference to it is what the
tick costs. This is how the writer that waited for the GIL at every tick
was found losing events (README, "The flush tick no longer stalls the
writer").
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import floor  # noqa: E402
from overhead_child import FloorHook, Rtrace, Tool  # noqa: E402
from overhead_workloads import not_in_one_interpreter, runner  # noqa: E402


class Ticked(Rtrace):
    """rtrace to a stream file with the flush tick in ``spec["tick"]``."""

    def start(self) -> None:
        import rtrace

        self.rec = rtrace.record(session="ticks", output=self.out + ".rtrace",
                                 follow_children=False, flush_interval=self.spec["tick"])
        self.rec.start()


def parse_ticks(text: str) -> list[float]:
    try:
        ticks = [float(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated seconds") from None
    if not ticks or any(not 0.001 <= t <= 60 for t in ticks):
        raise argparse.ArgumentTypeError(f"ticks must be between 0.001 and 60 seconds: {text!r}")
    return ticks


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="threads",
                        help="from benches/overhead_workloads.py (default: threads)")
    parser.add_argument("--size", type=int, default=27, help="the workload's size (default 27)")
    parser.add_argument("--ticks", type=parse_ticks, default=[0.02, 0.1, 1.0],
                        help="flush ticks in seconds, comma-separated (default: 0.02,0.1,1)")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds (default 10)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    if (why := not_in_one_interpreter(args.workload)) is not None:
        parser.error(why)
    work = runner(args.workload)

    tmp = tempfile.mkdtemp(prefix="rtrace-ticks-")
    floor.build(tmp)
    tools = {
        "untraced": Tool({"mode": "untraced"}, os.path.join(tmp, "u"), "ticks"),
        "floor": FloorHook({"mode": "floor-stamp", "floor_dir": tmp}, os.path.join(tmp, "f"),
                           "ticks"),
    }
    for i, tick in enumerate(args.ticks):
        tools[f"tick {tick:g} s"] = Ticked({"mode": "rtrace", "tick": tick},
                                           os.path.join(tmp, f"t{i}"), "ticks")
    for tool in tools.values():
        tool.prepare()
    times: dict[str, list[float]] = {name: [] for name in tools}
    lost: dict[str, list[int]] = {name: [] for name in tools}
    rng = random.Random(1)
    for r in range(args.rounds + 1):  # the first round warms up
        order = list(tools)
        rng.shuffle(order)
        for name in order:
            tool = tools[name]
            tool.start()
            t0 = time.perf_counter()
            work(args.size)
            t1 = time.perf_counter()
            tool.stop()
            if isinstance(tool, Rtrace):
                os.unlink(tool.out + ".rtrace")
                if r:
                    lost[name].append(tool.rec.lost)
            if r:
                times[name].append(t1 - t0)
        gc.collect()

    print(f"{args.workload}({args.size}), {args.rounds} rounds, Python "
          f"{sys.version.split()[0]}")
    print(f"{'mode':12s} {'median ms':>10s} {'/ floor':>8s}  chunks that lost events")
    for name in tools:
        ratios = [a / b for a, b in zip(times[name], times["floor"])]
        losing = [n for n in lost[name] if n]
        lost_text = (f"{len(losing)} of {len(lost[name])} (at most {max(losing):,})" if losing
                     else (f"0 of {len(lost[name])}" if lost[name] else "-"))
        print(f"{name:12s} {statistics.median(times[name]) * 1e3:10.1f} "
              f"{statistics.median(ratios):7.3f}x  {lost_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
