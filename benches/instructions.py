#!/usr/bin/env python3
"""Instructions rtrace's hook executes per event, counted by callgrind.

Wall-clock overhead (benches/overhead.py) is what users feel, but on a
shared, busy machine its spread hides changes of a few percent. This counts
the instructions executed inside rtrace's C-level callbacks (the
sys.monitoring callbacks, or the legacy profile function, and everything
they call) while recording fib(20), minus the same for fib(16): what one
call or return event costs in rtrace's own code, without the interpreter's
dispatch or the writer thread. Deterministic (PYTHONHASHSEED=0), so a
regression of one instruction per event shows.

    python benches/instructions.py --python .venv-3.12/bin/python
    python benches/instructions.py --python .venv-3.11/bin/python --modes plain,nothing

With ``--part writer`` it counts the writer thread's encoding of the same
events into stream frames instead (``wire::batch::PlainFrames::encode``),
per event, over fib(22) minus fib(20) (batches after the first):

    python benches/instructions.py --python .venv-3.12/bin/python --part writer --modes plain

Modes: plain (no filter), excluding-nothing (exclude=['no_such.*']: every
event through the filtered path), nothing (include=['no_such.*']: every
function excluded), min-duration (min_duration=0.001: fib's calls are all
shorter): c_calls=False, so that each event is one Python call or return.
c-calls: c_calls=True (the default), and each fib call calls the builtin
abs() once: per fib call a Python call and return and a C call and return
(and, with sys.monitoring, a CALL event for fib itself, which records
nothing: it is counted, spread over the four). functions-40: as plain,
fib's calls spread over 40 copies of it, so that most event codes take two
bytes (``--part writer``: the writer's palette at work).
Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

PLAIN_FIB = "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)"
# One C call per fib call.
ABS_FIB = "def fib(n): return n if abs(n) < 2 else fib(n - 1) + fib(n - 2)"
# The same calls spread over 40 functions (copy k calls copy k + 1), as in
# benches/merge.py: most are of functions met after the first 8, whose
# event codes take two bytes and go through the writer's palette.
SPREAD_FIB = """
fibs = []
for k in range(40):
    exec(f"def fib{k}(n):\\n    f = fibs[{(k + 1) % 40}]\\n"
         f"    return n if n < 2 else f(n - 1) + f(n - 2)")
    fibs.append(globals()[f"fib{k}"])
fib = fibs[0]
"""

# mode: (recording options, fib, events per fib call)
MODES = {
    "plain": ("{'c_calls': False}", PLAIN_FIB, 2),
    "excluding-nothing": ("{'c_calls': False, 'exclude': ['no_such.*']}", PLAIN_FIB, 2),
    "nothing": ("{'c_calls': False, 'include': ['no_such.*']}", PLAIN_FIB, 2),
    "min-duration": ("{'c_calls': False, 'min_duration': 0.001}", PLAIN_FIB, 2),
    "c-calls": ("{'c_calls': True}", ABS_FIB, 4),
    "functions-40": ("{'c_calls': False}", SPREAD_FIB, 2),
}
SMALL, LARGE = 16, 20
# The writer encodes a thread's events a buffer (16,384 events) at a time,
# and keeps scratch space and what it learnt of the previous batch: fib(20)
# holds the first, whole batch already, so the difference counts only
# later batches, as most of a longer recording is.
WRITER_SIZES = 20, 22


def fib_calls(n: int) -> int:
    a, b = 1, 1
    for _ in range(n):
        a, b = b, a + b + 1
    return a


CHILD = """
import sys, rtrace
{fib}
# flush_interval=60: under valgrind a run is ~50x slower, and handing over
# partly filled buffers on age (a copy that callgrind counts byte by byte)
# would make the count depend on the run's speed.
with rtrace.record(output=sys.argv[2], flush_interval=60, **{options}):
    fib(int(sys.argv[1]))
"""

TOGGLES = {
    "sys.monitoring": "*_native*monitoring*",
    "legacy": "_native::legacy::profile",
}
# The writer thread's frame encoder (the same for either hook).
WRITER = "*PlainFrames*encode*"


def count(python: str, hook: str, mode: str, n: int, out: str, part: str = "hook") -> int:
    options, fib, _ = MODES[mode]
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("RTRACE_HOOK", None)
    if hook == "legacy":
        env["RTRACE_HOOK"] = "legacy"
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        f"--toggle-collect={WRITER if part == 'writer' else TOGGLES[hook]}",
        python, "-c", CHILD.format(options=options, fib=fib), str(n), out,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ",".join(MODES))
    parser.add_argument("--part", choices=("hook", "writer"), default="hook",
                        help="count the hook's callbacks (default) or the writer's frame encoder")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        print("benches/instructions.py needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    version = subprocess.run([args.python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    hooks = ["sys.monitoring", "legacy"] if version == "True" else ["legacy"]
    if args.part == "writer":
        hooks = hooks[:1]
    small_n, large_n = WRITER_SIZES if args.part == "writer" else (SMALL, LARGE)
    calls = fib_calls(large_n) - fib_calls(small_n)
    inside = "the writer's frame encoder" if args.part == "writer" else "rtrace's callbacks"
    print(f"python: {args.python}; instructions per event inside {inside} "
          f"(fib({large_n}) - fib({small_n}): {calls} calls)")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            for hook in hooks:
                out = os.path.join(tmp, "o.rtrace")
                small = count(args.python, hook, mode, small_n, out, args.part)
                large = count(args.python, hook, mode, large_n, out, args.part)
                events = calls * MODES[mode][2]
                print(f"  {mode:<18} {hook:<15} {(large - small) / events:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
