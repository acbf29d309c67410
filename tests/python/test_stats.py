"""`rtrace stats`: calls and time per process and function, from stream
files and merged timelines, as a table and as JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_cli import rtrace_cli

WORKLOAD = """
    import time, rtrace
    def leaf(): pass
    def sleeper(): time.sleep(0.02)
    def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)
    def branch():
        for _ in range(3): leaf()
        sleeper()
    def main():
        for _ in range(4): branch()
        fib(10)
    with rtrace.record(output="w.rtrace"):
        main()
"""


def records(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


def test_stats_counts_exactly_and_self_times_add_up(run_py, tmp_path):
    run_py(WORKLOAD)
    rows = records(rtrace_cli("stats", "w.rtrace", "--json", "--top", "0", cwd=tmp_path))
    assert {(r["process"], r["session"]) for r in rows} == {(rows[0]["process"], "scenario")}
    f = by_name(rows)
    assert f["main"]["calls"] == 1 and f["branch"]["calls"] == 4
    assert f["leaf"]["calls"] == 12 and f["sleeper"]["calls"] == 4
    assert f["fib"]["calls"] == 177
    assert f["sleep"]["calls"] == 4 and f["sleep"]["module"] == "time"
    script = (tmp_path / "scenario.py").read_text().splitlines()
    assert f["main"]["file"] == str(tmp_path / "scenario.py")
    assert script[f["main"]["line"] - 1] == "def main():"
    # main is the only top-level call: every self time adds up to its total.
    self_sum = sum(r["self_ns"] for r in rows)
    assert abs(self_sum - f["main"]["total_ns"]) <= 0.01 * f["main"]["total_ns"]
    # Known self times: the sleeps are in time.sleep, not in their callers.
    assert f["sleep"]["self_ns"] >= 0.08e9
    assert f["sleeper"]["self_ns"] < 0.2 * f["sleeper"]["total_ns"]
    assert f["sleeper"]["total_ns"] >= f["sleep"]["total_ns"]
    assert f["branch"]["total_ns"] >= f["sleeper"]["total_ns"] + f["leaf"]["total_ns"]
    # fib is recursive: total counts its outermost call once; mean is per call.
    assert f["fib"]["total_ns"] < f["main"]["total_ns"]
    assert f["fib"]["mean_ns"] * 177 > f["fib"]["total_ns"]
    assert all(r["total_ns"] >= r["self_ns"] >= 0 for r in rows)


def test_stats_reads_merged_timelines_like_streams_and_tables_align(run_py, tmp_path):
    run_py(WORKLOAD)
    export = rtrace_cli("export", "w.rtrace", "-o", "w.pftrace", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    from_stream = records(rtrace_cli("stats", "w.rtrace", "--json", "--top", "0", cwd=tmp_path))
    from_timeline = records(rtrace_cli("stats", "w.pftrace", "--json", "--top", "0",
                                       cwd=tmp_path))
    assert sorted(from_stream, key=str) == sorted(from_timeline, key=str)

    table = rtrace_cli("stats", "w.pftrace", "--top", "3", "--sort", "total", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("scenario (pid ") and "calls in" in lines[0]
    assert lines[1].split() == ["calls", "total", "ms", "self", "ms", "mean", "ms", "function",
                                "file"]
    column = lines[1].index("function")
    names = [line[column:].split()[0] for line in lines[2:5]]
    assert names == ["__main__.main", "__main__.branch", "__main__.sleeper"]
    assert all(len(line) >= column for line in lines[2:5])
    assert lines[5] == ""


def test_stats_per_process_of_a_multi_process_timeline(tmp_path):
    (tmp_path / "app.py").write_text(
        "import subprocess, sys\n"
        "def parent_work(): return sum(range(10))\n"
        "for _ in range(3): parent_work()\n"
        "subprocess.run([sys.executable, '-c', 'def child_work(): pass\\n"
        "for _ in range(5): child_work()'], check=True)\n"
    )
    run = rtrace_cli("run", "-o", "t.pftrace", "--", "app.py", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = records(rtrace_cli("stats", "t.pftrace", "--json", "--top", "0", cwd=tmp_path))
    pids = {r["process"] for r in rows}
    assert len(pids) == 2
    work = {r["name"]: (r["process"], r["calls"]) for r in rows if r["name"].endswith("_work")}
    assert work["parent_work"][1] == 3 and work["child_work"][1] == 5
    assert work["parent_work"][0] != work["child_work"][0]
    for pid in pids:
        mine = [r for r in rows if r["process"] == pid]
        assert all(r["total_ns"] >= r["self_ns"] for r in mine)


def test_stats_of_a_truncated_stream_and_bad_usage(run_py, tmp_path):
    run_py(
        """
        import rtrace
        def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)
        def main(): return fib(18)
        with rtrace.record(output="w.rtrace", buffer_events=1024):   # many small batches
            main()
        """
    )
    data = (tmp_path / "w.rtrace").read_bytes()
    (tmp_path / "cut.rtrace").write_bytes(data[: len(data) * 2 // 3])
    rows = records(rtrace_cli("stats", "cut.rtrace", "--json", "--top", "0", cwd=tmp_path))
    assert rows and all(r["total_ns"] >= r["self_ns"] >= 0 for r in rows)
    top = by_name(rows)["main"]           # still open at the cut: ends at the last event
    assert sum(r["self_ns"] for r in rows) == top["total_ns"]

    missing = rtrace_cli("stats", "missing.rtrace", cwd=tmp_path)
    assert missing.returncode == 1 and "missing.rtrace" in missing.stderr
    bad = rtrace_cli("stats", "w.rtrace", "--top", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "--top: takes a count (0: all), not -1" in bad.stderr
    junk = tmp_path / "junk.rtrace"
    junk.write_bytes(b"not a trace")
    proc = rtrace_cli("stats", str(junk), cwd=tmp_path)
    assert proc.returncode == 1 and "not an rtrace stream" in proc.stderr
    assert Path(sys.executable).exists()


def readme_block(containing: str) -> str:
    """The README's Python code block that contains ``containing``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = readme.split("```python\n")[1:]
    return next(b.split("```")[0] for b in blocks if containing in b)


def test_readme_slowest_chain_recipe(run_py, tmp_path):
    run_py(
        """
        import time, rtrace
        def query(ms): time.sleep(ms / 1000)
        def handle(ms): query(ms); query(0.1)
        def main():
            for ms in (25, 60, 30): handle(ms)
        # 20 ms: a 0.1 ms sleep that a loaded machine stretches past 5 ms
        # must not pass the filter.
        with rtrace.record(output="slow.rtrace", min_duration=0.02):
            main()
        """
    )
    code = readme_block("def slowest_chain")
    code = code.replace('print(slowest_chain("slow.pftrace"))', "")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    chain = namespace["slowest_chain"](str(tmp_path / "slow.rtrace"))
    assert [name for name, _ in chain] == ["main", "handle", "query", "sleep"]
    assert chain[1][1] >= 60 and chain[0][1] >= 115
    # The 0.1 ms queries were left out by min_duration.
    calls = records(rtrace_cli("stats", "slow.rtrace", "--json", "--top", "0", cwd=tmp_path))
    assert by_name(calls)["query"]["calls"] == 3
