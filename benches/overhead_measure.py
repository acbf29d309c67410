"""Running the measurements of benches/overhead.py.

Each measurement is a fresh ``overhead_child.py`` process. In the
``rtrace-collector`` mode a fresh ``rtrace-collect --listen`` runs beside it:
the child streams to it, and once the child has stopped recording the
collector is asked to finish (SIGINT, as a person would press Ctrl-C); the
merged timeline is complete when the collector exits, which is where that
mode's end-to-end time ends.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from overhead_child import RESULT_MARK
from overhead_report import MIN_PROBES, Cell, disturbed

CHILD = Path(__file__).resolve().with_name("overhead_child.py")
CHILD_TIMEOUT_S = 600
COLLECTOR_READY_S = 30
# Open streams may take this long after SIGINT; a stream still open then is a failure.
COLLECTOR_DRAIN_S = 60


def child_env(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTRACE_")}
    if mode == "rtrace-legacy":
        env["RTRACE_HOOK"] = "legacy"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def busy_cpu_s() -> float | None:
    """CPU-seconds every CPU of the machine has spent busy since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------
# The live collector
# ---------------------------------------------------------------------------


class CollectorError(RuntimeError):
    pass


# What rtrace-collect prints once the merged file has every byte
# (collector/src/cli.rs, after the sink's last flush).
WROTE_LINE = "rtrace-collect: wrote "


class LiveCollector:
    """``rtrace-collect --listen unix://DIR/collector.sock -o DIR/merged.pftrace``."""

    def __init__(self, command: list[str], directory: str) -> None:
        self.socket = os.path.join(directory, "collector.sock")
        self.output = os.path.join(directory, "merged.pftrace")
        self.argv = [*command, "--listen", f"unix://{self.socket}", "-o", self.output]
        self.argv += ["--drain", str(COLLECTOR_DRAIN_S)]
        self.lines: list[str] = []
        # When the collector said it had written the merged file (the
        # monotonic clock, as time.monotonic_ns()): the file is complete
        # then, before the process's teardown (mostly the kernel freeing its
        # memory: ~2 ms after a 110 ms chunk of deltablue, benches/
        # e2e_phases.py), which no reader of the file waits for.
        self.wrote_ns: int | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(COLLECTOR_READY_S) or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            raise CollectorError(f"{shlex.join(self.argv)} did not start:\n" + self.tail())

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith(WROTE_LINE):
                self.wrote_ns = time.monotonic_ns()
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self._ready.set()
        self._ready.set()  # EOF: wake the waiter, which then sees the exit

    def tail(self) -> str:
        return "\n".join(self.lines[-25:])

    def finish(self) -> dict:
        """SIGINT, then waits for the collector's exit; returns what it cost
        and when the merged file was complete ("merged_ns": when the
        collector said it had written it; "exited_ns": its exit)."""
        self.proc.send_signal(signal.SIGINT)
        killer = threading.Timer(COLLECTOR_DRAIN_S + CHILD_TIMEOUT_S, self.proc.kill)
        killer.start()
        _, status, usage = os.wait4(self.proc.pid, 0)
        exited_ns = time.monotonic_ns()
        killer.cancel()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._reader.join(10)
        if self.proc.returncode != 0:
            raise CollectorError(
                f"{shlex.join(self.argv)} exited with status {self.proc.returncode}:\n"
                + self.tail()
            )
        if self.wrote_ns is None:
            raise CollectorError(
                f"{shlex.join(self.argv)} exited without saying '{WROTE_LINE}...':\n" + self.tail()
            )
        streams = parse_stream_table(self.lines)
        return {
            # Both times are upper bounds (each taken once this process saw
            # it), and the reader thread may see the line only after the
            # exit: the earlier one is the nearer bound.
            "merged_ns": min(self.wrote_ns, exited_ns),
            "exited_ns": exited_ns,
            "collector_rss_kib": usage.ru_maxrss,
            "collector_cpu_s": usage.ru_utime + usage.ru_stime,
            "merged_bytes": os.path.getsize(self.output),
            "streams": streams,
        }


