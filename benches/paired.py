#!/usr/bin/env python3
"""In-run overhead by paired chunks: one interpreter, the modes taking turns
every few milliseconds, each mode's time divided by the untraced time of
the same round.

Why: this VM's speed wanders by tens of percent from one run to the next
(benches/steadiness.py), so the fresh-process medians of overhead.py cannot
tell 1.08x of the floor from 1.12x. Two runs of the same code a few
milliseconds apart, though, agree to a few percent: whatever slows the
machine slows both. So here every round runs a short chunk of the workload
once per mode (untraced, untraced again, the stamp+store floor, rtrace,
VizTracer), in a shuffled order, and each mode's ratio is its chunk's time
over the round's untraced chunk. The median of those per-round ratios, with
a 95 % bootstrap interval, decides issue 8's in-run goals for the phase the
machine was in: its slow phases move the tools' costs apart too, so a run
in another phase can decide otherwise. "Untraced again" (1.00x but for
noise) checks the run; a workload where it misses 1.00x or spans more than
10 % is flagged, to be taken again. So is a workload whose thread waited
for a CPU (other processes kept the machine busy) for more than 1 % of a
chunk in more than 10 % of a mode's chunks (the threads workload aside,
whose own threads wait for the cores): that load moves the modes apart,
as rtrace's writer then takes its time from the traced thread's core.

The rounds are shared among a few fresh interpreters (--processes), whose
times are pooled: a ratio also moves by a few percent from one process to
the next (its memory layout), which one interpreter alone would hide.

Each chunk starts the tool, times the workload alone, and stops it (the
start and the stop, rtrace's writing of its file among them, are not
timed: this is the in-run cost only). A chunk is short, so it is not the
fresh-process run's measurement: every tool starts warm (caches, the
interpreter's specializations), and a sys.monitoring tool re-instruments
the code it meets at every start, rtrace and the floor alike. rtrace
writes a stream file per chunk, which is removed; VizTracer's buffer is
sized from the floor's event count and its trace is discarded.

With the rtrace-collector mode, each chunk streams to a fresh
rtrace-collect (started before the chunk), and the chunk's end-to-end time,
from rtrace's start until the merged file is complete (the collector says
it has written it, after Ctrl-C), is judged against the floor's in-run time
(issue 8's 20 %). That wants longer chunks (--sizes), whose fixed costs
(start, stop, the collector finishing the file: a few milliseconds) would
otherwise weigh more than in a program's whole run.

With the viztracer-json mode, VizTracer saves its default JSON after each
chunk, and its end-to-end time (from its start until the JSON is saved) is
set against rtrace's, to rtrace's file (the rtrace mode: from its start
until its stream file is complete) and to the merged file (rtrace-collector):
issue 8's "30x faster end to end". VizTracer's save grows faster than the
events do, so that goal is only measured at the workloads' full sizes
(fib=30, methods=1000000: 5-20 s of saving a chunk); the goal is left out
where VizTracer's JSON end to end is under 30x the floor's in-run, as no
recorder could be 30x ahead of it there:

    .venv-3.12/bin/python benches/paired.py --workloads fib,methods \\
        --sizes fib=30,methods=1000000 --warmup 1 --rounds 10 --processes 2 \\
        --modes floor-stamp,rtrace,rtrace-collector,viztracer-json

Run it with the interpreter to measure (VizTracer is measured if that
interpreter can import it):

    .venv-3.12/bin/python benches/paired.py
    .venv-3.12/bin/python benches/paired.py --workloads fib,richards --rounds 100
    .venv-3.12/bin/python benches/paired.py --workloads fib --sizes fib=27 \\
        --modes untraced-again,floor-stamp,rtrace,rtrace-collector --rounds 120 --processes 4

and the full-size command above for the end-to-end goal against VizTracer's JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # noqa: E402
from overhead_child import FloorHook, Rtrace, Tool, VizTracer, waited_for_cpu  # noqa: E402
from overhead_goals import (  # noqa: E402
    E2E_OVER_FLOOR,
    IN_RUN_OVER_FLOOR,
    VIZ_E2E,
    VIZ_IN_RUN_312,
    Ratio,
    no_room,
)
from overhead_measure import LiveCollector  # noqa: E402
from overhead_report import table  # noqa: E402
from overhead_setup import find_collector  # noqa: E402
from overhead_workloads import WORKLOADS, runner  # noqa: E402

# Chunk sizes: 5-60 ms untraced on this machine, short enough that the
# machine's speed holds across a round, long enough for the timer. Threads:
# 4 x fib(25), ~2 M events a chunk, more than the recorder's queue holds,
# so a writer that stops draining (as one waiting for the GIL once did)
# loses events, which the goals report names.
CHUNKS = {"fib": 24, "methods": 50_000, "threads": 25, "richards": 1, "deltablue": 200,
          "nbody": 1_000, "raytrace": 16}  # fmt: skip
# "untraced-again": a second untraced chunk per round, whose ratio (1.00x
# but for noise) shows how far this method can be trusted on the day.
# "rtrace-collector": streaming to a fresh rtrace-collect per chunk, started
# before the chunk; besides its in-run time, its end-to-end time (from
# rtrace's start until the collector says the merged file is written; its
# process's teardown after that is not waited for) is kept as
# "rtrace-collector e2e".
# "viztracer-json": VizTracer saving its default JSON after every chunk;
# its end-to-end time (from its start until the JSON is saved) is kept as
# "viztracer-json e2e", and rtrace's (until its stream file is complete)
# as "rtrace e2e".
MODES = ("untraced", "untraced-again", "floor-stamp", "rtrace", "viztracer", "rtrace-collector",
         "viztracer-json")  # fmt: skip
DEFAULT_MODES = MODES[1:5]
VIZTRACER_MODES = ("viztracer", "viztracer-json")
# The modes whose end-to-end time is kept, under "<mode> e2e".
E2E_MODES = ("rtrace", "rtrace-collector", "viztracer-json")
WARMUP_ROUNDS = 2
# An "untraced again" whose interval misses 1.00x, or is wider than this,
# says the machine was not steady enough for the workload's verdicts.
UNSTEADY_WIDTH = 0.10
# A chunk whose thread running the workload waited for a CPU longer than
# this share of it ran on a machine busy with other processes. That moves
# the modes apart, not together: rtrace's writer thread then takes its CPU
# time from the traced thread's core, which the floor and VizTracer (no
# thread of their own) do not. With one core kept
# busy by another process, rtrace/floor went from 1.03x to 1.15x on 3.13
# richards while the traced thread waited 7 % of each rtrace chunk (0 %
# on the quiet machine). rtrace-collector is not judged by it: there the
# collector's own threads are what the traced thread waits for.
BUSY_WAIT = 0.01
# ... in more than this share of its chunks.
BUSY_ROUNDS = 0.1
WAIT_JUDGED = ("untraced", "untraced-again", "floor-stamp", "rtrace", "viztracer")
# Workloads whose own threads wait for the cores (4 threads on this 2-core
# machine): their waits say nothing of other processes.
OWN_THREADS = ("threads",)


def parse_list(text: str, known, what: str) -> list[str]:
    items = [x for x in text.split(",") if x]
    unknown = [x for x in items if x not in known]
    if unknown:
        choices = ", ".join(known)
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {choices}")
    return items


def parse_sizes(text: str) -> dict[str, int]:
    sizes = {}
    for item in filter(None, text.split(",")):
        workload, _, number = item.partition("=")
        if workload not in CHUNKS or not number.isdigit() or int(number) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not WORKLOAD=N with a workload from {', '.join(CHUNKS)} and N >= 1"
            )
        sizes[workload] = int(number)
    return sizes


def has_viztracer() -> bool:
    try:
        import viztracer  # noqa: F401
    except ImportError:
        return False
    return True


class Chunked:
    """One mode's tool, started and stopped around every chunk."""

    def __init__(self, mode: str, tmp: str, floor_dir: str, collect: list[str] | None) -> None:
        self.mode = mode
        self.out = os.path.join(tmp, mode)
        self.tmp, self.collect = tmp, collect
        spec = {"mode": mode, "floor_dir": floor_dir, "viztracer_entries": 1 << 20}
        kinds = {"untraced": Tool, "untraced-again": Tool, "floor-stamp": FloorHook,
                 "rtrace": Rtrace, "viztracer": VizTracer, "rtrace-collector": Rtrace,
                 "viztracer-json": VizTracer}  # fmt: skip
        self.tool = kinds[mode](spec, self.out, "paired")
        self.tool.prepare()
        self.lost = 0
        self.e2e: list[float] = []
        # Per chunk: the share of it the workload's thread waited for a CPU.
        self.waits: list[float] = []

    def size_for(self, events: int) -> None:
        """Gives VizTracer room for a chunk's events (it drops nothing)."""
        if isinstance(self.tool, VizTracer):
            self.tool.spec["viztracer_entries"] = max(1 << 16, int(events * 1.25))

    def run(self, work, size: int) -> float:
        collector = None
        if self.mode == "rtrace-collector":
            directory = tempfile.mkdtemp(dir=self.tmp)
            collector = LiveCollector(self.collect, directory)
            self.tool.spec["collector"] = collector.address
        # Read outside the tool's recording, as overhead_child does.
        waited_ns, _ = waited_for_cpu()
        started = time.perf_counter()
        self.tool.start()
        t0 = time.perf_counter()
        work(size)
        t1 = time.perf_counter()
        self.tool.stop()
        self.waits.append((waited_for_cpu()[0] - waited_ns) / 1e9 / (t1 - t0))
        # Like overhead.py's e2e: from the tool's start until its output is
        # complete: rtrace's stream file (closed by its stop), the merged
        # file (written, as the collector says), VizTracer's JSON (saved).
        # (perf_counter and monotonic_ns are both CLOCK_MONOTONIC on Linux.)
        complete = None
        if collector is not None:
            complete = collector.finish()["merged_ns"] / 1e9
        elif self.mode == "viztracer-json":
            self.tool.finish()
        if self.mode in E2E_MODES:
            self.e2e.append((complete or time.perf_counter()) - started)
        if collector is not None:
            shutil.rmtree(os.path.dirname(collector.output))
        if isinstance(self.tool, Rtrace):
            self.lost += self.tool.rec.lost
            if os.path.exists(self.out + ".rtrace"):
                os.unlink(self.out + ".rtrace")
        elif isinstance(self.tool, VizTracer):
            self.tool.tracer.clear()
            if os.path.exists(self.tool.path):
                os.unlink(self.tool.path)
        return t1 - t0


