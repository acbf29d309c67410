#!/usr/bin/env python3
"""Tables and anomaly notes for benches/overhead.py.

Also a command: ``python benches/overhead_report.py RUN.json...`` prints one
table across the runs that ``overhead.py --json`` wrote (benches/run does
this for every Python version it measured).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from overhead_anomalies import anomalies, imported_check
from overhead_goals import Row, goals_text, judge
from overhead_workloads import WORKLOADS

# A measurement during which other processes kept more CPUs than this busy
# is "contended": counted in the report, and taken again with --retry-busy.
BUSY_CPUS = 0.3
# A measurement whose speed probe (benches/overhead_measure.py) took this
# many times the median probe ran on a slowed CPU: "slow", counted and taken
# again like a contended one. Judged once MIN_PROBES probes were taken.
SLOW_PROBE = 1.25
MIN_PROBES = 5


def contended(run: dict) -> bool:
    return run.get("foreign_cpus", 0.0) > BUSY_CPUS


def slow(run: dict) -> bool:
    return (run.get("probe_ratio") or 0.0) > SLOW_PROBE


def disturbed(run: dict) -> bool:
    """Contended, or on a slowed CPU: what --retry-busy takes again."""
    return contended(run) or slow(run)

# Modes that write an output, and so have an end-to-end time of their own.
OUTPUT_MODES = (
    "rtrace", "rtrace-collector", "rtrace-block", "rtrace-legacy", "rtrace-filtered",
    "rtrace-nothing", "cProfile", "viztracer", "viztracer-json",
)  # fmt: skip
RTRACE_MODES = (
    "rtrace", "rtrace-collector", "rtrace-block", "rtrace-legacy", "rtrace-filtered",
    "rtrace-nothing",
)  # fmt: skip


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


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def fmt_mb(kib: float | None) -> str:
    return "-" if not kib else f"{kib / 1024:.0f}"


def fmt_per(numerator: float | None, denominator: float | None, digits: int = 2) -> str:
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.{digits}f}"


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


# ---------------------------------------------------------------------------
# The tables of one run
# ---------------------------------------------------------------------------


def ratio_cell(cell: Cell, mode: str, base: float | None) -> str:
    inner = fmt_ratio(cell.median("in_run_s"), base)
    if mode not in OUTPUT_MODES or inner == "-":
        return inner
    return f"{inner} ({fmt_ratio(cell.median('e2e_s'), base)})"


def cpu_ratio_cell(cell: Cell, workload, base: float | None) -> str:
    """CPU time of the traced process (all its threads) against untraced:
    less disturbed by other work on the machine than wall time. Not for the
    multiprocessing workload, whose work runs in other processes."""
    if workload.name == "multiprocessing":
        return "-"
    return fmt_ratio(cell.median("cpu_s"), base)


def summary_table(cells, modes, workloads, setup) -> str:
    headers = ["workload", "events", "untraced s"] + [m for m in modes if m != "untraced"]
    rows = []
    for workload, size in workloads:
        base = cells[(workload.name, "untraced")].median("in_run_s")
        row = [workload.label(size), fmt_int(setup["events"].get(workload.name)), fmt_s(base)]
        row += [ratio_cell(cells[(workload.name, m)], m, base) for m in modes if m != "untraced"]
        rows.append(row)
    return table(headers, rows)


def cpu_table(cells, modes, workloads) -> str:
    headers = ["workload", "untraced cpu s"] + [m for m in modes if m != "untraced"]
    rows = []
    for workload, size in workloads:
        base = cells[(workload.name, "untraced")].median("cpu_s")
        row = [workload.label(size), fmt_s(base)]
        row += [cpu_ratio_cell(cells[(workload.name, m)], workload, base) for m in modes[1:]]
        rows.append(row)
    return table(headers, rows)


def rtrace_row(workload, size, mode: str, cell: Cell, untraced: Cell) -> list[str]:
    events = cell.median("events")
    lost = cell.values("lost")
    wire = cell.median("wire_bytes") or cell.median("file_bytes")
    merged_events = cell.median("merged_events")
    return [
        workload.label(size),
        mode,
        fmt_int(events),
        f"{fmt_int(statistics.median(lost))} (max {max(lost):,})" if lost else "-",
        fmt_per(events, (cell.median("in_run_s") or 0) * 1e6, 1),
        fmt_per(wire, events),
        fmt_per(cell.median("merged_bytes"), merged_events),
        f"{fmt_mb(cell.median('peak_rss_kib'))} ({fmt_mb(untraced.median('peak_rss_kib'))})",
        fmt_mb(cell.median("collector_rss_kib")),
        fmt_s(cell.median("collector_cpu_s")),
        fmt_s(cell.median("finish_s")),
        waited_cell(workload, cell, untraced),
    ]


def waited_cell(workload, cell: Cell, untraced: Cell) -> str:
    """How long the thread running the workload waited for a CPU while it
    could have run, and how often it was preempted (medians, ms and times;
    untraced in parentheses). "-" for workloads whose main thread only
    waits for its threads or processes."""
    waited, preempted = cell.median("waited_s"), cell.median("preempted")
    if workload.name in ("threads", "multiprocessing") or waited is None or preempted is None:
        return "-"
    base = untraced.median("waited_s")
    base_ms = f"{base * 1e3:.1f}" if base is not None else "-"
    return f"{waited * 1e3:.1f} ({base_ms}), {preempted:,.0f}x"


def rtrace_table(cells, modes, workloads) -> str:
    headers = [
        "workload",
        "mode",
        "events",
        "lost median",
        "M events/s",
        "wire B/ev",
        "merged B/ev",
        "RSS MB (untraced)",
        "collector RSS MB",
        "collector cpu s",
        "finish s",
        "main thread waited for a CPU ms (untraced), preempted",
    ]
    rows = []
    for workload, size in workloads:
        untraced = cells[(workload.name, "untraced")]
        for mode in (m for m in modes if m in RTRACE_MODES):
            rows.append(rtrace_row(workload, size, mode, cells[(workload.name, mode)], untraced))
    return table(headers, rows)


def added_ns(cell: Cell, base: float | None, events: int | None) -> str:
    mid = cell.median("in_run_s")
    if mid is None or base is None or not events or events < 10_000:
        return "-"  # with few events the cost is not per event
    return f"{1e9 * (mid - base) / events:+.0f}"


def recorded(mode: str, cell: Cell) -> list[str]:
    """The "recorded" and "file size" cells of a detail row."""
    events, calls = cell.median("events") or cell.median("floor_events"), cell.median("calls")
    size = cell.median("wire_bytes") or cell.median("file_bytes")
    if events:
        return [f"{fmt_int(events)} ev", f"{size / events:.2f} B/ev" if size else "-"]
    if calls and mode == "cProfile":  # an aggregate profile, not a trace
        return [f"{fmt_int(calls)} calls", f"{int(size):,} B total" if size else "-"]
    if calls:
        return [f"{fmt_int(calls)} calls", f"{size / calls:.1f} B/call" if size else "-"]
    return ["-", "-"]


def detail_row(mode: str, cell: Cell, base: Cell, events: int | None) -> list[str]:
    times = []
    for key in ("in_run_s", "e2e_s", "cpu_s"):
        against = base.median("cpu_s" if key == "cpu_s" else "in_run_s")
        times += [fmt_s(cell.median(key)), fmt_ratio(cell.median(key), against)]
        if key == "in_run_s":
            times += [spread(cell, key), added_ns(cell, base.median(key), events)]
    runs = f"{len(cell.runs)}/{len(cell.runs) + len(cell.failures)}"
    disturbed_runs = sum(1 for r in cell.runs if disturbed(r))
    rss = fmt_mb(cell.median("peak_rss_kib"))
    return [mode, *times, *recorded(mode, cell), rss, runs, str(disturbed_runs)]


DETAIL_HEADERS = [
    "mode", "in-run s", "ratio", "spread", "ns/event", "e2e s", "e2e ratio", "cpu s",
    "cpu ratio", "recorded (median)", "size", "RSS MB", "runs ok", "disturbed",
]  # fmt: skip


def detail_table(cells, modes, workload, size: int, events: int | None) -> str:
    base = cells[(workload.name, "untraced")]
    rows = [detail_row(m, cells[(workload.name, m)], base, events) for m in modes]
    title = f"{workload.label(size)}: {fmt_int(events)} call+return events (stamp floor's count)"
    return title + "\n" + table(DETAIL_HEADERS, rows)


def contention_line(cells) -> str:
    runs = [r for c in cells.values() for r in c.runs]
    foreign = [r["foreign_cpus"] for r in runs if "foreign_cpus" in r]
    if not foreign:
        return "contention: not measured (no /proc/stat)"
    busy = sum(1 for r in runs if contended(r))
    slowed = sum(1 for r in runs if slow(r))
    ratios = [r["probe_ratio"] for r in runs if r.get("probe_ratio") is not None]
    probes = (
        f"; speed probes {min(ratios):.2f}-{max(ratios):.2f}x their median, "
        f"{slowed} kept runs on a slowed CPU (> {SLOW_PROBE}x)"
        if ratios
        else ""
    )
    retries = sum(r.get("retries", 0) for r in runs)
    return (
        f"contention: other processes kept a median {statistics.median(foreign):.2f} "
        f"(max {max(foreign):.2f}) CPUs busy during the measurements; "
        f"{busy}/{len(foreign)} kept runs were contended (> {BUSY_CPUS} CPUs){probes}; "
        f"{retries} runs were taken again"
    )


def report(cells, modes, workloads, info, setup, elapsed: float) -> None:
    print()
    print("Slowdown vs untraced: median in-run ratio (e2e ratio, until the output is complete)")
    print(summary_table(cells, modes, workloads, setup))
    print()
    print("Slowdown by CPU time: median CPU seconds of the traced process (all its threads)")
    print("during in-run / untraced; less disturbed by other work on a busy machine than wall time")
    print(cpu_table(cells, modes, workloads))
    if any(m in RTRACE_MODES for m in modes):
        print()
        print("rtrace: what it recorded and what it cost (medians)")
        print(rtrace_table(cells, modes, workloads))
    for workload, size in workloads:
        print()
        print(detail_table(cells, modes, workload, size, setup["events"].get(workload.name)))
    imports = [r["import_s"] for (_, m), c in cells.items() if m == "imported" for r in c.runs]
    print()
    if imports:
        print(
            f"import rtrace: median {1000 * statistics.median(imports):.1f} ms "
            f"(not included in any time above)"
        )
    print(contention_line(cells))
    notes = anomalies(cells, modes, workloads, info, setup) + imported_check(cells, workloads)
    print("anomalies: " + ("none detected" if not notes else ""))
    for note in notes:
        print("  - " + note.replace("\n", "\n    "))
    print(f"total benchmark time: {elapsed:.0f} s")


# ---------------------------------------------------------------------------
# Saved runs, and one table across them
# ---------------------------------------------------------------------------


def dump_json(path: str, cells, modes, workloads, info, setup) -> None:
    data = {
        "python": info,
        "modes": modes,
        "workloads": [{"name": w.name, "size": size} for w, size in workloads],
        "setup": {k: setup.get(k) for k in ("events", "viztracer", "pyperformance", "notes")},
        "cells": [
            {"workload": w, "mode": m, "runs": c.runs, "failures": c.failures}
            for (w, m), c in cells.items()
        ],
    }
    Path(path).write_text(json.dumps(data, indent=1))


def load_json(path: str) -> tuple:
    data = json.loads(Path(path).read_text())
    cells = {
        (c["workload"], c["mode"]): Cell(runs=c["runs"], failures=c["failures"])
        for c in data["cells"]
    }
    workloads = [(WORKLOADS[w["name"]], w["size"]) for w in data["workloads"]]
    return cells, data["modes"], workloads, data["python"], data["setup"]


COMBINED_COLUMNS = [
    ("floor-noop", "no-op hook"),
    ("floor-stamp", "stamp+store"),
    ("rtrace", "rtrace"),
    ("rtrace-collector", "rtrace+collector"),
    ("cProfile", "cProfile"),
    ("viztracer", "VizTracer"),
    ("viztracer-json", "VizTracer JSON"),
]


def combined_row(cells, modes, info, workload, size: int) -> list[str]:
    base = cells[(workload.name, "untraced")].median("in_run_s")
    row = [info["version"], workload.label(size), fmt_s(base)]
    for mode, _ in COMBINED_COLUMNS:
        cell = cells.get((workload.name, mode))
        row.append(ratio_cell(cell, mode, base) if cell and mode in modes else "-")
    file, merged = (cells.get((workload.name, m), Cell()) for m in RTRACE_MODES[:2])
    for viz_mode in ("viztracer", "viztracer-json"):
        viz = cells.get((workload.name, viz_mode), Cell()).median("e2e_s")
        file_ratio = fmt_ratio(viz, file.median("e2e_s"))
        row.append(f"{file_ratio} / {fmt_ratio(viz, merged.median('e2e_s'))}")
    row.append(fmt_per(merged.median("wire_bytes"), merged.median("events")))
    row.append(fmt_per(merged.median("merged_bytes"), merged.median("merged_events")))
    return row


def combined_cpu_row(cells, modes, info, workload, size: int) -> list[str]:
    base = cells[(workload.name, "untraced")].median("cpu_s")
    row = [info["version"], workload.label(size), fmt_s(base)]
    for mode, _ in COMBINED_COLUMNS:
        cell = cells.get((workload.name, mode))
        row.append(cpu_ratio_cell(cell, workload, base) if cell and mode in modes else "-")
    return row


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """The same table as `table`, in Markdown (for README updates)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return re.sub(r"(\d)x\b", "\\1×", "\n".join(lines))


