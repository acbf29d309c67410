#!/usr/bin/env python3
"""Live collector throughput: PROCESSES Python processes tracing flat out
(recursive calls, the default ``on_full="drop"``) stream to one
``rtrace-collect --listen``, started at the same moment. Reports the events
recorded, lost (dropped by the recorders when the collector fell behind)
and late (written out of time order by the collector), the CPU time of the traced processes and of the
collector (per event, and as a ratio), the CPU time of the collector's
merge thread (its main thread, sampled from /proc every 20 ms, so the last
few ms are missed) and its events per CPU second, the collector's peak memory, and how
long after the last process exited the merged file was complete (the
collector is sent SIGINT then, as a person would press Ctrl-C). Medians
over ``--repeat`` runs.

    python benches/live.py --python .venv-3.12/bin/python                 # 8 x 2 M events
    python benches/live.py --python .venv-3.12/bin/python --processes 1 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_measure import LiveCollector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# fib(22) makes 57,313 calls: 114,626 call and return events.
EVENTS_PER_ROUND = 114_626
WORKLOAD = """
import json, resource, sys, rtrace
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
rounds = int(sys.argv[1])
with rtrace.record(session=sys.argv[2]) as rec:
    for _ in range(rounds):
        fib(22)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"events": rec.events, "lost": rec.lost,
                  "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


class ThreadCpu:
    """Samples the CPU time (user + system, seconds) of one thread of a
    process from /proc until the thread is gone; `cpu_s` is the last
    sample of it alive."""

    def __init__(self, pid: int, tid: int) -> None:
        self.path = f"/proc/{pid}/task/{tid}/stat"
        self.cpu_s = 0.0
        # Time spent runnable but waiting for a CPU (schedstat).
        self.wait_s = 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            try:
                with open(self.path) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(self.path.replace("/stat", "/schedstat")) as f:
                    waited_ns = int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                return
            # max: a zombie's stat reads 0
            self.cpu_s = max(self.cpu_s, (int(fields[11]) + int(fields[12])) / tick)
            self.wait_s = max(self.wait_s, waited_ns / 1e9)
            time.sleep(0.02)

    def join(self) -> tuple[float, float]:
        self._thread.join(10)
        return self.cpu_s, self.wait_s


def run_once(python: str, collect: str, processes: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="rtrace-live-bench-") as tmp:
        script = Path(tmp) / "workload.py"
        script.write_text(WORKLOAD)
        collector = LiveCollector([collect], tmp)
        merge_cpu = ThreadCpu(collector.proc.pid, collector.proc.pid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTRACE_")}
        env["RTRACE_COLLECTOR"] = collector.address
        procs = [subprocess.Popen([python, str(script), str(rounds), f"p{i}"], env=env,
                                  stdout=subprocess.PIPE, text=True, cwd=tmp)
                 for i in range(processes)]  # fmt: skip
        results = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                sys.exit(f"a traced process failed (exit {p.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        done_ns = time.monotonic_ns()
        collected = collector.finish()
        merge_cpu_s, merge_wait_s = merge_cpu.join()
    events = sum(r["events"] for r in results)
    def total(column: str) -> int:
        return sum(int(s.get(column, "0") or 0) for s in collected["streams"])

    merged = total("events")
    return {
        "events": events,
        "lost": sum(r["lost"] for r in results),
        "merged_events": merged,
        "late": total("late"),
        "traced_cpu_s": sum(r["cpu_s"] for r in results),
        "collector_cpu_s": collected["collector_cpu_s"],
        "merge_cpu_s": merge_cpu_s,
        "merge_wait_s": merge_wait_s,
        "collector_rss_mb": collected["collector_rss_kib"] / 1024,
        "complete_after_s": (collected["merged_ns"] - done_ns) / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with rtrace")
    parser.add_argument("--collect", default=str(ROOT / "target/release/rtrace-collect"))
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--events", type=float, default=2e6, help="events per process (default 2e6)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(args.collect):
        sys.exit(f"{args.collect} not found: run scripts/dev-setup first")
    args.python = os.path.abspath(args.python)
    rounds = max(1, round(args.events / EVENTS_PER_ROUND))
    runs = [run_once(args.python, args.collect, args.processes, rounds) for _ in range(args.repeat)]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    events, collector_cpu = median("events"), median("collector_cpu_s")
    # The merge thread's CPU is sampled every 20 ms: a short run may show none.
    merge_cpu = median("merge_cpu_s")
    merge_rate = f"{events / merge_cpu / 1e6:.1f}M" if merge_cpu > 0 else "-"
    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"{args.processes} processes x {rounds} x fib(22), medians of {args.repeat}:")
    print(f"{'events':>12} {'lost (max)':>11} {'late (max)':>11} {'traced CPU s':>13} {'collector CPU s':>16} "
          f"{'collector ns/event':>19} {'collector/traced':>17} {'collector RSS MB':>17} "
          f"{'complete after s':>17} {'merge CPU s':>12} {'merge events/CPU s':>19}")  # fmt: skip
    print(f"{events:>12,.0f} {max(r['lost'] for r in runs):>11,} {max(r['late'] for r in runs):>11,} "
          f"{median('traced_cpu_s'):>13.2f} "
          f"{collector_cpu:>16.2f} {collector_cpu / events * 1e9:>19.1f} "
          f"{collector_cpu / median('traced_cpu_s'):>17.2f} {max(r['collector_rss_mb'] for r in runs):>17.0f} "
          f"{median('complete_after_s'):>17.3f} {merge_cpu:>12.2f} "
          f"{merge_rate:>19}")  # fmt: skip
    for i, r in enumerate(runs):
        print(f"run {i + 1}: {r['events']:,} events, {r['lost']:,} lost, {r['late']:,} late, "
              f"collector {r['collector_cpu_s']:.2f} s CPU (merge thread {r['merge_cpu_s']:.2f} s, "
              f"{r['merge_wait_s']:.2f} s waiting for a CPU) / "
              f"traced {r['traced_cpu_s']:.2f} s, "
              f"{r['collector_rss_mb']:.0f} MB, complete {r['complete_after_s']:.3f} s after")
        if r["merged_events"] and r["merged_events"] != r["events"]:
            print(f"note: the collector merged {r['merged_events']:,} of {r['events']:,} events")
    # The goal is no loss in any run: a median hides the one run that lost.
    lossy = sum(1 for r in runs if r["lost"])
    print(f"runs that lost events: {lossy} of {len(runs)}")


if __name__ == "__main__":
    main()