def measure(workload: str, size: int, modes: list[str], rounds: int, warmup: int, tmp: str,
            floor_dir: str, seed: int, collect: list[str] | None) -> dict:  # fmt: skip
    """Times of every mode, round by round (warm-up rounds dropped)."""
    work = runner(workload)
    tools = {mode: Chunked(mode, tmp, floor_dir, collect) for mode in modes}
    # The floor counts a chunk's events: VizTracer's buffer is sized from it.
    stamp = tools.get("floor-stamp") or Chunked("floor-stamp", tmp, floor_dir, None)
    before = stamp.tool.floor.events
    stamp.run(work, size)
    events = stamp.tool.floor.events - before
    stamp.waits.clear()  # an untimed chunk: not one of the rounds'
    for tool in tools.values():
        tool.size_for(events)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for r in range(warmup + rounds):
        order = list(modes)
        rng.shuffle(order)
        for mode in order:
            elapsed = tools[mode].run(work, size)
            if r >= warmup:
                times[mode].append(elapsed)
        gc.collect()
    for mode in E2E_MODES:
        if mode in tools:
            times[f"{mode} e2e"] = tools[mode].e2e[warmup:]
    lost = sum(tools[m].lost for m in ("rtrace", "rtrace-collector") if m in tools)
    waits = {mode: tool.waits[warmup:] for mode, tool in tools.items()}
    return {"times": times, "events": events, "size": size, "lost": lost, "waits": waits}


