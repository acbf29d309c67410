"""The benchmark harness (benches/) still runs and prints well-formed tables.

Not a timed test: it runs benches/overhead.py in its quickest form on tiny
workloads (one round, nothing installed) and checks the shape of what it
prints -- every column present, every ratio a positive number -- so that the
harness does not rot between the runs that measure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = ROOT / "benches"
MODES = ["untraced", "floor-noop", "floor-stamp", "rtrace", "rtrace-collector", "cProfile"]
WORKLOADS = {"fib": "fib(25)", "multiprocessing": "2 processes x fib(22)"}
RATIO = re.compile(r"^(\d+\.\d\d)x(?: \((\d+\.\d\d)x\))?$")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def columns(line: str) -> list[str]:
    """Cells of a table line: separated by two or more spaces."""
    return re.split(r" {2,}", line.strip())


def table_after(output: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the table printed under ``title``."""
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(title))
    header = columns(lines[at + 1])
    assert set(lines[at + 2].replace(" ", "")) == {"-"}, lines[at + 2]
    rows = []
    for line in lines[at + 3 :]:
        if not line.strip():
            break
        rows.append(columns(line))
    return header, rows


def positive_ratios(cell: str) -> list[float]:
    match = RATIO.match(cell)
    assert match, f"not a ratio: {cell!r}"
    values = [float(v) for v in match.groups() if v is not None]
    assert all(v > 0 for v in values), cell
    return values


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    json_path = tmp_path_factory.mktemp("bench") / "run.json"
    proc = run(
        str(BENCHES / "overhead.py"),
        "--quick",
        "--repeat=1",
        "--no-install",
        "--no-viztracer",
        f"--workloads={','.join(WORKLOADS)}",
        f"--modes={','.join(MODES)}",
        f"--json={json_path}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json_path


def test_bench_summary_table_has_every_mode_and_positive_ratios(quick_run):
    proc, _ = quick_run
    header, rows = table_after(proc.stdout, "Slowdown vs untraced")
    assert header == ["workload", "events", "untraced s", *MODES[1:]]
    assert [r[0] for r in rows] == list(WORKLOADS.values())
    for row in rows:
        assert len(row) == len(header), row
        assert int(row[1].replace(",", "")) > 0
        assert float(row[2]) > 0
        for mode, cell in zip(header[3:], row[3:]):
            values = positive_ratios(cell)
            has_e2e = mode.startswith("rtrace") or mode == "cProfile"
            assert len(values) == (2 if has_e2e else 1), (mode, cell)


def test_bench_rtrace_table_reports_rate_bytes_and_memory(quick_run):
    proc, _ = quick_run
    header, rows = table_after(proc.stdout, "rtrace: what it recorded")
    assert header[:7] == [
        "workload", "mode", "events", "lost median", "M events/s", "wire B/ev", "merged B/ev"
    ]
    assert len(rows) == 2 * len(WORKLOADS)
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert int(cells["events"].replace(",", "")) > 0
        assert float(cells["M events/s"]) > 0
        assert 0 < float(cells["wire B/ev"]) < 64
        assert int(cells["RSS MB (untraced)"].split()[0]) > 0
        if cells["mode"] == "rtrace-collector":
            assert 0 < float(cells["merged B/ev"]) < 64
            assert int(cells["collector RSS MB"]) > 0
            assert float(cells["finish s"]) >= 0
        # The traced thread's wait for a CPU (schedstat) and preemptions:
        # shown where the main thread runs the work, "-" where it waits.
        waited = cells["main thread waited for a CPU ms (untraced), preempted"]
        if cells["workload"] == WORKLOADS["multiprocessing"]:
            assert waited == "-", row
        else:
            assert re.fullmatch(r"\d+\.\d \(\d+\.\d\), [\d,]+x", waited), row
    assert "anomalies:" in proc.stdout


def test_bench_times_a_speed_probe_around_every_run(quick_run):
    """The probe that tells a slowed CPU (which /proc/stat does not show)
    ran around every measurement, and the report says what it found."""
    proc, json_path = quick_run
    cells = json.loads(json_path.read_text())["cells"]
    runs = [r for c in cells for r in c["runs"]]
    assert runs
    for r in runs:
        assert r["probe_s"] > 0 and r["probe_ratio"] > 0, r
    found = re.search(r"speed probes (\d+\.\d\d)-(\d+\.\d\d)x their median, (\d+) kept runs "
                      r"on a slowed CPU", proc.stdout)  # fmt: skip
    assert found, proc.stdout[-2000:]
    ratios = [r["probe_ratio"] for r in runs]
    assert (float(found[1]), float(found[2])) == (round(min(ratios), 2), round(max(ratios), 2))
    assert int(found[3]) == sum(1 for x in ratios if x > 1.25)


def test_bench_combined_table_across_runs(quick_run):
    _, json_path = quick_run
    proc = run(str(BENCHES / "overhead_report.py"), str(json_path))
    assert proc.returncode == 0, proc.stderr
    header, rows = table_after(proc.stdout, "is complete")
    assert header[:3] == ["Python", "workload", "untraced s"]
    assert "VizTracer e2e / rtrace e2e (file / merged)" in header
    version = "%d.%d." % sys.version_info[:2]
    assert [r[1] for r in rows] == list(WORKLOADS.values())
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert cells["Python"].startswith(version)
        for label in ("no-op hook", "stamp+store", "rtrace", "rtrace+collector", "cProfile"):
            positive_ratios(cells[label])
        assert cells["VizTracer"] == "-"  # not measured here
        assert 0 < float(cells["merged B/ev"]) < 64
    header, rows = table_after(proc.stdout, "Slowdown by CPU time")
    assert header[:3] == ["Python", "workload", "untraced cpu s"]
    fib = dict(zip(header, rows[0], strict=True))
    for label in ("no-op hook", "stamp+store", "rtrace", "rtrace+collector", "cProfile"):
        positive_ratios(fib[label])
    # The same tables in Markdown, for the README.
    proc = run(str(BENCHES / "overhead_report.py"), "--markdown", str(json_path))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| Python | workload | untraced s |")
    assert set(lines[1]) == set("|-")
    widths = {line.count("|") for line in lines}
    assert len(widths) == 2, widths  # the wall table and the CPU table
    assert re.search(r"\| \d+\.\d\d× \(\d+\.\d\d×\) \|", proc.stdout), proc.stdout


def test_bench_rejects_wrong_usage_clearly():
    proc = run(str(BENCHES / "overhead.py"), "--workloads=fib,nosuch")
    assert proc.returncode == 2
    assert "unknown workloads ['nosuch']" in proc.stderr
    proc = run(str(BENCHES / "overhead.py"), "--modes=rtrace,fast")
    assert proc.returncode == 2
    assert "unknown modes ['fast']" in proc.stderr
    proc = run(str(BENCHES / "steadiness.py"), "--runs=2")
    assert proc.returncode == 2
    assert "--runs must be at least 3, not 2" in proc.stderr
    for script in ("overhead.py", "overhead_report.py", "floor.py", "merge.py", "steadiness.py"):
        assert run(str(BENCHES / script), "--help").returncode == 0, script
    helped = subprocess.run(
        [str(BENCHES / "run"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "RTRACE_BENCH_PYTHONS" in helped.stdout


def test_steadiness_reports_the_spread_of_runs_and_probes():
    """benches/steadiness.py: the spread of untraced runs, of the speed
    probes around them, and how the two go together."""
    proc = run(str(BENCHES / "steadiness.py"), "--python", sys.executable, "--runs", "5",
               "--size", "18")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("5 runs of untraced fib(18)")
    for label in ("runs", "speed probes"):
        found = re.search(rf"^{label}: fastest ([\d.]+) ms, median ([\d.]+) ms, slowest ([\d.]+) ms "
                          r"\((\d+\.\d\d)x the fastest\)$", proc.stdout, re.M)  # fmt: skip
        assert found, proc.stdout
        fastest, median, slowest, ratio = (float(v) for v in found.groups())
        assert 0 < fastest <= median <= slowest and ratio >= 1.0
    rho = float(re.search(r"rank correlation \(Spearman\): (-?\d\.\d\d)", proc.stdout)[1])
    assert -1.0 <= rho <= 1.0


def test_merge_bench_times_two_builds_over_the_same_recording():
    """benches/merge.py with --collect twice: one row per build, both
    merging the same files into the same bytes. The calls spread over 40
    functions, whose event codes take two bytes: the streams' palettes
    bring them back to one (about 3 bytes per event with the tick delta;
    4 without a palette)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    collect = target / "release" / "rtrace-collect"
    if not collect.is_file():
        pytest.skip("no release rtrace-collect (scripts/dev-setup builds it)")
    proc = run(str(BENCHES / "merge.py"), "--python", sys.executable, "--events", "2e5",
               "--processes", "2", "--repeat", "1", "--functions", "40",
               "--collect", str(collect), "--collect", str(collect))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("collector "))
    rows = [columns(line) for line in lines[at + 1:at + 3]]
    assert [row[0] for row in rows] == [str(collect)] * 2, rows
    events = int(re.match(r"([\d,]+) events", lines[at - 1]).group(1).replace(",", ""))
    assert events >= 200_000
    for row in rows:
        wall, cpu, per_cpu_s, stream_bytes, merged_bytes = (float(row[i]) for i in (1, 2, 3, 5, 6))
        assert wall > 0 and cpu > 0 and per_cpu_s > 0
        assert 2.0 <= stream_bytes <= 3.5 and 8.0 <= merged_bytes <= 20.0, row
    assert rows[0][6] == rows[1][6]  # the same merged bytes per event


def release_collector() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    collect = target / "release" / "rtrace-collect"
    if not collect.is_file():
        pytest.skip("no release rtrace-collect (scripts/dev-setup builds it)")
    return collect


def test_stop_latency_bench_times_ctrl_c_until_the_file_is_complete():
    """benches/stop_latency.py: one line per build, the collector having
    written a non-empty merged file each time (it exits with a message
    otherwise)."""
    collect = release_collector()
    proc = run(str(BENCHES / "stop_latency.py"), "--python", sys.executable, "--repeat", "2",
               "--collect", str(collect), "--collect", str(collect))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(rf"^  {re.escape(str(collect))}: median ([\d.]+), min ([\d.]+), max ([\d.]+)$",
                      proc.stdout, re.M)  # fmt: skip
    assert len(rows) == 2, proc.stdout
    for median, low, high in rows:
        assert 0 < float(low) <= float(median) <= float(high)


def test_live_bench_short_run_prints_its_table():
    """benches/live.py on a run too short for its merge-thread sampling
    (every 20 ms) to see any CPU: a dash for the rate, not a crash."""
    collect = release_collector()
    proc = run(str(BENCHES / "live.py"), "--python", sys.executable, "--processes", "1",
               "--events", "1e5", "--repeat", "1", "--collect", str(collect))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "runs that lost events: 0 of 1" in proc.stdout, proc.stdout
    assert re.search(r"^run 1: [\d,]+ events, 0 lost", proc.stdout, re.M), proc.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_program_instructions_counts_rtrace_beside_the_floor():
    """benches/program_instructions.py: a row per workload with the traced
    thread's instructions per event untraced, under the floor and under
    rtrace. A hook costs something (floor above untraced), and rtrace
    stays near the floor: far less than the 2x an extra dispatch would be."""
    proc = run(str(BENCHES / "program_instructions.py"), "--python", sys.executable,
               "--workloads", "fib", "--sizes", "14,17", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("fib(14->17)"))
    cells = columns(row)
    events = int(cells[1].replace(",", ""))
    untraced, floor, rtrace = (float(v) for v in cells[2:5])
    # fib(n) makes 2 F(n+1) - 1 calls (F(15) = 610, F(18) = 2584); a call and a return each.
    assert events == 2 * ((2 * 2584 - 1) - (2 * 610 - 1)), row
    assert 0 < untraced < floor < 2 * floor and 0.8 * floor < rtrace < 1.5 * floor, row
    assert cells[-1] == f"{rtrace / floor:.3f}x", row


def test_program_instructions_rejects_wrong_usage_clearly():
    proc = run(str(BENCHES / "program_instructions.py"), "--workloads", "fib,nope")
    assert proc.returncode == 2 and "unknown workload(s) nope" in proc.stderr, proc.stderr
    proc = run(str(BENCHES / "program_instructions.py"), "--sizes", "18,16")
    assert proc.returncode == 2 and "SMALL must be positive and below LARGE" in proc.stderr
