#!/usr/bin/env python3
"""How long a fresh process's first recording takes to start and stop.

Each round runs a fresh interpreter that times, with ``perf_counter``:
``import rtrace``, ``rtrace.record(...)``, the first ``start()``, its
``stop()`` (a moment of calls later), then a second recording's ``start()``
and ``stop()`` (what the first pays once per process shows as the
difference). Medians and the 90th percentile over ``--rounds``; the
interpreters given with ``--python`` take turns round by round.

By default the program imports ``threading`` before it times anything, as
almost every real program has by then (logging, asyncio and
concurrent.futures import it); ``--cold`` leaves it out, so the first
``start()`` pays for it too.

    python3 benches/start_latency.py --python .venv-3.12/bin/python
    python3 benches/start_latency.py --python .venv-3.11/bin/python --python .venv-3.13/bin/python --rounds 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

PROGRAM = """
import json, os, sys, time
if sys.argv[2] == "warm":
    import threading
begin = time.perf_counter()
import rtrace
imported = time.perf_counter()

def recording(name):
    \"\"\"ms of record(), start() and stop() around a moment of calls.\"\"\"
    t0 = time.perf_counter()
    rec = rtrace.record(session="start", output=os.path.join(sys.argv[1], name + ".rtrace"))
    t1 = time.perf_counter()
    rec.start()
    t2 = time.perf_counter()
    sum(map(abs, range(1000)))
    t3 = time.perf_counter()
    rec.stop()
    t4 = time.perf_counter()
    return 1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t4 - t3)

record, start, stop = recording("first")
_, start_again, stop_again = recording("second")
print(json.dumps({"import": 1e3 * (imported - begin), "record": record, "start": start,
                  "stop": stop, "start again": start_again, "stop again": stop_again}))
"""

PHASES = ("import", "record", "start", "stop", "start again", "stop again")


def once(python: str, cold: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rtrace-start-") as directory:
        env = dict(os.environ)
        # Measure imports as an installed package pays them: from bytecode
        # written once, not compiled again in every process.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        out = subprocess.run(
            [python, "-c", PROGRAM, directory, "cold" if cold else "warm"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python",
        action="append",
        help="an interpreter that imports rtrace (repeat to compare; default: this one)",
    )
    parser.add_argument("--rounds", type=int, default=30, help="fresh processes per interpreter (30)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="do not import threading first (the first start() then pays for it)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    pythons = args.python or [sys.executable]
    for python in pythons:
        once(python, args.cold)  # bytecode written, caches warm
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in pythons}
    for round_ in range(args.rounds):
        for python in pythons:
            runs[python].append(once(python, args.cold))
        print(f"\rround {round_ + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"ms, median (90th percentile) of {args.rounds} fresh processes"
          + (", threading not imported first" if args.cold else ""))
    width = max(len(p) for p in pythons)
    print(f"{'python':<{width}}  " + "  ".join(f"{p:>15}" for p in PHASES))
    for python in pythons:
        cells = []
        for phase in PHASES:
            values = sorted(run[phase] for run in runs[python])
            p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
            cells.append(f"{statistics.median(values):6.2f} ({p90:6.2f})")
        print(f"{python:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
