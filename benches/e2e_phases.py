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
teardown, which no reader of the file waits for). A last row, ``waited``,
is how long the traced thread waited for a CPU during the in-run phase
(``/proc/self/task/TID/schedstat``): the collector's threads, woken on its
core, are what it waits for. It prints each phase's median, fastest and
slowest, and what the collector path adds to each over the file's. Issue
8's "30x ahead of VizTracer's JSON to the merged file" is decided by these
few milliseconds on the rows nearest the line (README, "30x ahead of
VizTracer's JSON end to end").

With ``--collector-cpus LIST``, a third path streams to a collector started
under ``taskset -c LIST``: a collector with a core of its own, which on the
2-core development machine halved the traced thread's median wait but
lengthened its tail, and is not advised (README, "Until the merged file is
complete, not until the collector's exit")::

    .venv-3.13/bin/python benches/e2e_phases.py --workload deltablue --size 2000 --rounds 15 \
        --collector-cpus 1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from overhead_child import waited_for_cpu  # noqa: E402
from overhead_measure import LiveCollector  # noqa: E402
from overhead_setup import find_collector  # noqa: E402
from overhead_workloads import not_in_one_interpreter, runner  # noqa: E402

PHASES = ("start", "in-run", "stop", "file", "exit", "waited")


def chunk(work, size: int, directory: str, collect: list[str] | None) -> dict[str, float]:
    """One chunk's phases in seconds: to a file, or (with `collect`) to a
    fresh collector, whose end is timed too."""
    import rtrace

    collector = LiveCollector(collect, directory) if collect else None
    extra = {"collector": collector.address} if collector else {}
    t0 = time.perf_counter()
    rec = rtrace.record(session="phases", output=os.path.join(directory, "s.rtrace"),
                        follow_children=False, **extra).start()  # fmt: skip
    waited0, _ = waited_for_cpu()
    t1 = time.perf_counter()
    work(size)
    t2 = time.perf_counter()
    waited1, _ = waited_for_cpu()
    rec.stop()
    t3 = time.perf_counter()
    phases = {"start": t1 - t0, "in-run": t2 - t1, "stop": t3 - t2,
              "waited": (waited1 - waited0) / 1e9}  # fmt: skip
    if collector is not None:
        signalled_ns = time.monotonic_ns()
        collected = collector.finish()
        phases["file"] = (collected["merged_ns"] - signalled_ns) / 1e9
        phases["exit"] = (collected["exited_ns"] - collected["merged_ns"]) / 1e9
    if rec.lost:
        phases["lost"] = rec.lost
    return phases


def pinned(cpus: str, collect: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`collect` run under ``taskset -c cpus``; a usage error if taskset is
    missing or refuses the list."""
    taskset = shutil.which("taskset")
    if taskset is None:
        parser.error("--collector-cpus needs taskset (util-linux), which is not on PATH")
    check = subprocess.run([taskset, "-c", cpus, "true"], capture_output=True, text=True)
    if check.returncode != 0:
        parser.error(f"--collector-cpus {cpus}: taskset says: {check.stderr.strip()}")
    return [taskset, "-c", cpus, *collect]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="richards",
                        help="from benches/overhead_workloads.py (default: richards)")
    parser.add_argument("--size", type=int, default=2, help="the workload's size (default 2)")
    parser.add_argument("--rounds", type=int, default=12, help="measured rounds (default 12)")
    parser.add_argument("--collect", metavar="PATH",
                        help="the rtrace-collect to run (default: target/release/rtrace-collect, "
                             "else the interpreter's rtrace-collect script)")
    parser.add_argument("--collector-cpus", metavar="LIST",
                        help="also stream to a collector pinned to these CPUs "
                             "(taskset -c LIST, e.g. 1 or 2-3)")
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
    paths = {"file": None, "collector": collect}
    if args.collector_cpus is not None:
        paths[f"collector on CPUs {args.collector_cpus}"] = pinned(args.collector_cpus, collect,
                                                                   parser)  # fmt: skip
    work = runner(args.workload)
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
    # One column per path, each collector's followed by what it adds to
    # the phase over the file's (medians).
    labels = [f"to {'a file' if path == 'file' else 'the ' + path}: median [min-max] ms"
              for path in paths]  # fmt: skip
    widths = [len(label) + 2 for label in labels]
    header = [f"{'phase':8s}"]
    for path, label, width in zip(paths, labels, widths):
        header.append(f"{label:>{width}s}")
        if path != "file":
            header.append(f"{'added':>9s}")
    print(" ".join(header))
    for phase in PHASES:
        row, medians = [f"{phase:8s}"], {}
        for path, width in zip(paths, widths):
            values = [v * 1e3 for v in phases[path].get(phase, [])]
            medians[path] = statistics.median(values) if values else 0.0
            cell = f"{medians[path]:.2f} [{min(values):.2f}-{max(values):.2f}]" if values else "-"
            row.append(f"{cell:>{width}s}")
            if path != "file":
                row.append(f"{medians[path] - medians['file']:+9.2f}")
        print(" ".join(row))
    if lost:
        print(f"rtrace lost {lost:,} events (the chunks' times include that)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
