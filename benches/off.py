#!/usr/bin/env python3
"""What rtrace costs a program that does not record: ``import rtrace``
done, and user events called while nothing records. Prints nanoseconds per
call (the best of ``--repeat`` timeit rounds, and their median) of each
user-event call next to ``len(())``, the cheapest call of a builtin, and a
plain ``pass`` loop, in this interpreter.

    .venv-3.12/bin/python benches/off.py
    .venv-3.12/bin/python benches/off.py --number 5000000 --repeat 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit

import rtrace

CASES = [
    ("pass (the loop alone)", "pass"),
    ("len(())", "len(())"),
    ('rtrace.instant("x")', 'rtrace.instant("x")'),
    ('rtrace.instant("x", k=1)', 'rtrace.instant("x", k=1)'),
    ('rtrace.counter("c", 1)', 'rtrace.counter("c", 1)'),
    ('with span: (one span reused)', "with span: pass"),
    ('with rtrace.span("x"):', 'with rtrace.span("x"): pass'),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=2_000_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=9, help="rounds")
    args = parser.parse_args()
    assert not rtrace.current(), "run it without a recording"
    names = {"rtrace": rtrace, "span": rtrace.span("x")}
    print(f"Python {sys.version.split()[0]}, rtrace not recording; "
          f"{args.repeat} rounds of {args.number:,} calls; ns per call")
    print(f"{'call':<32} {'best':>8} {'median':>8}")
    for label, statement in CASES:
        rounds = timeit.repeat(statement, number=args.number, repeat=args.repeat, globals=names)
        per_call = [r / args.number * 1e9 for r in rounds]
        print(f"{label:<32} {min(per_call):>8.1f} {statistics.median(per_call):>8.1f}")


if __name__ == "__main__":
    main()
