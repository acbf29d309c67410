"""The measured process of benches/overhead.py: one workload in one mode.

Run as ``python overhead_child.py SPEC_JSON`` by overhead.py, in a fresh
interpreter per measurement; it prints one line, RESULT_MARK + JSON. It
imports nothing the workloads do not need, and rtrace, cProfile or viztracer
only in the modes that measure them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

RESULT_MARK = "RTRACE_BENCH_RESULT "
THREADS = 4


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def add(self, amount: int) -> None:
        self.value += amount

    def get(self) -> int:
        return self.value


def methods(n: int) -> int:
    counter = Counter()
    for _ in range(n):
        counter.inc()
        counter.add(2)
        counter.get()
    return counter.get()


def fib_threads(n: int) -> None:
    workers = [threading.Thread(target=fib, args=(n,)) for _ in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


WORKLOADS = {"fib": fib, "methods": methods, "threads": fib_threads}


def _measure_plain(run, size: int) -> dict:
    c1, t1 = time.process_time(), time.perf_counter()
    run(size)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"in_run_s": t2 - t1, "e2e_s": t2 - t1, "cpu_s": c2 - c1}


def _measure_imported(run, size: int) -> dict:
    t0 = time.perf_counter()
    import rtrace  # noqa: F401

    import_s = time.perf_counter() - t0
    return {**_measure_plain(run, size), "import_s": import_s}


FILTERS = {
    "rtrace-filtered": {"exclude": ["no_such_module.*"]},
    "rtrace-nothing": {"include": ["no_such_module.*"]},
}


def _measure_rtrace(run, size: int, out: str, on_full: str, filters: dict) -> dict:
    import rtrace

    t0 = time.perf_counter()
    with rtrace.record(session="bench", output=out, on_full=on_full, **filters) as rec:
        c1, t1 = time.process_time(), time.perf_counter()
        run(size)
        t2, c2 = time.perf_counter(), time.process_time()
    t3 = time.perf_counter()
    return {
        "cpu_s": c2 - c1,
        "in_run_s": t2 - t1,
        "e2e_s": t3 - t0,
        "events": rec.events,
        "lost": rec.lost,
        "file_bytes": os.path.getsize(out),
        "hook": rec.hook,
        "error": rec.error,
    }


def _measure_cprofile(run, size: int, out: str) -> dict:
    import cProfile
    import pstats

    t0 = time.perf_counter()
    profile = cProfile.Profile()
    profile.enable()
    c1, t1 = time.process_time(), time.perf_counter()
    run(size)
    t2, c2 = time.perf_counter(), time.process_time()
    profile.disable()
    profile.dump_stats(out)
    t3 = time.perf_counter()
    stats = pstats.Stats(out).stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in stats.values())
    return {
        "in_run_s": t2 - t1,
        "e2e_s": t3 - t0,
        "cpu_s": c2 - c1,
        "calls": calls,
        "file_bytes": os.path.getsize(out),
    }


def _measure_viztracer(run, size: int, out: str, entries: int) -> dict:
    from viztracer import VizTracer

    t0 = time.perf_counter()
    tracer = VizTracer(output_file=out, tracer_entries=entries, verbose=0, dump_raw=True)
    tracer.start()
    c1, t1 = time.process_time(), time.perf_counter()
    run(size)
    t2, c2 = time.perf_counter(), time.process_time()
    tracer.stop()
    tracer.save()
    t3 = time.perf_counter()
    with open(out, "rb") as f:
        calls = f.read().count(b'"ph":"X"')  # one complete event per call
    return {
        "in_run_s": t2 - t1,
        "e2e_s": t3 - t0,
        "cpu_s": c2 - c1,
        "calls": calls,
        "file_bytes": os.path.getsize(out),
        "overflow": calls >= entries,
    }


def child_main(spec: dict) -> None:
    run = WORKLOADS[spec["workload"]]
    size, mode, out = spec["size"], spec["mode"], spec["out"]
    if mode == "untraced":
        result = _measure_plain(run, size)
    elif mode == "imported":
        result = _measure_imported(run, size)
    elif mode in ("rtrace", "rtrace-legacy", *FILTERS):
        result = _measure_rtrace(run, size, out, "drop", FILTERS.get(mode, {}))
    elif mode == "rtrace-block":
        result = _measure_rtrace(run, size, out, "block", {})
    elif mode == "cProfile":
        result = _measure_cprofile(run, size, out)
    elif mode == "viztracer":
        result = _measure_viztracer(run, size, out, spec["viztracer_entries"])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
