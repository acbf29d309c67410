#!/usr/bin/env python3
"""How soon after Ctrl-C the live collector's merged file is complete.

Starts ``rtrace-collect --listen``, lets one small recorded process stream
to it and end, waits a moment (so that nothing is in flight), then sends
SIGINT and times until the collector says it has written the merged file
(the file is then complete) and until the collector has exited (its
teardown after that: freeing what it held). Medians over ``--repeat``
rounds; with ``--collect`` given more
than once (the build before a change and the one after), the collectors
take turns round by round.

    python benches/stop_latency.py --python .venv-3.12/bin/python
    python benches/stop_latency.py --python .venv-3.12/bin/python --collect OLD --collect NEW
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_measure import CollectorError, LiveCollector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = """
import sys, rtrace
with rtrace.record(session="stop", collector=sys.argv[1]):
    sum(range(1000))
"""


def once(collect: str, python: str, directory: str) -> tuple[float, float]:
    """Milliseconds from SIGINT until the merged file is written, and until
    the collector has exited."""
    try:
        collector = LiveCollector([collect], directory)
    except (OSError, CollectorError) as exc:
        sys.exit(f"the collector failed to start: {exc}")
    subprocess.run([python, "-c", PROGRAM, collector.address], check=True)
    time.sleep(0.05)  # nothing in flight: the time is the collector's own
    start_ns = time.monotonic_ns()
    try:
        collected = collector.finish()  # SIGINT, then waits for the exit
    except CollectorError as exc:
        sys.exit(str(exc))
    if not collected["merged_bytes"]:
        sys.exit(f"{collect} wrote an empty {collector.output}")
    os.unlink(collector.output)
    return (collected["merged_ns"] - start_ns) / 1e6, (collected["exited_ns"] - start_ns) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with rtrace")
    parser.add_argument("--collect", action="append",
                        help="rtrace-collect to measure (repeatable; default target/release)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    collects = args.collect or [str(ROOT / "target/release/rtrace-collect")]
    # By position: the same build may be given twice (a check of the noise).
    times: list[list[tuple[float, float]]] = [[] for _ in collects]
    with tempfile.TemporaryDirectory(prefix="rtrace-stop-") as directory:
        for _ in range(args.repeat):
            for i, collect in enumerate(collects):
                times[i].append(once(collect, args.python, directory))
    print(f"command: python {' '.join(sys.argv)}")
    print(f"ms after SIGINT, {args.repeat} rounds: until the merged file is complete (the "
          "collector says it wrote it); until the collector has exited")
    for collect, rounds in zip(collects, times):
        cells = []
        for what, ms in zip(("complete", "exited"), zip(*rounds)):
            cells.append(f"{what}: median {statistics.median(ms):.1f}, min {min(ms):.1f}, "
                         f"max {max(ms):.1f}")
        print(f"  {collect}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