def measure_in_processes(workload: str, modes: list[str], args, tmp: str, floor_dir: str) -> dict:
    """The rounds of `workload`, shared among --processes fresh interpreters
    (each with its own memory layout, which moves a ratio by a few percent
    from one process to the next), their times pooled."""
    pooled: dict = {"times": {}, "lost": 0, "waits": {}}
    for index in range(args.processes):
        share = args.rounds // args.processes + (index < args.rounds % args.processes)
        spec = {"workload": workload, "size": args.sizes[workload], "modes": modes,
                "rounds": share, "warmup": args.warmup, "tmp": tmp, "floor_dir": floor_dir,
                "seed": args.seed + index, "collect": args.collect}  # fmt: skip
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"paired.py: measuring {workload} failed (exit {proc.returncode}):\n"
                     f"{proc.stderr.strip()}")  # fmt: skip
        result = json.loads(proc.stdout.splitlines()[-1])
        for mode, times in result["times"].items():
            pooled["times"].setdefault(mode, []).extend(times)
        for mode, waits in result["waits"].items():
            pooled["waits"].setdefault(mode, []).extend(waits)
        pooled["lost"] += result["lost"]
        pooled["events"], pooled["size"] = result["events"], result["size"]
    return pooled


def child_main(spec: dict) -> None:
    result = measure(spec["workload"], spec["size"], spec["modes"], spec["rounds"], spec["warmup"],
                     spec["tmp"], spec["floor_dir"], spec["seed"], spec["collect"])  # fmt: skip
    print(json.dumps(result))


