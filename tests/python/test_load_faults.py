"""The collector under load and stalled: many programs stream at once, and
every event each program recorded is either in the timeline (or its spill
file) or counted as lost — checked against each program's own count —
while the programs keep their pace and the collector its memory bound."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from faults import (Collector, assert_accounted, events_per_pid, proc_status_kb,  # noqa: F401
                    reap_leftovers, report_rows, start_streamer)

import rtrace

# About 40 s each: scripts/test runs them with its first Python only.
pytestmark = pytest.mark.heavy

# README, "What rtrace promises when things go wrong": the collector's peak
# resident memory with 64 programs of 4 threads streaming.
COLLECTOR_PEAK_BOUND_MIB = 128


def spilled_events(result: dict) -> int:
    path = Path(result["path"])
    return sum(1 for _ in rtrace.read(path)) if path.exists() else 0


def run_eight(tmp_path: Path, name: str, stall: bool) -> tuple[list[dict], str]:
    """Eight programs of two threads stream for 10 s (about 10,000 events/s
    each); odd ones with a small queue (16,384 events). With ``stall``, the
    collector is stopped (SIGSTOP) from 1 s to 9 s."""
    workdir = tmp_path / name
    workdir.mkdir()
    sock = f"unix://{workdir}/c.sock"
    collector = Collector(workdir, sock, "out.pftrace")
    programs = [start_streamer(workdir, f"p{i}", threads=2, seconds=10, burst=50, pause=0.01,
                               go=True, env={"RTRACE_COLLECTOR": sock},
                               record={"buffer_events": 16384} if i % 2 else {})
                for i in range(8)]
    for p in programs:
        p.go()
    if stall:
        time.sleep(1)
        collector.signal(signal.SIGSTOP)
        time.sleep(8)
        collector.signal(signal.SIGCONT)
    results = [p.result() for p in programs]
    return results, collector.finish()


def test_a_stalled_collector_neither_slows_the_programs_nor_loses_anything_uncounted(tmp_path):
    """The collector stops (SIGSTOP) for 8 s while eight programs stream
    for 10 s. With the default policy (drop) the programs keep their pace
    and their CPU cost per call, compared with an unstalled run; each
    spills after the 2 s write timeout, says so once, and every event is
    in the timeline or the spill file, or counted lost: none with the
    default queue (1 Mi events), some with a 16 Ki queue — and the
    collector's report and the stream's end carry that count."""
    calm, _ = run_eight(tmp_path, "calm", stall=False)
    stalled, report = run_eight(tmp_path, "stalled", stall=True)

    for r in calm:
        assert r["lost"] == 0 and "rtrace:" not in r["stderr"], r
    pace = sum(r["iterations"] for r in stalled) / sum(r["iterations"] for r in calm)
    assert pace > 0.8, f"the stalled run made {pace:.2f} of the calm run's calls"
    cost = (sum(r["cpu"] for r in stalled) / sum(r["iterations"] for r in stalled)) / (
        sum(r["cpu"] for r in calm) / sum(r["iterations"] for r in calm))
    assert cost < 1.5, f"a call cost {cost:.2f} times as much CPU while stalled"
    worst = max(r["max_gap"] for r in stalled)
    assert worst < 1.5, f"a thread paused {worst:.2f} s (the write timeout is 2 s)"

    delivered = events_per_pid(tmp_path / "stalled" / "out.pftrace")
    rows = report_rows(report)
    for i, r in enumerate(stalled):
        assert "unreachable; spilling to" in r["stderr"], r["stderr"]
        assert_accounted(r, delivered[r["pid"]] + spilled_events(r))
        if i % 2:
            assert r["lost"] > 0, r
        else:
            assert r["lost"] == 0, r
        ends = [row for row in rows if row["pid"] == r["pid"] and row["end"] == "clean"]
        assert len(ends) == 1 or not ends, rows
        if ends:
            assert ends[0]["lost"] == r["lost"], (ends, r)
        else:  # the stream ended in the spill file
            assert rtrace.read(r["path"]).lost == r["lost"], r


def test_64_programs_of_4_threads_lose_nothing_unreported_and_the_collector_stays_bounded(
        tmp_path):
    """64 programs of 4 threads stream at once for 30 s (about 100,000
    events/s in all): every program's events are in the timeline (or its
    spill file) or counted lost, and the collector's peak resident memory
    stays under COLLECTOR_PEAK_BOUND_MIB."""
    sock = f"unix://{tmp_path}/c.sock"
    collector = Collector(tmp_path, sock, "load.pftrace")
    programs = [start_streamer(tmp_path, f"p{i}", threads=4, seconds=30, burst=20, pause=0.1,
                               go=True, env={"RTRACE_COLLECTOR": sock}, wait=False)
                for i in range(64)]
    for p in programs:
        p.ready()
    for p in programs:
        p.go()
    peak_kb = [0]

    def watch() -> None:
        while collector.proc.poll() is None:
            peak_kb[0] = max(peak_kb[0], proc_status_kb(collector.pid, "VmRSS"))
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    results = [p.result(timeout=300) for p in programs]
    peak_kb[0] = max(peak_kb[0], proc_status_kb(collector.pid, "VmHWM"))
    report = collector.finish()

    assert peak_kb[0] < COLLECTOR_PEAK_BOUND_MIB * 1024, f"collector peak {peak_kb[0]} KiB"
    delivered = events_per_pid(tmp_path / "load.pftrace")
    for r in results:
        assert_accounted(r, delivered[r["pid"]] + spilled_events(r))
    rows = report_rows(report)
    assert {row["pid"] for row in rows} == {r["pid"] for r in results}
    print(f"collector peak {peak_kb[0] / 1024:.0f} MiB; "
          f"{sum(r['recorded'] for r in results)} events, "
          f"{sum(r['lost'] for r in results)} lost")
