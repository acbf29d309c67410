"""Tables and anomaly notes for benches/overhead.py."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overhead import Workload

# A measurement during which other processes kept more CPUs than this busy
# is "contended": counted in the report, and taken again with --retry-busy.
BUSY_CPUS = 0.3


@dataclass
class Cell:
    """All repeats of one workload in one mode."""

    runs: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def values(self, key: str) -> list:
        return [r[key] for r in self.runs if r.get(key) is not None]

    def median(self, key: str) -> float | None:
        values = self.values(key)
        return statistics.median(values) if values else None


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def spread(cell: Cell, key: str) -> str:
    """The median absolute deviation, relative to the median: robust to the
    odd run that a burst of other work slowed down."""
    values, mid = cell.values(key), cell.median(key)
    if len(values) < 2 or not mid:
        return "-"
    mad = statistics.median(abs(v - mid) for v in values)
    return f"±{100 * mad / mid:.0f}%"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        right = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([row[0].ljust(widths[0]), *right]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def summary_table(cells, modes, workloads) -> str:
    headers = ["workload", "untraced s"] + [m for m in modes if m != "untraced"]
    rows = []
    for workload, size in workloads:
        base = cells[(workload.name, "untraced")].median("in_run_s")
        row = [workload.label(size), fmt_s(base)]
        for mode in modes[1:]:
            cell = cells[(workload.name, mode)]
            inner = fmt_ratio(cell.median("in_run_s"), base)
            outer = fmt_ratio(cell.median("e2e_s"), base)
            row.append(inner if mode == "imported" or inner == "-" else f"{inner} ({outer})")
        rows.append(row)
    return table(headers, rows)


def added_ns(cell: Cell, base: float | None, calls: int) -> str:
    mid = cell.median("in_run_s")
    if mid is None or base is None:
        return "-"
    return f"{1e9 * (mid - base) / calls:+.0f}"


def recorded(mode: str, cell: Cell) -> list[str]:
    """The "recorded", "lost" and "file size" cells of a detail row."""
    events, calls, size = (cell.median(k) for k in ("events", "calls", "file_bytes"))
    lost_values = cell.values("lost")
    lost = (
        "-"
        if not lost_values
        else (f"{fmt_int(statistics.median(lost_values))} (max {max(lost_values):,})")
    )
    if events:
        return [f"{fmt_int(events)} ev", lost, f"{size / events:.2f} B/ev" if size else "-"]
    if calls and mode == "cProfile":  # an aggregate profile, not a trace
        return [f"{fmt_int(calls)} calls", lost, f"{int(size):,} B total" if size else "-"]
    if calls:
        return [f"{fmt_int(calls)} calls", lost, f"{size / calls:.1f} B/call" if size else "-"]
    return ["-", lost, "-"]


def detail_row(mode: str, cell: Cell, base: Cell, workload_calls: int) -> list[str]:
    times = []
    for key in ("in_run_s", "e2e_s", "cpu_s"):
        times += [fmt_s(cell.median(key)), fmt_ratio(cell.median(key), base.median(key))]
        if key == "in_run_s":
            times += [spread(cell, key), added_ns(cell, base.median(key), workload_calls)]
    runs = f"{len(cell.runs)}/{len(cell.runs) + len(cell.failures)}"
    contended = sum(1 for f in cell.values("foreign_cpus") if f > BUSY_CPUS)
    return [mode, *times, *recorded(mode, cell), runs, str(contended)]


def detail_table(cells, modes, workload: Workload, size: int) -> str:
    base = cells[(workload.name, "untraced")]
    headers = [
        "mode",
        "in-run s",
        "ratio",
        "spread",
        "ns/call",
        "e2e s",
        "e2e ratio",
        "cpu s",
        "cpu ratio",
        "recorded (median)",
        "lost median",
        "file size",
        "runs ok",
        "contended",
    ]
    calls = workload.python_calls(size)
    rows = [detail_row(m, cells[(workload.name, m)], base, calls) for m in modes]
    title = (
        f"{workload.label(size)}: >= {workload.python_calls(size):,} Python calls "
        f"(>= {2 * workload.python_calls(size):,} call+return events)"
    )
    return title + "\n" + table(headers, rows)


def anomalies(cells, modes, workloads, info) -> list[str]:
    notes = []
    expect_monitoring = tuple(info["version_info"]) >= (3, 12)
    for workload, size in workloads:
        floor = 2 * workload.python_calls(size)
        for mode in modes:
            cell = cells[(workload.name, mode)]
            where = f"{workload.label(size)} / {mode}"
            if cell.failures:
                total = len(cell.failures) + len(cell.runs)
                notes.append(
                    f"{where}: FAILED in {len(cell.failures)}/{total} runs; the first: "
                    f"{cell.failures[0]}"
                )
            notes += _run_anomalies(where, mode, cell, floor, expect_monitoring)
        notes += _consistency(cells, workload, size, modes)
    return notes


def _run_anomalies(
    where: str, mode: str, cell: Cell, floor: int, expect_monitoring: bool
) -> list[str]:
    notes = []
    for run in cell.runs:
        if run.get("error"):
            notes.append(f"{where}: recording error: {run['error']}")
        if run.get("overflow"):
            notes.append(f"{where}: viztracer's ring buffer wrapped (events overwritten)")
    lost = cell.values("lost")
    if lost and max(lost) > 0:
        policy = "block policy, nothing should be lost" if mode == "rtrace-block" else "drop policy"
        notes.append(
            f"{where}: events lost in {sum(1 for x in lost if x)}/{len(lost)} runs "
            f"(median {statistics.median(lost):,.0f}, max {max(lost):,}) [{policy}]"
        )
    events = [r["events"] + r["lost"] for r in cell.runs if "events" in r]
    if mode == "rtrace-nothing":
        if events and max(events) > 0:
            notes.append(f"{where}: {max(events):,} events recorded, expected none")
    elif events and min(events) < floor:
        notes.append(f"{where}: only {min(events):,} events recorded+lost, expected >= {floor:,}")
    calls = cell.values("calls")
    if calls and min(calls) < floor // 2:
        why = (
            " (before 3.12 cProfile profiles only the thread that enabled it, so its ratio "
            "here is not comparable)"
            if mode == "cProfile"
            else ""
        )
        notes.append(
            f"{where}: saw only {min(calls):,} calls, the workload makes >= {floor // 2:,}{why}"
        )
    hooks = {r["hook"] for r in cell.runs if r.get("hook")}
    want = "legacy" if mode == "rtrace-legacy" or not expect_monitoring else "sys.monitoring"
    for hook in hooks:
        if not hook.startswith(want):
            notes.append(f"{where}: hook was {hook!r}, expected {want}")
    noisy = {r["stderr"] for r in cell.runs if r.get("stderr")}
    notes += [f"{where}: child wrote to stderr: {s[:300]}" for s in sorted(noisy)[:2]]
    return notes


def _consistency(cells, workload: Workload, size: int, modes: list[str]) -> list[str]:
    """Every rtrace mode should see the same events (recorded + lost)."""
    totals = {}
    for mode in modes:
        if mode == "rtrace-nothing":
            continue
        runs = [r for r in cells[(workload.name, mode)].runs if "events" in r]
        if runs:
            totals[mode] = statistics.median(r["events"] + r["lost"] for r in runs)
    if len(totals) < 2:
        return []
    low, high = min(totals.values()), max(totals.values())
    if high - low <= 0.005 * high:
        return []
    listed = ", ".join(f"{m}={v:,.0f}" for m, v in totals.items())
    return [f"{workload.label(size)}: rtrace modes disagree on recorded+lost events: {listed}"]


def imported_check(cells, workloads) -> list[str]:
    notes = []
    for workload, size in workloads:
        base = cells[(workload.name, "untraced")].values("in_run_s")
        imp = cells.get((workload.name, "imported"), Cell()).values("in_run_s")
        if len(base) < 3 or len(imp) < 3:
            continue  # too few rounds to tell a cost from noise
        median_ratio = statistics.median(imp) / statistics.median(base)
        best_ratio = min(imp) / min(base)  # the fastest runs: least disturbed by noise
        # Five rounds on this machine swing +-7%: flag only what exceeds that.
        if median_ratio > 1.10 and best_ratio > 1.05:
            notes.append(
                f"{workload.label(size)}: 'imported' (not recording) is "
                f"{median_ratio:.2f}x untraced by medians, {best_ratio:.2f}x by the "
                f"fastest runs (expected ~1.00x); confirm with --modes imported "
                f"--workloads {workload.name} --repeat 15"
            )
    return notes


def report(cells, modes, workloads, info, elapsed: float) -> None:
    print()
    print("Slowdown vs untraced: median in-run ratio (e2e ratio, until the output file is closed)")
    print(summary_table(cells, modes, workloads))
    for workload, size in workloads:
        print()
        print(detail_table(cells, modes, workload, size))
    imports = [r["import_s"] for (_, m), c in cells.items() if m == "imported" for r in c.runs]
    print()
    if imports:
        print(
            f"import rtrace: median {1000 * statistics.median(imports):.1f} ms "
            f"(not included in any time above)"
        )
    print(contention_line(cells))
    notes = anomalies(cells, modes, workloads, info) + imported_check(cells, workloads)
    print("anomalies: " + ("none detected" if not notes else ""))
    for note in notes:
        print("  - " + note.replace("\n", "\n    "))
    print(f"total benchmark time: {elapsed:.0f} s")


def contention_line(cells) -> str:
    runs = [r for c in cells.values() for r in c.runs]
    foreign = [r["foreign_cpus"] for r in runs if "foreign_cpus" in r]
    if not foreign:
        return "contention: not measured (no /proc/stat)"
    contended = sum(1 for f in foreign if f > BUSY_CPUS)
    retries = sum(r.get("retries", 0) for r in runs)
    return (
        f"contention: other processes kept a median {statistics.median(foreign):.2f} "
        f"(max {max(foreign):.2f}) CPUs busy during the measurements; "
        f"{contended}/{len(foreign)} kept runs were contended (> {BUSY_CPUS} CPUs); "
        f"{retries} runs were taken again"
    )


def dump_json(path: str, cells, info) -> None:
    data = {
        "python": info,
        "cells": [
            {"workload": w, "mode": m, "runs": c.runs, "failures": c.failures}
            for (w, m), c in cells.items()
        ],
    }
    Path(path).write_text(json.dumps(data, indent=1))