def paired(numerator: list[float], denominator: list[float]) -> Ratio:
    return Ratio.of_pairs([a / b for a, b in zip(numerator, denominator, strict=True)])


def unsteady(again: Ratio) -> bool:
    """Whether "untraced again" over untraced (1.00x on a steady machine)
    says the round's ratios cannot be trusted."""
    return not again.low <= 1.0 <= again.high or again.high - again.low > UNSTEADY_WIDTH


def busy_machine(waits: dict[str, list[float]]) -> str | None:
    """Why a workload's verdicts were taken on a machine busy with other
    processes (see BUSY_WAIT), or None."""
    busy = {mode: sum(share > BUSY_WAIT for share in shares) for mode, shares in waits.items()
            if mode in WAIT_JUDGED and shares}  # fmt: skip
    busy = {mode: n for mode, n in busy.items() if n > BUSY_ROUNDS * len(waits[mode])}
    if not busy:
        return None
    counts = ", ".join(f"{mode} in {n} of {len(waits[mode])}" for mode, n in busy.items())
    return (f"the workload's thread waited for a CPU for more than {BUSY_WAIT:.0%} of a chunk "
            f"({counts} chunks): other processes kept the machine busy, and rtrace's writer "
            "then takes its time from the traced thread's core: take its verdicts again on a "
            "quiet machine")


def shown(ratio: Ratio) -> str:
    return f"{ratio.value:.2f}x [{ratio.low:.2f}-{ratio.high:.2f}]"


