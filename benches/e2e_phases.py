"""Where rtrace's end-to-end time goes, to its own file and to a collector's
merged file, phase by phase, in this interpreter.

Run it with the interpreter to measure, e.g.::

    .venv-3.13/bin/python benches/e2e_phases.py --workload deltablue --size 2000 --rounds 12

Every round runs one chunk of the workload under rtrace writing a stream
file, and one streaming to a fresh ``rtrace-collect --listen`` (started
before the chunk, not timed), in a shuffled order, and times each phase:
``start`` (``record().start()``), ``in-run`` (the workload), ``stop``
(until ``stop()`` returns: the stream file closed, or the collector has
read the stream's end) and, for the collector, ``file`` (from SIGINT until
the collector says it has written the merged file: the file is complete)
and ``exit`` (from then until the collector process has exited: its
teardown, which no reader of the file waits for). It prints each phase's
median, fastest and slowest, and what the collector path adds to each over
the file's. Issue 8's "30x ahead of VizTracer's JSON to the merged file"
is decided by these few milliseconds on the rows nearest the line (README,
"30x ahead of VizTracer's JSON end to end").
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from overhead_measure import LiveCollector  # noqa: E402
from overhead_setup import find_collector  # noqa: E402
from overhead_workloads import not_in_one_interpreter, runner  # noqa: E402

PHASES = ("start", "in-run", "stop", "file", "exit")


def chunk(work, size: int, directory: str, collect: list[str] | None) -> dict[str, float]:
    """One chunk's phases in seconds: to a file, or (with `collect`) to a
    fresh collector, whose end is timed too."""
    import rtrace

    collector = LiveCollector(collect, directory) if collect else None
    extra = {"collector": collector.address} if collector else {}
    t0 = time.perf_counter()
    rec = rtrace.record(session="phases", output=os.path.join(directory, "s.rtrace"),
                        follow_children=False, **extra).start()  # fmt: skip
    t1 = time.perf_counter()
    work(size)
    t2 = time.perf_counter()
    rec.stop()
    t3 = time.perf_counter()
    phases = {"start": t1 - t0, "in-run": t2 - t1, "stop": t3 - t2}
    if collector is not None:
        signalled_ns = time.monotonic_ns()
        collected = collector.finish()
        phases["file"] = (collected["merged_ns"] - signalled_ns) / 1e9
        phases["exit"] = (collected["exited_ns"] - collected["merged_ns"]) / 1e9
    if rec.lost:
        phases["lost"] = rec.lost
    return phases


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="richards",
                        help="from benches/overhead_workloads.py (default: richards)")
    parser.add_argument("--size", type=int, default=2, help="the workload's size (default 2)")
    parser.add_argument("--rounds", type=int, default=12, help="measured rounds (default 12)")
    parser.add_argument("--collect", metavar="PATH",
                        help="the rtrace-collect to run (default: target/release/rtrace-collect, "
                             "else the interpreter's rtrace-collect script)")
    args = parser.parse_args(argv)  # fmt: skip
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    if args.size < 1:
        parser.error(f"--size must be at least 1, not {args.size}")
    if (why := not_in_one_interpreter(args.workload)) is not None:
        parser.error(why)
    try:
        collect = find_collector(sys.executable, args.collect)
    except SystemExit as exc:
        parser.error(str(exc).replace("overhead.py: ", ""))
    if collect is None:
        parser.error("no rtrace-collect: build it (cargo build --release -p rtrace-collect) "
                     "or name it with --collect")
    work = runner(args.workload)
    paths = {"file": None, "collector": collect}
    phases: dict[str, dict[str, list[float]]] = {path: {} for path in paths}
    lost = 0
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="rtrace-phases-") as tmp:
        for r in range(args.rounds + 1):  # the first round warms up
            order = list(paths)
            rng.shuffle(order)
            for path in order:
                directory = tempfile.mkdtemp(dir=tmp)
                timed = chunk(work, args.size, directory, paths[path])
                shutil.rmtree(directory)
                lost += int(timed.pop("lost", 0))
                if r:
                    for phase, seconds in timed.items():
                        phases[path].setdefault(phase, []).append(seconds)

    print(f"{args.workload}({args.size}), {args.rounds} rounds, Python "
          f"{sys.version.split()[0]}, collector {collect[-1]}")
    print(f"{'phase':8s} {'to a file: median [min-max] ms':>32s} "
          f"{'to the collector: median [min-max] ms':>40s} {'added':>9s}")
    for phase in PHASES:
        cells, medians = [], []
        for path in paths:
            values = [v * 1e3 for v in phases[path].get(phase, [])]
            if values:
                medians.append(statistics.median(values))
                cells.append(f"{medians[-1]:.2f} [{min(values):.2f}-{max(values):.2f}]")
            else:
                medians.append(0.0)
                cells.append("-")
        print(f"{phase:8s} {cells[0]:>32s} {cells[1]:>40s} {medians[1] - medians[0]:+8.2f}")
    if lost:
        print(f"rtrace lost {lost:,} events (the chunks' times include that)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