def combined_tables(paths: list[str], markdown: bool = False) -> tuple[str, str]:
    labels = [label for _, label in COMBINED_COLUMNS]
    wall, cpu = [], []
    for path in paths:
        cells, modes, workloads, info, _ = load_json(path)
        for workload, size in workloads:
            wall.append(combined_row(cells, modes, info, workload, size))
            cpu.append(combined_cpu_row(cells, modes, info, workload, size))
    wall_headers = ["Python", "workload", "untraced s", *labels]
    wall_headers += [
        "VizTracer e2e / rtrace e2e (file / merged)",
        "VizTracer JSON e2e / rtrace e2e (file / merged)",
        "wire B/ev",
        "merged B/ev",
    ]
    cpu_headers = ["Python", "workload", "untraced cpu s", *labels]
    make = markdown_table if markdown else table
    return make(wall_headers, wall), make(cpu_headers, cpu)


def goal_rows(paths: list[str]) -> list[Row]:
    """The rows issue 8's goals are judged on (see overhead_goals.py)."""
    rows = []
    for path in paths:
        cells, modes, workloads, info, setup = load_json(path)
        python = ".".join(info["version"].split(".")[:2])
        for workload, _ in workloads:

            def values(mode: str, key: str, name=workload.name, cells=cells, modes=modes):
                cell = cells.get((name, mode))
                return cell.values(key) if cell and mode in modes else []

            runs = [r for m in RTRACE_MODES for r in cells.get((workload.name, m), Cell()).runs]
            rows.append(Row(
                python=python, workload=workload.name,
                values=values, events=setup["events"].get(workload.name),
                lost_runs=sum(1 for r in runs if r.get("lost")), rtrace_runs=len(runs),
            ))  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="One table across the runs that `overhead.py --json` wrote."
    )
    parser.add_argument("runs", nargs="+", metavar="RUN.json", help="written by overhead.py --json")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    for path in args.runs:
        if not Path(path).is_file():
            parser.error(f"no such file: {path}")
    wall, cpu = combined_tables(args.runs, args.markdown)
    print("Slowdown vs untraced, every Python: median in-run ratio (e2e ratio, until the output")
    print("is complete; rtrace+collector: until the collector's merged timeline is complete)")
    print(wall)
    print()
    print("Slowdown by CPU time: the traced process (all its threads) during in-run, every Python")
    print(cpu)
    print()
    print("Issue 8's goals on these runs (medians, as above; see benches/overhead_goals.py)")
    print(goals_text(judge(goal_rows(args.runs)), markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