def parse_stream_table(lines: list[str]) -> list[dict]:
    """The per-stream table rtrace-collect prints when it finishes
    (left-aligned columns: session pid host events lost late bytes end)."""
    for at, line in enumerate(lines):
        if line.startswith("session") and " events " in line:
            break
    else:
        return []
    header = lines[at]
    names = header.split()
    starts = [header.index(f"{n}") if i == 0 else header.index(f" {n}") + 1
              for i, n in enumerate(names)]  # fmt: skip
    rows = []
    for line in lines[at + 1 :]:
        if line.startswith("rtrace-collect:"):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        rows.append(dict(zip(names, cells)))
    return rows


# ---------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------


def result_line(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    return None


def failure(spec: dict, cmd: list[str], code: int | None, output: str) -> str:
    env_prefix = "RTRACE_HOOK=legacy " if spec["mode"] == "rtrace-legacy" else ""
    tail = "\n".join(output.strip().splitlines()[-25:])
    return f"exit status {code}: {env_prefix}{shlex.join(cmd)}\n{tail}"


def run_plain(python: str, spec: dict) -> tuple[dict | None, str]:
    cmd = [python, str(CHILD), json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=child_env(spec["mode"]),
            timeout=CHILD_TIMEOUT_S, cwd=spec["cwd"],
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"timed out after {CHILD_TIMEOUT_S} s: {shlex.join(cmd)}"
    result = result_line(proc.stdout) if proc.returncode == 0 else None
    if result is None:
        return None, failure(spec, cmd, proc.returncode, proc.stderr or proc.stdout)
    return result, proc.stderr.strip()


def run_collected(python: str, spec: dict, collect: list[str]) -> tuple[dict | None, str]:
    """The child streams to a live collector; e2e ends when its merged file
    is complete (the collector says it has written it)."""
    try:
        collector = LiveCollector(collect, spec["cwd"])
    except (OSError, CollectorError) as exc:
        return None, f"the collector failed to start: {exc}"
    spec = {**spec, "collector": collector.address}
    cmd = [python, str(CHILD), json.dumps(spec)]
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env(spec["mode"]),
            cwd=spec["cwd"],
        )  # fmt: skip
        killer = threading.Timer(CHILD_TIMEOUT_S, child.kill)
        killer.start()
        result = None
        assert child.stdout is not None
        for line in child.stdout:  # the result line comes once recording stopped
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
                break
        try:
            collected = collector.finish()
        except CollectorError as exc:
            collected, result = None, None
            err.write(f"\n{exc}")
        child.communicate()
        killer.cancel()
        err.seek(0)
        stderr = err.read().strip()
    if result is None or child.returncode != 0 or collected is None:
        return None, failure(spec, cmd, child.returncode, stderr)
    for name in ("merged.pftrace", "collector.sock"):
        Path(spec["cwd"], name).unlink(missing_ok=True)
    return with_collection(result, collected), stderr


def with_collection(result: dict, collected: dict) -> dict:
    streams = collected.pop("streams")
    result.update(collected)
    result["e2e_s"] = (collected["merged_ns"] - result["t0_ns"]) / 1e9
    result["finish_s"] = (collected["merged_ns"] - result["done_ns"]) / 1e9
    result["collector_streams"] = streams
    numbers = [s for s in streams if s.get("events", "").isdigit()]
    result["merged_events"] = sum(int(s["events"]) for s in numbers)
    result["wire_bytes"] = sum(int(s["bytes"]) for s in numbers if s.get("bytes", "").isdigit())
    result["stream_ends"] = sorted({s.get("end", "?") for s in streams})
    return result


# Iterations of the speed probe: ~10 ms of this machine's CPython.
PROBE_ITERATIONS = 150_000


def speed_probe() -> float:
    """Seconds this process takes for a fixed loop of arithmetic. Run just
    before and just after each measurement (outside it): a slow probe marks
    a run during which the CPU itself ran slow, which /proc/stat cannot
    show (a virtual machine whose host lends its core elsewhere; how much
    it matters on a machine: benches/steadiness.py)."""
    t = time.perf_counter()
    x = 0
    for i in range(PROBE_ITERATIONS):
        x += i * i
    return time.perf_counter() - t


def run_child(python: str, spec: dict, collect: list[str] | None) -> tuple[dict | None, str]:
    """Runs one measurement; the result also says how many CPUs other
    processes kept busy meanwhile ("foreign_cpus"), and the slower of the
    speed probes around it ("probe_s")."""
    probe_before = speed_probe()
    busy0, own0, t0 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    if spec["mode"] == "rtrace-collector":
        assert collect is not None
        result, stderr = run_collected(python, spec, collect)
    else:
        result, stderr = run_plain(python, spec)
    busy1, own1, t1 = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    if result is not None and busy0 is not None and busy1 is not None:
        foreign = (busy1 - busy0) - (own1 - own0)
        result["foreign_cpus"] = max(0.0, foreign / (t1 - t0))
    if result is not None:
        result["probe_s"] = max(probe_before, speed_probe())
    return result, stderr


def clean(directory: str) -> None:
    """Removes the outputs of a measurement (they can be large)."""
    for entry in os.scandir(directory):
        if entry.is_file() and entry.name.startswith("out"):
            os.unlink(entry.path)


def measure_once(
    python: str, spec: dict, cell: Cell, retry_busy: int, collect, probes: list[float]
) -> None:
    """One measurement into ``cell``; with ``retry_busy``, a run during which
    other processes kept more than BUSY_CPUS busy, or whose speed probe was
    SLOW_PROBE times the median of ``probes`` (every probe of this run so
    far), is taken again (that often)."""
    for attempt in range(retry_busy + 1):
        result, stderr = run_child(python, spec, collect)
        clean(spec["cwd"])
        if result is None:
            cell.failures.append(stderr)
            return
        result["probe_ratio"] = probe_ratio(result["probe_s"], probes)
        probes.append(result["probe_s"])
        if not disturbed(result) or attempt == retry_busy:
            cell.runs.append({**result, "stderr": stderr, "retries": attempt})
            return


def probe_ratio(probe_s: float, probes: list[float]) -> float | None:
    """``probe_s`` over the median of the earlier probes (None before there
    are enough of them to judge by)."""
    if len(probes) < MIN_PROBES:
        return None
    return probe_s / statistics.median(probes)


# ---------------------------------------------------------------------------
# Every measurement
# ---------------------------------------------------------------------------


def base_spec(workload, size: int, mode: str, tmp: str, setup: dict) -> dict:
    events = setup["events"].get(workload.name) or 0
    return {
        "workload": workload.name,
        "size": size,
        "mode": mode,
        "out": os.path.join(tmp, "out"),
        "cwd": tmp,
        "floor_dir": setup.get("floor_dir"),
        # VizTracer keeps one entry per call (Python or C): room for all.
        "viztracer_entries": int(events / 2 * 1.25) + 100_000,
    }


def calibrate(python: str, workloads, setup: dict, tmp: str, probes: list[float]) -> None:
    """Counts the events of each workload once, with the stamp floor (or
    rtrace when there is no floor): sizes VizTracer's buffer, and is the
    events column of the report. Also takes the first speed probes."""
    mode = "floor-stamp" if setup.get("floor_dir") else "rtrace"
    key = "floor_events" if mode == "floor-stamp" else "events"
    probes.extend(speed_probe() for _ in range(MIN_PROBES))
    for workload, size in workloads:
        spec = base_spec(workload, size, mode, tmp, setup)
        result, stderr = run_plain(python, spec)
        clean(tmp)
        if result is None:
            raise SystemExit(f"overhead.py: counting the events of {workload.name} failed: "
                             f"{stderr}")  # fmt: skip
        setup["events"][workload.name] = result.get(key, 0) + result.get("lost", 0)
    setup["events_by"] = mode


def measure_all(python: str, modes: list[str], workloads, args, setup: dict) -> dict:
    cells = {(w.name, m): Cell() for w, _ in workloads for m in modes}
    order = random.Random(args.seed)
    probes: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rtrace-bench-") as tmp:
        calibrate(python, workloads, setup, tmp, probes)
        for round_no in range(1, args.repeat + 1):
            started = time.perf_counter()
            for workload, size in workloads:
                for mode in order.sample(modes, len(modes)):
                    spec = base_spec(workload, size, mode, tmp, setup)
                    cell = cells[(workload.name, mode)]
                    measure_once(
                        python, spec, cell, args.retry_busy, setup.get("collect"), probes
                    )
            print(
                f"  round {round_no}/{args.repeat} done in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return cells
