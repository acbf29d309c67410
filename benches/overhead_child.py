"""The measured process of benches/overhead.py: one workload in one mode.

Run as ``python overhead_child.py SPEC_JSON`` by overhead.py, in a fresh
interpreter per measurement; it prints one line, RESULT_MARK + JSON. It
imports rtrace, cProfile, viztracer or a floor hook only in the modes that
measure them. In the multiprocessing workload every process it starts
(``spawn``) runs the same tool around its share of the work, started and
finished inside that process, and reports through a file next to ``out``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

from overhead_workloads import PROCESSES, runner

RESULT_MARK = "RTRACE_BENCH_RESULT "


# ---------------------------------------------------------------------------
# Tools: start() .. run .. stop() .. finish() (the output is complete)
# ---------------------------------------------------------------------------


class Tool:
    """The untraced baseline: nothing to start, nothing to write."""

    def __init__(self, spec: dict, out: str, session: str) -> None:
        self.spec, self.out, self.session = spec, out, session

    def prepare(self) -> None:
        """Imports what start() needs: imports are not part of any time."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def stats(self) -> dict:
        return {}


class Imported(Tool):
    """``import rtrace`` done, nothing recording (the disabled path)."""

    def __init__(self, spec: dict, out: str, session: str) -> None:
        super().__init__(spec, out, session)
        t0 = time.perf_counter()
        import rtrace  # noqa: F401

        self.import_s = time.perf_counter() - t0

    def stats(self) -> dict:
        return {"import_s": self.import_s}


# The filter modes: every event through the filtered path, or none at all.
FILTERS = {
    "rtrace-filtered": {"exclude": ["no_such_module.*"]},
    "rtrace-nothing": {"include": ["no_such_module.*"]},
}


class Rtrace(Tool):
    def prepare(self) -> None:
        import rtrace  # noqa: F401

    def start(self) -> None:
        import rtrace

        # follow_children=False: in the multiprocessing workload every
        # process starts rtrace itself, as with the other tools; following
        # would also record the spawned interpreters' start-up, which no
        # process counts.
        options = {
            "on_full": "block" if self.spec["mode"] == "rtrace-block" else "drop",
            "follow_children": False,
        }
        options.update(FILTERS.get(self.spec["mode"], {}))
        if self.spec.get("collector"):
            options["collector"] = self.spec["collector"]
            options["output"] = self.out + ".spill.rtrace"  # only written if it must spill
        else:
            options["output"] = self.out + ".rtrace"
        self.rec = rtrace.record(session=self.session, **options).start()

    def stop(self) -> None:
        self.rec.stop()  # writes what is pending and closes the stream

    def stats(self) -> dict:
        rec = self.rec
        spill = self.out + ".spill.rtrace"
        result = {"events": rec.events, "lost": rec.lost, "hook": rec.hook, "error": rec.error}
        result["stream_bytes"] = rec.bytes
        if os.path.exists(self.out + ".rtrace"):
            result["file_bytes"] = os.path.getsize(self.out + ".rtrace")
        if os.path.exists(spill):
            result["spill_bytes"] = os.path.getsize(spill)
        return result


class FloorHook(Tool):
    def prepare(self) -> None:
        from floor import Floor

        mode = self.spec["mode"]
        variant = "stamp" if mode.startswith("floor-stamp") else "noop"
        legacy = mode.endswith("-legacy") or sys.version_info < (3, 12)
        clock = "monotonic" if mode.endswith("-monotonic") else "tsc"
        mechanism = "profile" if legacy else "monitoring"
        self.floor = Floor(variant, mechanism, self.spec["floor_dir"], clock)

    def start(self) -> None:
        self.floor.start()

    def stop(self) -> None:
        self.floor.stop()

    def stats(self) -> dict:
        events = self.floor.events
        return {"floor_events": events} if events else {}


class CProfile(Tool):
    def prepare(self) -> None:
        import cProfile  # noqa: F401
        import pstats  # noqa: F401

    def start(self) -> None:
        import cProfile

        self.profile = cProfile.Profile()
        self.profile.enable()

    def stop(self) -> None:
        self.profile.disable()

    def finish(self) -> None:
        self.profile.dump_stats(self.out + ".prof")

    def stats(self) -> dict:
        import pstats

        stats = pstats.Stats(self.out + ".prof").stats  # type: ignore[attr-defined]
        calls = sum(entry[1] for entry in stats.values())
        return {"calls": calls, "file_bytes": os.path.getsize(self.out + ".prof")}


