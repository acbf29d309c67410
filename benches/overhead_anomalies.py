"""What benches/overhead.py flags below its tables: failed runs, lost or
missing events, a wrapped VizTracer buffer, an unexpected hook, collector
streams that did not end cleanly, and an "imported" mode that costs."""

from __future__ import annotations

import statistics


def anomalies(cells, modes, workloads, info, setup) -> list[str]:
    notes = []
    expect_monitoring = tuple(info["version_info"]) >= (3, 12)
    for workload, size in workloads:
        counted = setup["events"].get(workload.name) or 0
        for mode in modes:
            cell = cells[(workload.name, mode)]
            where = f"{workload.label(size)} / {mode}"
            if cell.failures:
                total = len(cell.failures) + len(cell.runs)
                notes.append(
                    f"{where}: FAILED in {len(cell.failures)}/{total} runs; the first: "
                    f"{cell.failures[0]}"
                )
            notes += _run_anomalies(where, mode, cell, expect_monitoring)
            notes += _count_anomalies(where, mode, cell, counted)
            notes += _collector_anomalies(where, cell)
        notes += _consistency(cells, workload, size, modes)
    return notes


def _run_anomalies(where: str, mode: str, cell, expect_monitoring: bool) -> list[str]:
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
    hooks = {r["hook"] for r in cell.runs if r.get("hook")}
    want = "legacy" if mode == "rtrace-legacy" or not expect_monitoring else "sys.monitoring"
    notes += [f"{where}: hook was {h!r}, expected {want}" for h in hooks if not h.startswith(want)]
    noisy = {r["stderr"] for r in cell.runs if r.get("stderr")}
    notes += [f"{where}: child wrote to stderr: {s[:300]}" for s in sorted(noisy)[:2]]
    return notes


def _count_anomalies(where: str, mode: str, cell, counted: int) -> list[str]:
    """rtrace records what the stamp floor counts, give or take the frames
    it leaves out (its own, those open when it started); the tools that
    count calls should see about half as many calls as there are events."""
    notes = []
    seen = [r["events"] + r["lost"] for r in cell.runs if "events" in r]
    slack = max(0.1 * counted, 100)
    if seen and counted and mode in ("rtrace", "rtrace-collector", "rtrace-block"):
        if min(seen) < counted - slack or max(seen) > counted + slack:
            notes.append(
                f"{where}: recorded+lost {min(seen):,}..{max(seen):,} events, the stamp floor "
                f"counted {counted:,}"
            )
    calls = cell.values("calls")
    if calls and counted and min(calls) < (counted - slack) / 2:
        why = (
            " (before 3.12 cProfile profiles only the thread that enabled it, so its ratio "
            "here is not comparable)"
            if mode == "cProfile"
            else ""
        )
        notes.append(f"{where}: saw only {min(calls):,} calls of ~{counted // 2:,}{why}")
    return notes


def _collector_anomalies(where: str, cell) -> list[str]:
    notes = []
    for run in cell.runs:
        ends = [e for e in run.get("stream_ends", []) if e != "clean"]
        if ends:
            notes.append(f"{where}: a stream did not end cleanly: {', '.join(ends)}")
        if run.get("spill_bytes"):
            notes.append(f"{where}: the recorder spilled {run['spill_bytes']:,} bytes to a file")
        if "merged_events" in run and run["merged_events"] != run.get("events"):
            notes.append(
                f"{where}: the collector merged {run['merged_events']:,} events, the recorders "
                f"wrote {run.get('events', 0):,}"
            )
    return list(dict.fromkeys(notes))


def _consistency(cells, workload, size: int, modes: list[str]) -> list[str]:
    """Every rtrace mode should see the same events (recorded + lost)."""
    totals = {}
    for mode in modes:
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
        imp = cells[(workload.name, "imported")].values("in_run_s") if (
            (workload.name, "imported") in cells) else []  # fmt: skip
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