def ahead_of_viztracer(ahead: Ratio, room: Ratio | None, bound: float, digits: int = 2) -> str:
    """The verdict on being `bound` times ahead of VizTracer, or why the goal
    is left out: VizTracer is less than `bound` times the floor (`room`),
    so no recorder could be that far ahead of it (as in overhead_goals.py)."""
    why_not = no_room(room.value if room else None, bound, digits)
    if why_not is not None:
        return f"left out, {why_not} ({shown(room)})"
    return f"{ahead.verdict(at_least=bound)} ({shown(ahead)})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(CHUNKS),
                        type=lambda t: parse_list(t, CHUNKS, "workloads"),
                        help=f"comma-separated, from: {', '.join(CHUNKS)} (default: all)")
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES),
                        type=lambda t: parse_list(t, MODES[1:], "modes"),
                        help=f"besides untraced, comma-separated, from: {', '.join(MODES[1:])} "
                             f"(default: {','.join(DEFAULT_MODES)}; VizTracer's only if it can be "
                             "imported)")
    parser.add_argument("--sizes", default="", type=parse_sizes, metavar="WORKLOAD=N,...",
                        help="chunk sizes other than the defaults ("
                             + ", ".join(f"{w}={n}" for w, n in CHUNKS.items())
                             + "); end to end with the collector wants longer chunks, whose "
                             "fixed costs (start, stop, the collector's exit) are a few ms")
    parser.add_argument("--collect", metavar="PATH",
                        help="the rtrace-collect for rtrace-collector (default: target/release/"
                             "rtrace-collect, else the interpreter's rtrace-collect script)")
    parser.add_argument("--rounds", type=int, default=60,
                        help="rounds per workload, each running every mode once (default 60)")
    parser.add_argument("--processes", type=int, default=3,
                        help="fresh interpreters per workload, sharing the rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=WARMUP_ROUNDS,
                        help="untimed rounds at the start of each interpreter (default "
                             f"{WARMUP_ROUNDS}; 1 is enough for full-size chunks)")
    parser.add_argument("--seed", type=int, default=0, help="of the modes' order in each round")
    args = parser.parse_args(argv)  # fmt: skip
    if args.rounds < 5:
        parser.error(f"--rounds must be at least 5, not {args.rounds}")
    if not 1 <= args.processes <= args.rounds:
        parser.error(f"--processes must be between 1 and --rounds, not {args.processes}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, not {args.warmup}")
    modes = ["untraced", *args.modes]
    args.sizes = {**CHUNKS, **args.sizes}
    given, args.collect = args.collect, None
    if "rtrace-collector" in modes:
        try:
            args.collect = find_collector(sys.executable, given)
        except SystemExit as exc:
            parser.error(str(exc).replace("overhead.py: ", ""))
        if args.collect is None:
            parser.error("rtrace-collector needs rtrace-collect: build it (cargo build --release "
                         "-p rtrace-collect) or name it with --collect")
    notes = []
    missing = [mode for mode in VIZTRACER_MODES if mode in modes]
    if missing and not has_viztracer():
        modes = [mode for mode in modes if mode not in missing]
        notes.append(f"VizTracer is not importable here: {', '.join(missing)} not measured "
                     "(pip install viztracer)")  # fmt: skip
    version = "%d.%d.%d" % sys.version_info[:3]
    print(f"paired in-run chunks — Python {version} ({sys.executable})")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"method:  {args.rounds} rounds per workload in {args.processes} fresh interpreters "
          f"(each after {args.warmup} warm-up rounds), every mode once per round in a "
          "shuffled order;")  # fmt: skip
    print("         ratio = a mode's chunk time / the same round's untraced chunk time; "
          "median of the rounds' ratios [95 % bootstrap interval]")  # fmt: skip
    for note in notes:
        print(f"note:    {note}")
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="rtrace-paired-") as tmp:
        floor_dir = floor.build(os.path.join(tmp, "floor"))["dir"]
        for workload in args.workloads:
            results[workload] = measure_in_processes(workload, modes, args, tmp, floor_dir)
            print(f"  {workload} done ({time.perf_counter() - started:.0f} s)", flush=True)
    print()
    headers = ["workload", "events/chunk", "untraced ms", *modes[1:]]
    has = set(modes)
    if {"rtrace", "floor-stamp"} <= has:
        headers.append("rtrace / floor")
    if {"rtrace", "viztracer"} <= has:
        headers.append("VizTracer / rtrace")
    if {"rtrace-collector", "floor-stamp"} <= has:
        headers.append("collector e2e / floor")
    # VizTracer's JSON end to end over rtrace's, to its file and to the
    # merged file; and over the floor's in-run: the most any recorder could
    # be ahead of it.
    json_over = [(mode, f"VizTracer JSON e2e / {name} e2e", f"to {output}")
                 for mode, name, output in (("rtrace", "rtrace", "rtrace's file"),
                                            ("rtrace-collector", "collector", "the merged file"))
                 if {"viztracer-json", mode} <= has]  # fmt: skip
    headers += [header for _, header, _ in json_over]
    if {"viztracer-json", "floor-stamp"} <= has:
        headers.append("VizTracer JSON e2e / floor")
    rows, goals = [], []
    for workload, result in results.items():
        times = result["times"]
        base = times["untraced"]
        label = WORKLOADS[workload].label(result["size"])
        row = [label, f"{result['events']:,}", f"{1000 * statistics.median(base):.1f}"]
        # Each mode's ratio over the untraced once (a bootstrap of its own):
        # the row shows it, and "untraced again" is judged from it below.
        over_untraced = {mode: paired(times[mode], base) for mode in modes[1:]}
        row += [shown(over_untraced[mode]) for mode in modes[1:]]
        if {"rtrace", "floor-stamp"} <= has:
            over = paired(times["rtrace"], times["floor-stamp"])
            row.append(shown(over))
            goals.append(f"{label}: rtrace within {IN_RUN_OVER_FLOOR - 1:.0%} of the floor: "
                         f"{over.verdict(at_most=IN_RUN_OVER_FLOOR)} ({shown(over)})")  # fmt: skip
        if {"rtrace", "viztracer"} <= has:
            ahead = paired(times["viztracer"], times["rtrace"])
            row.append(shown(ahead))
            room = paired(times["viztracer"], times["floor-stamp"]) if "floor-stamp" in has \
                else None  # fmt: skip
            bounds = [("never slower than VizTracer", 1.0)]
            if sys.version_info >= (3, 12):
                bounds.append((f"{VIZ_IN_RUN_312}x ahead of VizTracer", VIZ_IN_RUN_312))
            for goal, bound in bounds:
                goals.append(f"{label}: {goal}: {ahead_of_viztracer(ahead, room, bound)}")
        if {"rtrace-collector", "floor-stamp"} <= has:
            e2e = paired(times["rtrace-collector e2e"], times["floor-stamp"])
            row.append(shown(e2e))
            goals.append(f"{label}: end to end with the collector within "
                         f"{E2E_OVER_FLOOR - 1:.0%} of the floor: "
                         f"{e2e.verdict(at_most=E2E_OVER_FLOOR)} ({shown(e2e)})")  # fmt: skip
        if json_over:
            viz_e2e = times["viztracer-json e2e"]
            room = paired(viz_e2e, times["floor-stamp"]) if "floor-stamp" in has else None
            for mode, _, output in json_over:
                ahead = paired(viz_e2e, times[f"{mode} e2e"])
                row.append(shown(ahead))
                goals.append(f"{label}: {VIZ_E2E:.0f}x ahead of VizTracer's JSON end to end, "
                             f"{output}: {ahead_of_viztracer(ahead, room, VIZ_E2E, 1)}")  # fmt: skip
            if room is not None:
                row.append(shown(room))
        rows.append(row)
        if "untraced-again" in has:
            again = over_untraced["untraced-again"]
            if unsteady(again):
                goals.append(f"{label}: the machine was unsteady (untraced again {shown(again)}): "
                             "take its verdicts again")  # fmt: skip
        busy = None if workload in OWN_THREADS else busy_machine(result["waits"])
        if busy:
            goals.append(f"{label}: {busy}")
        if result["lost"]:
            goals.append(f"{label}: rtrace lost {result['lost']:,} events")
    print("In-run slowdown, paired chunks: median of the rounds' ratios [95 % interval]"
          + ("; collector e2e: from rtrace's start until the collector had written the merged "
             "file, over the floor's in-run" if "rtrace-collector" in has else "")
          + ("; VizTracer JSON e2e: from its start until its JSON is saved"
             if "viztracer-json" in has else ""))  # fmt: skip
    print(table(headers, rows))
    print()
    print("Issue 8's goals on these chunks (met / missed: the whole interval; "
          "otherwise undecided)")  # fmt: skip
    for line in goals:
        print(f"  {line}")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(json.loads(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