class VizTracer(Tool):
    def prepare(self) -> None:
        import viztracer  # noqa: F401

    def start(self) -> None:
        from viztracer import VizTracer as Tracer

        self.entries = self.spec["viztracer_entries"]
        self.path = self.out + ".json"
        # "viztracer": its fastest save (dump_raw); "viztracer-json": its
        # default save, the JSON most users write.
        raw = self.spec["mode"] == "viztracer"
        self.tracer = Tracer(
            output_file=self.path, tracer_entries=self.entries, verbose=0, dump_raw=raw
        )
        self.tracer.start()

    def stop(self) -> None:
        self.tracer.stop()

    def finish(self) -> None:
        self.tracer.save()

    def stats(self) -> dict:
        with open(self.path, "rb") as f:
            data = f.read()
        # One complete event per call ("ph": "X" with a space in its JSON save).
        calls = data.count(b'"ph":"X"') + data.count(b'"ph": "X"')
        return {
            "calls": calls,
            "file_bytes": os.path.getsize(self.path),
            "overflow": calls >= self.entries,
        }


def tool_for(spec: dict, out: str, session: str) -> Tool:
    mode = spec["mode"]
    if mode.startswith("rtrace"):
        return Rtrace(spec, out, session)
    if mode.startswith("floor"):
        return FloorHook(spec, out, session)
    kinds = {"untraced": Tool, "imported": Imported, "cProfile": CProfile, "viztracer": VizTracer,
             "viztracer-json": VizTracer}  # fmt: skip
    if mode not in kinds:
        raise SystemExit(f"overhead_child.py: unknown mode {mode!r}")
    return kinds[mode](spec, out, session)


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


def peak_rss_kib() -> int:
    """The peak RSS of this process and of any child it waited for (KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def waited_for_cpu() -> tuple[int, int]:
    """This thread's time spent runnable but not running (ns, from
    /proc/self/task/TID/schedstat) and how often it was preempted
    (involuntary context switches); (0, 0) where Linux does not say."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            waited_ns = int(f.read().split()[1])
        return waited_ns, resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
    except (OSError, ValueError, IndexError, AttributeError):
        return 0, 0


def measure(tool: Tool, work, size: int) -> dict:
    tool.prepare()
    # Read outside the recording: inside it, its calls would be recorded
    # too, and take the first (shortest) function ids from the workload's.
    w1, p1 = waited_for_cpu()
    t0_ns = time.monotonic_ns()
    tool.start()
    c1, t1 = time.process_time(), time.perf_counter()
    work(size)
    t2, c2 = time.perf_counter(), time.process_time()
    tool.stop()
    w2, p2 = waited_for_cpu()
    tool.finish()
    t3_ns = time.monotonic_ns()
    return {
        "in_run_s": t2 - t1,
        "e2e_s": (t3_ns - t0_ns) / 1e9,
        "cpu_s": c2 - c1,
        # The thread that runs the workload, from the tool's start to its
        # stop: in the threads and multiprocessing workloads it only waits
        # for the others.
        "waited_s": (w2 - w1) / 1e9,
        "preempted": p2 - p1,
        "t0_ns": t0_ns,
        "done_ns": t3_ns,
        **tool.stats(),
    }


def process_main(spec: dict, index: int) -> None:
    """One process of the multiprocessing workload (the target of spawn)."""
    out = f"{spec['out']}.p{index}"
    tool = tool_for(spec, out, f"bench-p{index}")
    result = measure(tool, runner("multiprocessing"), spec["size"])
    result["peak_rss_kib"] = peak_rss_kib()
    with open(out + ".result", "w") as f:
        json.dump(result, f)


def run_processes(spec: dict):
    """The multiprocessing workload: PROCESSES spawned interpreters, each
    running the work (under the tool) and reporting back."""
    import multiprocessing

    def work(size: int) -> None:
        context = multiprocessing.get_context("spawn")
        procs = [context.Process(target=process_main, args=(spec, i)) for i in range(PROCESSES)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"a workload process exited with status {proc.exitcode}")

    return work


ADDITIVE = ("events", "lost", "stream_bytes", "file_bytes", "spill_bytes", "calls", "floor_events")


def add_process_results(result: dict, spec: dict) -> None:
    """Adds what the workload's processes recorded to the parent's result."""
    for index in range(PROCESSES):
        with open(f"{spec['out']}.p{index}.result") as f:
            child = json.load(f)
        for key in ADDITIVE:
            if key in child:
                result[key] = result.get(key, 0) + child[key]
        for key in ("error", "hook"):
            result[key] = result.get(key) or child.get(key)
        result["overflow"] = result.get("overflow") or child.get("overflow")
        result["peak_rss_kib"] = max(result["peak_rss_kib"], child["peak_rss_kib"])


def child_main(spec: dict) -> None:
    tool = tool_for(spec, spec["out"], "bench")
    if spec["workload"] == "multiprocessing":
        result = measure(tool, run_processes(spec), spec["size"])
        result["peak_rss_kib"] = peak_rss_kib()
        add_process_results(result, spec)
    else:
        result = measure(tool, runner(spec["workload"]), spec["size"])
        result["peak_rss_kib"] = peak_rss_kib()
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
