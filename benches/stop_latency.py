#!/usr/bin/env python3
"""How soon after Ctrl-C the live collector's merged file is complete.

Starts ``rtrace-collect --listen``, lets one small recorded process stream
to it and end, waits a moment (so that nothing is in flight), then sends
SIGINT and times until the collector has exited: its merged file is then
complete. Medians over ``--repeat`` rounds; with ``--collect`` given more
than once (the build before a change and the one after), the collectors
take turns round by round.

    python benches/stop_latency.py --python .venv-3.12/bin/python
    python benches/stop_latency.py --python .venv-3.12/bin/python --collect OLD --collect NEW
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = """
import sys, rtrace
with rtrace.record(session="stop", collector=sys.argv[1]):
    sum(range(1000))
"""


def once(collect: str, python: str, directory: str) -> float:
    """Milliseconds from SIGINT to the collector's exit."""
    sock = os.path.join(directory, "collector.sock")
    out = os.path.join(directory, "merged.pftrace")
    collector = subprocess.Popen(
        [collect, "--listen", f"unix://{sock}", "-o", out],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert collector.stderr is not None
        for line in collector.stderr:
            if "listening on" in line:
                break
        else:
            sys.exit(f"{collect} did not start listening")
        subprocess.run([python, "-c", PROGRAM, f"unix://{sock}"], check=True)
        time.sleep(0.05)
        start = time.monotonic()
        collector.send_signal(signal.SIGINT)
        collector.wait(timeout=60)
        elapsed = time.monotonic() - start
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    if collector.returncode != 0:
        sys.exit(f"{collect} exited with status {collector.returncode}")
    if not os.path.getsize(out):
        sys.exit(f"{collect} wrote an empty {out}")
    os.unlink(out)
    return elapsed * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter with rtrace")
    parser.add_argument("--collect", action="append",
                        help="rtrace-collect to measure (repeatable; default target/release)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    collects = args.collect or [str(ROOT / "target/release/rtrace-collect")]
    # By position: the same build may be given twice (a check of the noise).
    times: list[list[float]] = [[] for _ in collects]
    with tempfile.TemporaryDirectory(prefix="rtrace-stop-") as directory:
        for _ in range(args.repeat):
            for i, collect in enumerate(collects):
                times[i].append(once(collect, args.python, directory))
    print(f"command: python {' '.join(sys.argv)}")
    print(f"SIGINT until the merged file is complete (the collector exited), ms, {args.repeat} rounds:")
    for collect, ms in zip(collects, times):
        print(f"  {collect}: median {statistics.median(ms):.1f}, min {min(ms):.1f}, max {max(ms):.1f}")


if __name__ == "__main__":
    main()
